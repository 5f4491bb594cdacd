//! MariaDB sandboxes against the real binaries: logins, limits, restarts, cleanup.

use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use poolguard_sandbox::{MariaDbSandbox, SandboxError};

/// The `mariadb` client as `user` over TCP, the way a test client would.
fn client(
    db: &MariaDbSandbox,
    user: &str,
    password: &str,
    database: &str,
    sql: &str,
) -> std::process::Output {
    Command::new("mariadb")
        .args([
            "--no-defaults",
            "-N",
            "-B",
            "--protocol=TCP",
            "-h",
            db.host(),
        ])
        .arg(format!("--port={}", db.port()))
        .arg(format!("--user={user}"))
        .arg(format!("--password={password}"))
        .arg(format!("--database={database}"))
        .args(["-e", sql])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn user_database_and_max_connections() {
    let db = MariaDbSandbox::builder()
        .max_connections(20)
        .user("alice", "s3cret")
        .database("app_db", "alice")
        .start()
        .unwrap();
    let root = db.data_dir().parent().unwrap().to_owned();
    assert_ne!(db.port(), 3306);
    assert_eq!(
        db.url("alice", "s3cret", "app_db"),
        format!("mysql://alice:s3cret@127.0.0.1:{}/app_db", db.port())
    );

    let out = client(&db, "alice", "s3cret", "app_db", "SELECT @@max_connections");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "20");
    let out = client(
        &db,
        "alice",
        "s3cret",
        "app_db",
        "CREATE TABLE t (x INT); INSERT INTO t VALUES (7); SELECT x FROM t",
    );
    assert_eq!(
        stdout(&out),
        "7",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Owner of app_db only, not of every database.
    let out = client(&db, "alice", "s3cret", "app_db", "CREATE DATABASE other");
    assert!(!out.status.success());

    let out = client(&db, "alice", "wrong", "app_db", "SELECT 1");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Access denied"), "{stderr}");

    let (root_user, root_pw) = db.root();
    assert_eq!(root_user, "root");
    assert_eq!(
        stdout(&client(
            &db,
            root_user,
            root_pw,
            "mysql",
            "SELECT CURRENT_USER()"
        )),
        "root@127.0.0.1"
    );
    assert!(
        !client(&db, "root", "", "mysql", "SELECT 1")
            .status
            .success(),
        "root needs its password"
    );
    assert_eq!(
        db.sql("app_db", "SELECT COUNT(*) FROM t; SELECT 2")
            .unwrap(),
        "1\n2"
    );
    assert_eq!(
        db.sql_as("alice", "s3cret", "app_db", "SELECT x FROM t")
            .unwrap(),
        "7"
    );
    assert_eq!(
        db.sql("", "SELECT @@character_set_server").unwrap(),
        "utf8mb4"
    );
    assert_eq!(db.connection_count().unwrap(), 0);
    let err = db.sql("app_db", "SELECT * FROM no_such_table").unwrap_err();
    assert!(err.to_string().contains("no_such_table"), "{err}");

    drop(db);
    assert!(!root.exists(), "{} left behind", root.display());
}

#[test]
fn connection_count_and_restarts() {
    let mut db = MariaDbSandbox::builder()
        .user("bob", "pw")
        .database("d", "bob")
        .setting("wait_timeout", "600")
        .start()
        .unwrap();
    let port = db.port();
    assert_eq!(db.sql("", "SELECT @@wait_timeout").unwrap(), "600");
    db.sql_as(
        "bob",
        "pw",
        "d",
        "CREATE TABLE kept (x INT); INSERT INTO kept VALUES (1)",
    )
    .unwrap();

    let sleeper = |db: &MariaDbSandbox| {
        Command::new("mariadb")
            .args([
                "--no-defaults",
                "--protocol=TCP",
                "-h",
                db.host(),
                "-ubob",
                "-ppw",
            ])
            .arg(format!("--port={}", db.port()))
            .args(["-e", "SELECT SLEEP(60)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut sleepers = vec![sleeper(&db), sleeper(&db)];
    let deadline = Instant::now() + Duration::from_secs(20);
    while db.connection_count().unwrap() != 2 {
        assert!(Instant::now() < deadline, "never saw 2 connections");
        thread::sleep(Duration::from_millis(50));
    }

    // A crash drops the open sessions.
    db.kill();
    assert!(!db.is_running());
    for s in &mut sleepers {
        assert!(!s.wait().unwrap().success());
    }
    assert!(db.sql("", "SELECT 1").is_err());

    db.start_again().unwrap();
    assert_eq!(db.port(), port);
    assert_eq!(
        db.sql_as("bob", "pw", "d", "SELECT COUNT(*) FROM kept")
            .unwrap(),
        "1"
    );

    db.stop().unwrap();
    assert!(!db.is_running());
    assert!(db.sql("", "SELECT 1").is_err());
    db.stop().unwrap();
    db.start_again().unwrap();
    assert_eq!(db.sql("d", "SELECT x FROM kept").unwrap(), "1");
}

#[test]
fn two_sandboxes_at_once() {
    let handles: Vec<_> = (0..2)
        .map(|_| thread::spawn(|| MariaDbSandbox::builder().start().unwrap()))
        .collect();
    let sandboxes: Vec<MariaDbSandbox> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(sandboxes[0].port(), sandboxes[1].port());
    for db in &sandboxes {
        assert_eq!(db.sql("", "SELECT 1").unwrap(), "1");
    }
}

#[test]
fn bad_settings_report_the_log() {
    let err = MariaDbSandbox::builder()
        .setting("no-such-option", "1")
        .start()
        .unwrap_err();
    match &err {
        SandboxError::StartFailed { log_tail, .. } => {
            assert!(log_tail.contains("no-such-option"), "{err}")
        }
        other => panic!("expected StartFailed, got {other}"),
    }
}
