//! Standby databases through the real binary: a sandbox primary and its streaming standby
//! (`pg_basebackup`) behind one backend, and three databases on the same server database:
//! `bank` (writes, the primary), `bank_ro` (`target = "standby"`) and `bank_ro_strict` (a
//! standby database that does not fall back). psql clients check where each one lands, that
//! writes through a standby database fail as read-only even when it falls back to the primary,
//! and that the strict one refuses while no standby is up and serves again when it returns.

use std::process::Output;
use std::time::Duration;

use poolguard_e2e::admin::*;
use poolguard_e2e::*;

mod hosts_common;
use hosts_common::{primary_and_standby_config, primary_with_standby};

/// psql as `app` on database `db` through poolguard, one command.
fn psql_on(port: u16, db: &str, sql: &str) -> Output {
    run_pg(psql_command(port).args(["-d", db, "-c", sql]))
}

/// The one value `sql` returns on `db`, or psql's error text.
fn value(port: u16, db: &str, sql: &str) -> Result<String, String> {
    let out = psql_on(port, db, sql);
    if out.status.success() {
        Ok(stdout(&out))
    } else {
        Err(stderr(&out))
    }
}

/// Where a fresh client of `db` lands: (in recovery, server port).
fn lands_on(port: u16, db: &str) -> Result<(bool, u16), String> {
    let v = value(
        port,
        db,
        "SELECT pg_is_in_recovery()::text || ' ' || inet_server_port()",
    )?;
    let (recovery, server_port) = v.split_once(' ').ok_or(v.clone())?;
    Ok((
        recovery == "true",
        server_port.parse().map_err(|_| v.clone())?,
    ))
}

fn standby_config(primary: &PgSandbox, standby: &PgSandbox, port: u16, admin: u16) -> String {
    let spec = PoolSpec {
        pool_size: 3,
        budget: 12,
        extra: format!(
            "\n[[databases]]\nname = \"bank_ro\"\nserver_database = \"{DB}\"\nbackend = \"pg\"\n\
             pool_size = 3\ntarget = \"standby\"\n\n[[databases]]\nname = \"bank_ro_strict\"\n\
             server_database = \"{DB}\"\nbackend = \"pg\"\npool_size = 2\ntarget = \"standby\"\n\
             standby_fallback = false\n"
        ),
        limits: format!("acquire_timeout = \"5s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..PoolSpec::default()
    };
    primary_and_standby_config(primary, standby, port, &spec)
}

#[test]
fn reads_go_to_the_standby_and_fall_back_read_only() {
    let (primary, mut standby) = primary_with_standby();

    let (port, admin) = (free_port(), free_port());
    let proxy = Proxy::start_with(&standby_config(&primary, &standby, port, admin), port);
    let limit = Duration::from_secs(60);

    // Until the first health check, no host is known as a standby and bank_ro falls back.
    wait_for(limit, "bank_ro on the standby", || {
        (lands_on(port, "bank_ro").ok()? == (true, standby.port())).then_some(())
    });
    for _ in 0..5 {
        assert_eq!(lands_on(port, "bank_ro"), Ok((true, standby.port())));
        assert_eq!(lands_on(port, "bank_ro_strict"), Ok((true, standby.port())));
        assert_eq!(lands_on(port, DB), Ok((false, primary.port())));
    }
    assert_eq!(
        value(port, "bank_ro", "SHOW default_transaction_read_only").as_deref(),
        Ok("on")
    );
    assert_eq!(
        value(port, DB, "SHOW default_transaction_read_only").as_deref(),
        Ok("off")
    );

    // Writes: through bank they land and replicate; through bank_ro they fail as read-only.
    let refused = value(port, "bank_ro", "INSERT INTO t (note) VALUES ('via ro')").unwrap_err();
    assert!(refused.contains("read-only transaction"), "{refused}");
    assert_eq!(
        value(
            port,
            DB,
            "INSERT INTO t (note) VALUES ('via primary') RETURNING note"
        )
        .as_deref(),
        Ok("via primary")
    );
    wait_for(limit, "the write replicated to the standby", || {
        (value(
            port,
            "bank_ro",
            "SELECT count(*) FROM t WHERE note = 'via primary'",
        )
        .ok()?
            == "1")
            .then_some(())
    });

    // The standby goes away: bank_ro falls back to the primary, still read-only; the strict
    // database refuses with 57P03.
    standby.stop().expect("stop the standby");
    wait_for(limit, "bank_ro falling back to the primary", || {
        (lands_on(port, "bank_ro").ok()? == (false, primary.port())).then_some(())
    });
    let refused = value(port, "bank_ro", "INSERT INTO t (note) VALUES ('fallback')").unwrap_err();
    assert!(refused.contains("read-only transaction"), "{refused}");
    let strict = wait_for(limit, "bank_ro_strict refusing", || {
        value(port, "bank_ro_strict", "SELECT 1")
            .err()
            .filter(|e| e.contains("no standby"))
    });
    assert_eq!(
        primary
            .psql(
                DB,
                "SELECT count(*) FROM t WHERE note IN ('via ro', 'fallback')"
            )
            .unwrap()
            .trim(),
        "0",
        "no write through a standby database reached the primary"
    );

    // It comes back: the strict database serves again, from the standby.
    standby.start_again().expect("restart the standby");
    wait_for(limit, "bank_ro_strict on the standby again", || {
        (lands_on(port, "bank_ro_strict").ok()? == (true, standby.port())).then_some(())
    });

    let pools = http_get(admin, "/api/pools");
    assert!(
        pools.contains("\"database\":\"bank_ro\"") && pools.contains("\"target\":\"standby\""),
        "{pools}"
    );
    assert!(pools.contains("\"target\":\"primary\""), "{pools}");
    println!(
        "standby databases: bank_ro on :{} (standby), bank on :{} (primary); with the standby \
         stopped bank_ro fell back read-only and bank_ro_strict refused: {}",
        standby.port(),
        primary.port(),
        strict.lines().next().unwrap_or_default()
    );
    drop(proxy);
}
