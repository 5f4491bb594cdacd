//! Prometheus text exposition (format 0.0.4), written by hand from a [`Snapshot`].
//!
//! Every family gets one `# HELP` and one `# TYPE` line, then its samples; label values are
//! escaped (`\\`, `\"`, `\n`). Names are the contract documented in docs/operations.md's
//! Observability section and used by `deploy/`: rename none.

use std::fmt::Write as _;

use crate::model::{AcquireHistogram, Snapshot};

/// A family's samples: (labels, value).
type Samples = Vec<(String, f64)>;

struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str, samples: &Samples) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.sample(name, labels, *value);
        }
    }

    fn sample(&mut self, name: &str, labels: &str, value: f64) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {}", number(value));
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {}", number(value));
        }
    }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `[fleet]`: the share of each backend's fleet budget held here, and etcd's health.
fn fleet_families(w: &mut Writer, fleet: &crate::model::FleetSnapshot) {
    let per = |f: &dyn Fn(&crate::model::FleetShareSnapshot) -> usize| -> Samples {
        fleet
            .shares
            .iter()
            .map(|s| (labels(&[("backend", &s.backend)]), f(s) as f64))
            .collect()
    };
    w.family(
        "poolguard_fleet_share",
        "gauge",
        "Server connections this instance may hold on the backend: its share of the fleet budget.",
        &per(&|s| s.share),
    );
    w.family(
        "poolguard_fleet_grant",
        "gauge",
        "Units of the fleet budget this instance holds in etcd (the share never exceeds it).",
        &per(&|s| s.grant),
    );
    w.family(
        "poolguard_fleet_budget",
        "gauge",
        "The fleet budget on the backend ([[backends]] max_connections, for every instance together).",
        &per(&|s| s.budget),
    );
    w.family(
        "poolguard_fleet_members",
        "gauge",
        "Fleet instances holding a record for the backend in etcd (this one included).",
        &per(&|s| s.members),
    );
    let instance = labels(&[("instance", &fleet.instance)]);
    w.family(
        "poolguard_fleet_etcd_errors_total",
        "counter",
        "etcd calls that failed (lease, shares, Patroni leader).",
        &vec![(instance.clone(), fleet.etcd_errors_total as f64)],
    );
    w.family(
        "poolguard_fleet_etcd_up",
        "gauge",
        "1 while the last etcd call succeeded; 0 while etcd fails (shares are held, never raised).",
        &vec![(instance, f64::from(u8::from(fleet.etcd_error.is_none())))],
    );
}

/// `a="x",b="y"` with values escaped.
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s
}

/// The whole exposition; `extra` (alert states) is appended as is.
pub fn render(snap: &Snapshot, extra: &str) -> String {
    let mut w = Writer {
        out: String::with_capacity(8 * 1024),
    };
    pools(&mut w, snap);
    backends(&mut w, snap);
    let one = |v: f64| vec![(String::new(), v)];
    w.family(
        "poolguard_clients_connected",
        "gauge",
        "Clients connected through every front door.",
        &one(snap.clients_connected as f64),
    );
    w.family(
        "poolguard_clients_resting",
        "gauge",
        "Idle clients resting in a worker's lot: a small record each, no task.",
        &one(snap.clients_resting as f64),
    );
    w.family(
        "poolguard_pins_total",
        "counter",
        "Clients pinned to one server for their session by transaction-mode rules.",
        &one(snap.pins_total as f64),
    );
    w.family(
        "poolguard_idle_in_transaction_kills_total",
        "counter",
        "Transactions idle past idle_in_transaction_timeout, rolled back and their server reclaimed.",
        &one(snap.idle_in_transaction_kills_total as f64),
    );
    let errors = snap
        .errors_total
        .iter()
        .map(|(protocol, code, n)| (labels(&[("protocol", protocol), ("code", code)]), *n as f64))
        .collect();
    w.family(
        "poolguard_errors_total",
        "counter",
        "Errors poolguard sent to clients, by SQLSTATE (postgres) or error code (mysql).",
        &errors,
    );
    w.family(
        "poolguard_panics_total",
        "counter",
        "Client and cleanup tasks stopped by a panic (each contained to its own client, its server connection closed).",
        &one(snap.panics_total as f64),
    );
    if let Some(fleet) = &snap.fleet {
        fleet_families(&mut w, fleet);
    }
    w.family(
        "poolguard_paused",
        "gauge",
        "1 while the admin console's PAUSE is in effect.",
        &one(f64::from(u8::from(snap.paused))),
    );
    w.out.push_str(&crate::process::render());
    w.out.push_str(extra);
    w.out
}

fn pools(w: &mut Writer, snap: &Snapshot) {
    type Get = fn(&crate::model::PoolSnapshot) -> f64;
    let gauges: [(&str, &str, &str, Get); 23] = [
        (
            "poolguard_pool_open_connections",
            "gauge",
            "Open server connections (idle + in use).",
            |p| p.open as f64,
        ),
        (
            "poolguard_pool_size",
            "gauge",
            "pool_size: connections kept open when idle.",
            |p| p.size as f64,
        ),
        (
            "poolguard_pool_cap",
            "gauge",
            "pool_size + max_overflow: most server connections this pool may hold.",
            |p| p.cap as f64,
        ),
        (
            "poolguard_pool_clients",
            "gauge",
            "Clients connected to this pool.",
            |p| p.clients as f64,
        ),
        (
            "poolguard_pool_waiters",
            "gauge",
            "Acquires waiting for a server connection.",
            |p| p.waiters as f64,
        ),
        (
            "poolguard_pool_oldest_wait_seconds",
            "gauge",
            "How long the longest-waiting acquire has waited.",
            |p| p.oldest_wait_seconds,
        ),
        (
            "poolguard_pool_acquires_total",
            "counter",
            "Successful acquires (transactions in transaction mode, sessions in session mode).",
            |p| p.acquired_total as f64,
        ),
        (
            "poolguard_pool_acquire_timeouts_total",
            "counter",
            "Acquires that hit acquire_timeout (clients told 53300 / 1040).",
            |p| p.timeouts_total as f64,
        ),
        (
            "poolguard_pool_server_connects_total",
            "counter",
            "Server connections opened.",
            |p| p.connects_total as f64,
        ),
        (
            "poolguard_pool_server_connect_errors_total",
            "counter",
            "Server connection attempts that failed.",
            |p| p.connect_errors_total as f64,
        ),
        (
            "poolguard_pool_server_closed_total",
            "counter",
            "Server connections closed, any reason.",
            |p| p.closed_total as f64,
        ),
        (
            "poolguard_pool_rejected_waiters_total",
            "counter",
            "Acquires refused at once because max_waiters clients already waited (53400 / 1203).",
            |p| p.rejected_waiters_total as f64,
        ),
        (
            "poolguard_pool_breaker_refusals_total",
            "counter",
            "Acquires refused at once because the backend's circuit breaker was open (57P03 / 2003).",
            |p| p.refused_total as f64,
        ),
        (
            "poolguard_pool_paused",
            "gauge",
            "1 while the pool is paused (PAUSE on the admin console).",
            |p| f64::from(u8::from(p.paused)),
        ),
        (
            "poolguard_pool_leaks_total",
            "counter",
            "Leases reported as held past leak_threshold.",
            |p| p.leaks_total as f64,
        ),
        (
            "poolguard_pool_client_statements",
            "gauge",
            "Statements sent by the pool's currently connected clients.",
            |p| p.statements as f64,
        ),
        (
            "poolguard_transactions_total",
            "counter",
            "Transactions completed through the pool (an autocommit statement counts as one).",
            |p| p.transactions_total as f64,
        ),
        (
            "poolguard_queries_total",
            "counter",
            "Queries sent to servers: simple Query and Execute (postgres), COM_QUERY and COM_STMT_EXECUTE (mysql).",
            |p| p.queries_total as f64,
        ),
        (
            "poolguard_parses_reused_total",
            "counter",
            "Unnamed-statement Parses answered by poolguard because the server already held that exact statement (postgres).",
            |p| p.parses_reused_total as f64,
        ),
        (
            "poolguard_client_bytes_received_total",
            "counter",
            "Bytes read from the pool's clients after login.",
            |p| p.bytes_received_total as f64,
        ),
        (
            "poolguard_client_bytes_sent_total",
            "counter",
            "Bytes written to the pool's clients after login.",
            |p| p.bytes_sent_total as f64,
        ),
        (
            "poolguard_transaction_seconds_total",
            "counter",
            "Time spent in transactions, from their first query to their end, summed.",
            |p| p.transaction_seconds_total,
        ),
        (
            "poolguard_query_seconds_total",
            "counter",
            "Time spent in queries, from reaching the server to its answer, summed.",
            |p| p.query_seconds_total,
        ),
    ];
    let base = |p: &crate::model::PoolSnapshot| {
        labels(&[
            ("backend", &p.backend),
            ("pool", &p.name),
            ("database", &p.database),
            ("user", &p.user),
            ("protocol", &p.protocol),
        ])
    };
    let mut by_state = Vec::new();
    for p in &snap.pools {
        for (state, v) in [
            ("idle", p.idle),
            ("in_use", p.in_use),
            ("connecting", p.connecting),
        ] {
            by_state.push((format!("{},state=\"{state}\"", base(p)), v as f64));
        }
    }
    w.family(
        "poolguard_pool_server_connections",
        "gauge",
        "Server connections held by the pool, by state (idle, in_use, connecting).",
        &by_state,
    );
    let discarded = snap
        .pools
        .iter()
        .flat_map(|p| {
            let b = base(p);
            p.discarded
                .iter()
                .map(move |(reason, n)| (format!("{b},reason=\"{reason}\""), *n as f64))
        })
        .collect();
    w.family(
        "poolguard_server_connections_discarded_total",
        "counter",
        "Leased server connections closed instead of reused because they were not proven clean, by reason.",
        &discarded,
    );
    for (name, kind, help, get) in gauges {
        let samples = snap.pools.iter().map(|p| (base(p), get(p))).collect();
        w.family(name, kind, help, &samples);
    }
    let name = "poolguard_pool_acquire_wait_seconds";
    let _ = writeln!(
        w.out,
        "# HELP {name} Time from asking for a server connection to getting one."
    );
    let _ = writeln!(w.out, "# TYPE {name} histogram");
    for p in &snap.pools {
        let b = base(p);
        let count = p.acquire_wait_buckets.last().copied().unwrap_or(0);
        for (i, bound) in AcquireHistogram::BOUNDS.iter().enumerate() {
            let c = p.acquire_wait_buckets.get(i).copied().unwrap_or(0);
            w.sample(
                &format!("{name}_bucket"),
                &format!("{b},le=\"{bound}\""),
                c as f64,
            );
        }
        w.sample(
            &format!("{name}_bucket"),
            &format!("{b},le=\"+Inf\""),
            count as f64,
        );
        w.sample(&format!("{name}_sum"), &b, p.acquire_wait_sum);
        w.sample(&format!("{name}_count"), &b, count as f64);
    }
}

fn backends(w: &mut Writer, snap: &Snapshot) {
    let base = |b: &crate::model::BackendSnapshot| {
        labels(&[
            ("backend", &b.name),
            ("protocol", &b.protocol),
            ("host", &b.host),
        ])
    };
    let each = |f: &dyn Fn(&crate::model::BackendSnapshot) -> Option<f64>| -> Samples {
        snap.backends
            .iter()
            .filter_map(|b| f(b).map(|v| (base(b), v)))
            .collect()
    };
    w.family(
        "poolguard_backend_budget_limit",
        "gauge",
        "poolguard's connection budget on the backend ([[backends]] max_connections).",
        &each(&|b| Some(b.budget_limit as f64)),
    );
    w.family(
        "poolguard_backend_budget_in_use",
        "gauge",
        "Server connections (open or opening) held by all of poolguard's pools on the backend.",
        &each(&|b| Some(b.budget_in_use as f64)),
    );
    w.family(
        "poolguard_server_connections",
        "gauge",
        "Connections the server itself counts, from every client (polled).",
        &each(&|b| b.server_connections.map(|v| v as f64)),
    );
    w.family(
        "poolguard_server_max_connections",
        "gauge",
        "The server's max_connections (polled).",
        &each(&|b| b.server_max_connections.map(|v| v as f64)),
    );
    w.family(
        "poolguard_backend_failovers_total",
        "counter",
        "Times the backend's writes moved to another host.",
        &each(&|b| Some(b.failovers_total as f64)),
    );
    hosts(w, snap);
    w.family(
        "poolguard_server_poll_up",
        "gauge",
        "1 if the last poll of the server's connection numbers succeeded.",
        &each(&|b| {
            Some(f64::from(u8::from(
                b.poll_error.is_none() && b.server_connections.is_some(),
            )))
        }),
    );
}

fn hosts(w: &mut Writer, snap: &Snapshot) {
    type Get = fn(&crate::model::HostSnapshot) -> f64;
    let families: [(&str, &str, &str, Get); 5] = [
        (
            "poolguard_host_breaker_state",
            "gauge",
            "The host's circuit breaker: 0 closed, 1 open, 2 half-open.",
            |h| f64::from(h.breaker_gauge),
        ),
        (
            "poolguard_host_breaker_opened_total",
            "counter",
            "Times the host's circuit breaker opened.",
            |h| h.breaker_opened_total as f64,
        ),
        (
            "poolguard_host_breaker_rejected_total",
            "counter",
            "Connects the open breaker refused without trying the host.",
            |h| h.breaker_rejected_total as f64,
        ),
        (
            "poolguard_host_writable",
            "gauge",
            "1 if the last health check found the host taking writes (primary).",
            |h| f64::from(u8::from(h.role == "primary")),
        ),
        (
            "poolguard_host_writes_here",
            "gauge",
            "1 for the host the backend's new server connections go to.",
            |h| f64::from(u8::from(h.writes_here)),
        ),
    ];
    for (name, kind, help, get) in families {
        let samples: Samples = snap
            .backends
            .iter()
            .flat_map(|b| {
                b.hosts.iter().map(move |h| {
                    (
                        labels(&[("backend", &b.name), ("host", &h.addr), ("role", &h.role)]),
                        get(h),
                    )
                })
            })
            .collect();
        w.family(name, kind, help, &samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendSnapshot, PoolSnapshot};

    #[test]
    fn exposition_is_well_formed() {
        let snap = Snapshot {
            pools: vec![PoolSnapshot {
                name: "bank/app".into(),
                backend: "pg".into(),
                protocol: "postgres".into(),
                database: "bank".into(),
                user: "a\"p\\p".into(),
                in_use: 3,
                transactions_total: 15,
                query_seconds_total: 0.25,
                acquire_wait_buckets: vec![1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
                acquire_wait_sum: 0.5,
                ..Default::default()
            }],
            backends: vec![BackendSnapshot {
                name: "pg".into(),
                server_connections: Some(7),
                server_max_connections: Some(100),
                ..Default::default()
            }],
            clients_connected: 4,
            ..Default::default()
        };
        let text = render(&snap, "");
        assert!(text.contains("user=\"a\\\"p\\\\p\""), "{text}");
        assert!(text.contains(",state=\"in_use\"} 3\n"), "{text}");
        assert!(text.contains(
            "poolguard_server_max_connections{backend=\"pg\",protocol=\"\",host=\"\"} 100\n"
        ));
        assert!(text.contains("le=\"+Inf\"} 2\n"));
        assert!(text.contains("poolguard_pool_acquire_wait_seconds_count{"));
        assert!(text.contains("poolguard_clients_connected 4\n"));
        assert!(text.contains("# TYPE poolguard_transactions_total counter\n"));
        assert!(text.contains("poolguard_transactions_total{backend=\"pg\",pool=\"bank/app\","));
        assert!(text.contains(",protocol=\"postgres\"} 15\n"), "{text}");
        assert!(text.contains("poolguard_query_seconds_total{") && text.contains("} 0.25\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok() || value == "+Inf", "{line}");
        }
    }
}
