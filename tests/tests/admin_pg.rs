//! Observability through the real binary against a sandbox PostgreSQL: metric counts after a
//! scripted workload, a leak event naming the holder (application_name and address), the
//! alert on it fired and resolved exactly once each at a test webhook, and the JSON API.

use std::time::Duration;

use poolguard_e2e::admin::*;
use poolguard_e2e::*;

fn observed_proxy(pg: &PgSandbox, hook: u16) -> (Proxy, u16) {
    let admin = free_port();
    let spec = PoolSpec {
        pool_size: 3,
        limits: format!(
            r#"leak_threshold = "2s"
idle_in_transaction_timeout = "0s"

[admin]
listen = "127.0.0.1:{admin}"
users = ["{USER}"]

[[alerts]]
name = "leaked-connections"
metric = "leaks"
threshold = 1
for = "0s"
webhook = "http://127.0.0.1:{hook}/hook"
"#
        ),
        ..PoolSpec::default()
    };
    (Proxy::start(pg, &spec), admin)
}

#[test]
fn metrics_leaks_alerts_and_api() {
    let pg = sandbox(30);
    let hook = WebhookReceiver::start();
    let (proxy, admin) = observed_proxy(&pg, hook.port);
    let pool = "pool=\"bank/app\"";

    // Scripted workload: five one-statement clients = five more acquires.
    assert!(psql(proxy.port, "SELECT 1").status.success());
    let before = metric(
        &http_get(admin, "/metrics"),
        "poolguard_pool_acquires_total",
        &[pool],
    )
    .unwrap();
    for _ in 0..5 {
        let out = psql(proxy.port, "SELECT 1");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let text = http_get(admin, "/metrics");
    let after = metric(&text, "poolguard_pool_acquires_total", &[pool]).unwrap();
    assert_eq!(after - before, 5.0, "{text}");
    assert_eq!(metric(&text, "poolguard_pool_cap", &[pool]), Some(3.0));
    assert_eq!(
        metric(&text, "poolguard_backend_budget_limit", &["backend=\"pg\""]),
        Some(10.0)
    );
    assert_eq!(
        metric(&text, "poolguard_pool_leaks_total", &[pool]),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, "poolguard_pool_acquire_wait_seconds_count", &[pool]),
        Some(after),
        "one histogram observation per acquire"
    );
    // The server's own numbers are polled (first poll at start).
    let max = wait_for(Duration::from_secs(15), "server poll", || {
        metric(
            &http_get(admin, "/metrics"),
            "poolguard_server_max_connections",
            &["backend=\"pg\""],
        )
    });
    assert_eq!(max, 30.0);

    // A leaky client: opens a transaction and sits on it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (client, local) = rt.block_on(async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
            .await
            .unwrap();
        let local = stream.local_addr().unwrap();
        let mut cfg: tokio_postgres::Config = proxy.conn_str().parse().unwrap();
        cfg.application_name("fee-tool");
        let (client, conn) = cfg
            .connect_raw(stream, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("BEGIN; SELECT count(*) FROM pg_class")
            .await
            .unwrap();
        (client, local)
    });
    let event = wait_for(Duration::from_secs(15), "leak event", || {
        let events: serde_json::Value =
            serde_json::from_str(&http_get(admin, "/api/events")).unwrap();
        events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == "leak")
            .cloned()
    });
    let lease = &event["lease"];
    assert_eq!(lease["application"], "fee-tool");
    assert_eq!(lease["client"], local.to_string());
    assert_eq!(lease["user"], USER);
    assert_eq!(lease["database"], DB);
    assert_eq!(lease["state"], "idle in transaction");
    assert_eq!(
        lease["last_statement"],
        "BEGIN; SELECT count(*) FROM pg_class"
    );
    assert!(proxy.log().contains("lease exceeded leak threshold"));

    let leases: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/leases?older_than=1s")).unwrap();
    assert_eq!(leases.as_array().unwrap().len(), 1, "{leases}");
    let holders: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/holders")).unwrap();
    assert_eq!(holders[0]["application"], "fee-tool");
    assert_eq!(holders[0]["address"], "127.0.0.1");
    let clients: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/clients")).unwrap();
    assert!(clients
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["application"] == "fee-tool"));
    let text = http_get(admin, "/metrics");
    assert_eq!(
        metric(&text, "poolguard_pool_leaks_total", &[pool]),
        Some(1.0)
    );

    // The alert fires once; the leak ends; it resolves once.
    wait_for(Duration::from_secs(10), "firing webhook", || {
        (!hook.received().is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hook.received().len(),
        1,
        "no duplicate while firing: {:?}",
        hook.received()
    );
    rt.block_on(async {
        client.batch_execute("COMMIT").await.unwrap();
        drop(client);
    });
    wait_for(Duration::from_secs(10), "resolved webhook", || {
        (hook.received().len() >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let got = hook.received();
    assert_eq!(got.len(), 2, "{got:?}");
    let first: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    let second: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
    assert_eq!(
        (first["status"].as_str(), second["status"].as_str()),
        (Some("firing"), Some("resolved"))
    );
    assert!(first["text"]
        .as_str()
        .unwrap()
        .contains("leaked-connections"));
    // Still one leak counted: each lease is reported once.
    let text = http_get(admin, "/metrics");
    assert_eq!(
        metric(&text, "poolguard_pool_leaks_total", &[pool]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            "poolguard_alert_firing",
            &["rule=\"leaked-connections\""]
        ),
        Some(0.0)
    );
}

/// The per-pool traffic counters of `/metrics` for the `bank/app` pool.
fn traffic(admin: u16) -> [f64; 6] {
    let text = http_get(admin, "/metrics");
    [
        "poolguard_transactions_total",
        "poolguard_queries_total",
        "poolguard_client_bytes_received_total",
        "poolguard_client_bytes_sent_total",
        "poolguard_transaction_seconds_total",
        "poolguard_query_seconds_total",
    ]
    .map(|name| {
        metric(&text, name, &["pool=\"bank/app\"", "protocol=\"postgres\""])
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    })
}

#[test]
fn traffic_counters_count_transactions_and_queries() {
    let pg = sandbox(30);
    let admin = free_port();
    let spec = PoolSpec {
        pool_size: 2,
        limits: format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nusers = [\"{USER}\"]\n"),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let out = psql(proxy.port, "CREATE TABLE ledger (id int, amount int)");
    assert!(out.status.success(), "{}", stderr(&out));
    let before = traffic(admin);

    // 10 explicit transactions of 3 statements (5 queries each with BEGIN and COMMIT), then
    // 5 autocommit statements: 15 transactions, 55 simple queries.
    let mut script = String::new();
    for i in 0..10 {
        script.push_str(&format!(
            "BEGIN;\nINSERT INTO ledger VALUES ({i}, 1);\nUPDATE ledger SET amount = amount + 1 WHERE id = {i};\nSELECT count(*) FROM ledger;\nCOMMIT;\n"
        ));
    }
    for i in 0..5 {
        script.push_str(&format!("SELECT {i};\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("workload.sql");
    std::fs::write(&file, script).unwrap();
    let out = psql_file(proxy.port, &file);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = traffic(admin);
    assert_eq!(after[0] - before[0], 15.0, "transactions");
    assert_eq!(after[1] - before[1], 55.0, "queries");
    assert!(after[2] > before[2], "bytes received grow");
    assert!(after[3] > before[3], "bytes sent grow");
    assert!(
        after[4] > before[4] && after[5] > before[5],
        "time is summed"
    );

    // Extended protocol (tokio-postgres): Parse/Describe/Sync to prepare and Close do not count;
    // each Bind/Execute/Sync is one query and, outside a transaction, one transaction. In a
    // transaction: BEGIN, two Executes, COMMIT = four queries, one transaction.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(&proxy.conn_str(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        for i in 0..4i32 {
            let row = client.query_one("SELECT $1::int + 1", &[&i]).await.unwrap();
            assert_eq!(row.get::<_, i32>(0), i + 1);
        }
        let tx = client.transaction().await.unwrap();
        tx.execute("INSERT INTO ledger VALUES ($1, 0)", &[&100i32])
            .await
            .unwrap();
        tx.execute("DELETE FROM ledger WHERE id = $1", &[&100i32])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    let last = traffic(admin);
    assert_eq!(last[0] - after[0], 5.0, "extended-protocol transactions");
    assert_eq!(last[1] - after[1], 8.0, "extended-protocol queries");

    // /api/pools reports the same totals.
    let pools: serde_json::Value = serde_json::from_str(&http_get(admin, "/api/pools")).unwrap();
    let pool = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bank/app")
        .cloned()
        .unwrap_or_else(|| panic!("{pools}"));
    assert_eq!(pool["transactions_total"].as_f64(), Some(last[0]));
    assert_eq!(pool["queries_total"].as_f64(), Some(last[1]));
    // The client's Terminate may land between the two reads: bytes only ever grow.
    let received = pool["bytes_received_total"].as_f64().unwrap();
    assert!(received >= last[2], "{received} < {}", last[2]);
}
