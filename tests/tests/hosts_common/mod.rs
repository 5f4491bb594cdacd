//! Shared by the host tests (`pg_failover`, `pg_standby`, `pg_breaker`, `mysql_read_only`):
//! reading the proxy's events of one kind from `/api/events`, and a config for a sandbox primary
//! and its standby behind one backend.

use poolguard_e2e::admin::http_get;
use poolguard_e2e::{config_for, sandbox, PgSandbox, PoolSpec, DB, PASSWORD, USER};

/// A sandbox primary with table `t (id, note)` owned by the app role, and its streaming
/// standby (`pg_basebackup`) caught up with it.
#[allow(dead_code)] // not every test file that shares this module uses it
pub fn primary_with_standby() -> (PgSandbox, PgSandbox) {
    let primary = sandbox(40);
    primary
        .psql_as(
            USER,
            PASSWORD,
            DB,
            "CREATE TABLE t (id bigserial PRIMARY KEY, note text NOT NULL)",
        )
        .expect("create table t");
    let standby = primary.standby().expect("standby of the primary");
    primary
        .wait_replayed_by(&standby, std::time::Duration::from_secs(30))
        .expect("the standby caught up");
    (primary, standby)
}

/// `config_for(primary, ...)` with the backend's hosts the primary then the standby, health
/// checks every 250 ms, and a breaker that opens after 3 failed connects for 1 s.
#[allow(dead_code)] // not every test file that shares this module uses it
pub fn primary_and_standby_config(
    primary: &PgSandbox,
    standby: &PgSandbox,
    port: u16,
    spec: &PoolSpec,
) -> String {
    let one_host = format!("hosts = [\"127.0.0.1:{}\"]\n", primary.port());
    let config = config_for(primary, port, spec).replacen(
        &one_host,
        &format!(
            "hosts = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\nhealth_check_interval = \"250ms\"\n\
             health_check_timeout = \"1s\"\nconnect_timeout = \"2s\"\nbreaker_failures = 3\n\
             breaker_cooldown = \"1s\"\n",
            primary.port(),
            standby.port()
        ),
        1,
    );
    assert!(config.contains("health_check_interval"), "{config}");
    config
}

/// The messages of every event of `kind` ("breaker", "failover", ...) still in the log.
#[allow(dead_code)] // not every test file that shares this module uses it
pub fn event_messages(admin: u16, kind: &str) -> Vec<String> {
    let events: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/events")).expect("events JSON");
    events
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|e| e["kind"] == kind)
                .filter_map(|e| e["message"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
