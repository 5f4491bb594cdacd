//! Shared by the host tests (`pg_failover`, `pg_breaker`, `mysql_read_only`): reading the
//! proxy's events of one kind from `/api/events`.

use poolguard_e2e::admin::http_get;

/// The messages of every event of `kind` ("breaker", "failover", ...) still in the log.
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
