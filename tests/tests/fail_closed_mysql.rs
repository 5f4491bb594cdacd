//! Fail closed, proven with faults on purpose (MySQL door): the test build's fault switch
//! (`POOLGUARD_FAULTS`, see crates/proxy/src/fault.rs) makes a session panic mid-transaction,
//! mid-prepared-execute, mid-LOAD DATA LOCAL and during a server reset. After each, against a
//! real MariaDB with a pool of one server connection:
//! - the victim client got ERR 1105 "poolguard internal error" (not a silent reset),
//! - the next client on the same pool sees `@@in_transaction` = 0 and none of the victim's rows,
//! - the panic was counted and its server connection discarded as `panicked`, never reused,
//! - the pool's counts are back to nothing in use, and poolguard still serves.
//!
//! Waits are for events (a counter reaching a value), bounded; nothing depends on timing.

use std::time::Duration;

use poolguard_e2e::admin::{http_get, metric, wait_for};
use poolguard_e2e::mysql::*;
use poolguard_e2e::*;
use poolguard_mysql::consts::MARIADB_CLIENT_EXTENDED_TYPE_INFO;

struct Victim {
    point: &'static str,
    /// What the victim does; returns what it saw.
    act: fn(port: u16, dir: &std::path::Path) -> String,
    /// The victim hears about the panic (false: the fault hits after its answers).
    told: bool,
}

fn outcome<T: std::fmt::Debug>(r: Result<T, MyError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn victims() -> Vec<Victim> {
    vec![
        Victim {
            point: "my_in_transaction",
            act: |port, _| {
                let mut c = MyClient::connect(port).expect("connect");
                c.query("SET autocommit = 0").expect("autocommit off");
                // The fault hits once the INSERT's OK (status: in a transaction) is relayed,
                // so the client hears of it at its next command.
                let insert = outcome(c.query("INSERT INTO t VALUES (42)"));
                format!("{insert}\n{}", outcome(c.query("COMMIT")))
            },
            told: true,
        },
        Victim {
            point: "my_prepared_execute",
            act: |port, _| {
                let mut c = MyClient::connect(port).expect("connect");
                c.query("SET autocommit = 0").expect("autocommit off");
                // my_in_transaction is not armed here: only the execute point fires.
                c.query("INSERT INTO t VALUES (1)").expect("first row");
                let id = c.prepare("INSERT INTO t VALUES (7)").expect("prepare");
                let mut execute = vec![poolguard_mysql::consts::COM_STMT_EXECUTE];
                execute.extend_from_slice(&id.to_le_bytes());
                execute.push(0); // no cursor
                execute.extend_from_slice(&1u32.to_le_bytes()); // iteration count
                outcome(c.command(&execute))
            },
            told: true,
        },
        Victim {
            point: "my_load_data",
            act: |port, dir| {
                let file = dir.join("rows.txt");
                let rows: String = (0..20_000).map(|i| format!("{i}\n")).collect();
                std::fs::write(&file, rows).unwrap();
                let out = run_within(
                    std::process::Command::new("mariadb")
                        .args([
                            "--no-defaults",
                            "-N",
                            "-B",
                            "--protocol=TCP",
                            "--local-infile=1",
                            "-h",
                            "127.0.0.1",
                        ])
                        .arg(format!("--port={port}"))
                        .args(["-u", USER, DB, "-e"])
                        .arg(format!(
                            "SET autocommit = 0; INSERT INTO t VALUES (1); LOAD DATA LOCAL INFILE '{}' INTO TABLE t; COMMIT;",
                            file.display()
                        ))
                        .env("MYSQL_PWD", PASSWORD),
                    Duration::from_secs(60),
                );
                format!("{}\n{}", stdout(&out), stderr(&out))
            },
            told: true,
        },
        Victim {
            point: "my_reset",
            act: |port, _| {
                // A temporary table pins the client to its server; when it leaves, the server
                // is reset (COM_RESET_CONNECTION) before reuse, and the fault hits there.
                let mut c = MyClient::connect(port).expect("connect");
                c.query("CREATE TEMPORARY TABLE tt (x int)")
                    .expect("temp table");
                c.query("INSERT INTO tt VALUES (1)").expect("temp row");
                let _ = c.query("SELECT 1");
                drop(c);
                String::new()
            },
            told: false,
        },
    ]
}

#[test]
fn a_panicking_session_hands_nothing_to_the_next_client() {
    let db = mariadb(30);
    db.sql(DB, "CREATE TABLE t (x int) ENGINE=InnoDB")
        .expect("create table");
    let dir = tempfile::tempdir().unwrap();
    for v in victims() {
        db.sql(DB, "TRUNCATE TABLE t").unwrap();
        let admin = free_port();
        let port = free_port();
        let spec = MyPoolSpec {
            pool_size: 1,
            budget: 3,
            front: "allow_local_infile = true".into(),
            limits: format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
            ..MyPoolSpec::default()
        };
        let proxy = Proxy::start_with_env(
            &mysql_config_for(&db, port, &spec),
            port,
            &[("POOLGUARD_FAULTS", v.point)],
        );
        let seen = (v.act)(proxy.port, dir.path());
        if v.told {
            assert!(
                seen.contains("1105") || seen.contains("poolguard internal error"),
                "{}: the victim was not told: {seen}",
                v.point
            );
        }
        let metrics = || http_get(admin, "/metrics");
        // The mariadb CLI asks for MariaDB's extended type information: its pool is its own,
        // and the next client must be one like it to get the same server connection.
        let extended = v.point == "my_load_data";
        let pool = if extended {
            "pool=\"bank/app (extended types)\""
        } else {
            "pool=\"bank/app\""
        };
        wait_for(Duration::from_secs(30), "the panic counted", || {
            (metric(&metrics(), "poolguard_panics_total", &[]) == Some(1.0)).then_some(())
        });
        wait_for(Duration::from_secs(30), "the server discarded", || {
            let panicked = metric(
                &metrics(),
                "poolguard_server_connections_discarded_total",
                &[pool, "reason=\"panicked\""],
            );
            (panicked == Some(1.0)).then_some(())
        });

        // The next client on the same one-connection pool.
        let mut next = if extended {
            MyClient::connect_mariadb(proxy.port, MARIADB_CLIENT_EXTENDED_TYPE_INFO)
        } else {
            MyClient::connect(proxy.port)
        }
        .expect("next client connects");
        let seen = next
            .query("SELECT COUNT(*), @@in_transaction FROM t")
            .expect("next client's query");
        assert_eq!(
            seen,
            vec![vec![Some("0".to_owned()), Some("0".to_owned())]],
            "{}: the next client saw the victim's work (rows, @@in_transaction)",
            v.point
        );
        let temp = next.query("SELECT x FROM tt");
        assert_eq!(
            temp.map_err(|e| e.code),
            Err(1146),
            "{}: the victim's temporary table",
            v.point
        );
        drop(next);
        wait_for(Duration::from_secs(30), "the pool idle again", || {
            let in_use = metric(
                &metrics(),
                "poolguard_pool_server_connections",
                &[pool, "state=\"in_use\""],
            );
            (in_use == Some(0.0)).then_some(())
        });
        let m = metrics();
        for reason in ["dropped", "unproven"] {
            assert_eq!(
                metric(
                    &m,
                    "poolguard_server_connections_discarded_total",
                    &[pool, &format!("reason=\"{reason}\"")]
                ),
                Some(0.0),
                "{}: {reason}",
                v.point
            );
        }
        // Nothing of the victim's was committed, as the server itself counts it.
        assert_eq!(
            db.sql(DB, "SELECT COUNT(*) FROM t").unwrap().trim(),
            "0",
            "{}",
            v.point
        );
        assert!(
            proxy.log().contains("fault injected at"),
            "{}: the panic's message is in the log",
            v.point
        );
    }
}
