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
