//! PostgreSQL sandboxes against the real binaries: logins, limits, restarts, cleanup.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use poolguard_sandbox::{PgSandbox, SandboxError};

/// psql as `user` over TCP, outside the sandbox's own helpers, the way a test client would.
fn psql(pg: &PgSandbox, user: &str, password: &str, db: &str, sql: &str) -> std::process::Output {
    Command::new(pg.bin_dir().join("psql"))
        .args([
            "-X",
            "-At",
            "-h",
            pg.host(),
            "-p",
            &pg.port().to_string(),
            "-U",
            user,
            "-d",
            db,
            "-c",
            sql,
        ])
        .env_clear()
        .env("PGPASSWORD", password)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn user_database_and_max_connections() {
    let pg = PgSandbox::builder()
        .max_connections(20)
        .user("alice", "s3cret")
        .database("appdb", "alice")
        .start()
        .unwrap();
    let root = pg.data_dir().parent().unwrap().to_owned();
    assert!(pg.data_dir().join("PG_VERSION").is_file());
    assert_ne!(pg.port(), 5432);
    assert_eq!(pg.addr().port(), pg.port());
    assert_eq!(
        pg.url("alice", "s3cret", "appdb"),
        format!("postgres://alice:s3cret@127.0.0.1:{}/appdb", pg.port())
    );

    let out = psql(&pg, "alice", "s3cret", "appdb", "SHOW max_connections");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "20");
    let out = psql(
        &pg,
        "alice",
        "s3cret",
        "appdb",
        "SELECT current_user || ' ' || current_database()",
    );
    assert_eq!(stdout(&out), "alice appdb");

    let out = psql(&pg, "alice", "wrong", "appdb", "SELECT 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );

    // The superuser works over TCP with its generated password, through the helper too.
    let (su, su_pw) = pg.superuser();
    assert_eq!(su, "postgres");
    assert_eq!(
        stdout(&psql(
            &pg,
            su,
            su_pw,
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )),
        "t"
    );
    assert_eq!(pg.psql("appdb", "SELECT 1; SELECT 2").unwrap(), "1\n2");
    assert_eq!(
        pg.psql_as(
            "alice",
            "s3cret",
            "appdb",
            "CREATE TABLE t (x int); INSERT INTO t VALUES (7); SELECT x FROM t"
        )
        .unwrap(),
        "7"
    );
    let stored = pg
        .psql(
            "postgres",
            "SELECT left(rolpassword, 13) FROM pg_authid WHERE rolname = 'alice'",
        )
        .unwrap();
    assert_eq!(stored, "SCRAM-SHA-256");
    assert_eq!(pg.connection_count().unwrap(), 0);

    let err = pg.psql("appdb", "SELECT * FROM no_such_table").unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");

    drop(pg);
    assert!(!root.exists(), "{} left behind", root.display());
}

#[test]
fn connection_count_sees_open_sessions() {
    let pg = PgSandbox::builder().user("bob", "pw").start().unwrap();
    let (su, su_pw) = pg.superuser();
    let mut sleepers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(pg.bin_dir().join("psql"))
                .args([
                    "-X",
                    "-h",
                    pg.host(),
                    "-p",
                    &pg.port().to_string(),
                    "-U",
                    su,
                    "-d",
                    "postgres",
                ])
                .args(["-c", "SELECT pg_sleep(30)"])
                .env("PGPASSWORD", su_pw)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.connection_count().unwrap() != 2 {
        assert!(Instant::now() < deadline, "never saw 2 connections");
        thread::sleep(Duration::from_millis(50));
    }
    for s in &mut sleepers {
        s.kill().unwrap();
        s.wait().unwrap();
    }
}

#[test]
fn two_sandboxes_at_once() {
    let handles: Vec<_> = (0..2)
        .map(|i| {
            thread::spawn(move || {
                PgSandbox::builder()
                    .setting("work_mem", &format!("{}MB", 5 + i))
                    .start()
                    .unwrap()
            })
        })
        .collect();
    let sandboxes: Vec<PgSandbox> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(sandboxes[0].port(), sandboxes[1].port());
    assert_ne!(sandboxes[0].data_dir(), sandboxes[1].data_dir());
    assert_ne!(sandboxes[0].superuser().1, sandboxes[1].superuser().1);
    for (i, pg) in sandboxes.iter().enumerate() {
        assert_eq!(
            pg.psql("postgres", "SHOW work_mem").unwrap(),
            format!("{}MB", 5 + i)
        );
    }
}

#[test]
fn stop_start_again_and_kill() {
    let mut pg = PgSandbox::builder()
        .user("carol", "pw")
        .database("db", "carol")
        .start()
        .unwrap();
    let port = pg.port();
    pg.psql_as(
        "carol",
        "pw",
        "db",
        "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1)",
    )
    .unwrap();

    pg.stop().unwrap();
    assert!(!pg.is_running());
    assert!(pg.psql("postgres", "SELECT 1").is_err());
    pg.stop().unwrap(); // idempotent

    pg.start_again().unwrap();
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql_as("carol", "pw", "db", "SELECT x FROM kept")
            .unwrap(),
        "1"
    );

    // A session open during the crash loses its connection.
    let (su, su_pw) = pg.superuser();
    let mut victim = Command::new(pg.bin_dir().join("psql"))
        .args([
            "-X",
            "-h",
            pg.host(),
            "-p",
            &port.to_string(),
            "-U",
            su,
            "-d",
            "postgres",
            "-c",
            "SELECT pg_sleep(60)",
        ])
        .env("PGPASSWORD", su_pw)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.connection_count().unwrap() != 1 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(50));
    }
    pg.kill();
    assert!(!pg.is_running());
    assert!(!victim.wait().unwrap().success());
    assert!(pg.psql("postgres", "SELECT 1").is_err());

    pg.start_again().unwrap();
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql_as("carol", "pw", "db", "SELECT count(*) FROM kept")
            .unwrap(),
        "1"
    );
}

#[test]
fn md5_auth_method() {
    let pg = PgSandbox::builder()
        .auth_method("md5")
        .user("dave", "pw")
        .start()
        .unwrap();
    let stored = pg
        .psql(
            "postgres",
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'dave'",
        )
        .unwrap();
    assert_eq!(stored, "md5");
    assert_eq!(
        pg.psql_as("dave", "pw", "postgres", "SELECT 1").unwrap(),
        "1"
    );
    assert!(pg.psql_as("dave", "nope", "postgres", "SELECT 1").is_err());
    let hba = std::fs::read_to_string(pg.data_dir().join("pg_hba.conf")).unwrap();
    assert!(hba.contains("host  all all 127.0.0.1/32 md5"), "{hba}");
}

#[test]
fn drop_cleans_up_during_a_panic() {
    let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
    let result = thread::spawn(move || {
        let pg = PgSandbox::builder().start().unwrap();
        tx.send(pg.data_dir().parent().unwrap().to_owned()).unwrap();
        panic!("test failure while the sandbox is alive");
    })
    .join();
    assert!(result.is_err());
    let root = rx.recv().unwrap();
    assert!(!root.exists(), "{} left behind", root.display());
}

#[test]
fn bad_settings_report_the_log() {
    let err = PgSandbox::builder()
        .setting("shared_buffers", "lots")
        .start()
        .unwrap_err();
    match &err {
        SandboxError::StartFailed { log_tail, .. } => {
            assert!(log_tail.contains("shared_buffers"), "{err}")
        }
        other => panic!("expected StartFailed, got {other}"),
    }
}
