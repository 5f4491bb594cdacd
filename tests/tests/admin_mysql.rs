//! Observability of the MySQL front door through the real binary against a sandbox MariaDB:
//! a PyMySQL client holding a transaction past `leak_threshold` is reported once, with its
//! `program_name` and its address, and listed by `/api/leases`; the traffic counters move by
//! exactly the transactions and queries a scripted workload ran.

use std::process::Command;
use std::time::Duration;

use poolguard_e2e::admin::*;
use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

mod scripted;
use scripted::Scripted;

const POOL: &str = "pool=\"bank/app\"";

/// poolguard's MySQL front door with `[admin] listen` and a 2 s leak threshold.
fn observed_proxy(db: &MariaDbSandbox) -> (Proxy, u16) {
    let admin = free_port();
    let spec = MyPoolSpec {
        pool_size: 3,
        limits: format!(
            "leak_threshold = \"2s\"\nidle_in_transaction_timeout = \"0s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nusers = [\"{USER}\"]\n"
        ),
        ..MyPoolSpec::default()
    };
    (start_mysql_proxy(db, &spec), admin)
}

/// tests/clients/mysql_admin_client.py, driven one line at a time.
struct Client(Scripted);

impl Client {
    fn start(port: u16, mode: &str, program: &str) -> Client {
        Client(Scripted::spawn(
            Command::new("python3")
                .arg(client_script("mysql_admin_client.py"))
                .args([&port.to_string(), mode, program]),
        ))
    }

    fn line(&self) -> String {
        self.0
            .line(Duration::from_secs(60), "see its traceback above")
    }

    fn go(&mut self) {
        self.0.send("");
    }
}

/// The per-pool traffic counters for `bank/app` over MySQL.
fn traffic(admin: u16) -> [f64; 4] {
    let text = http_get(admin, "/metrics");
    [
        "poolguard_transactions_total",
        "poolguard_queries_total",
        "poolguard_client_bytes_received_total",
        "poolguard_client_bytes_sent_total",
    ]
    .map(|name| {
        metric(&text, name, &[POOL, "protocol=\"mysql\""])
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    })
}

#[test]
fn leak_event_names_the_program_and_its_address() {
    let db = mariadb(40);
    let (proxy, admin) = observed_proxy(&db);
    let mut client = Client::start(proxy.port, "leak", "fee-tool-my");
    let connected = client.line();
    let parts: Vec<&str> = connected.split(' ').collect();
    assert_eq!(parts.first(), Some(&"connected"), "{connected}");
    let address = format!("{}:{}", parts[1], parts[2]);
    client.go();
    assert_eq!(client.line(), "holding");

    let event = wait_for(Duration::from_secs(20), "leak event", || {
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
    assert_eq!(lease["protocol"], "mysql");
    assert_eq!(lease["application"], "fee-tool-my");
    assert_eq!(lease["client"], address.as_str(), "{event}");
    assert_eq!(lease["user"], USER);
    assert_eq!(lease["database"], DB);
    assert_eq!(lease["pool"], "bank/app");
    assert_eq!(lease["state"], "idle in transaction");
    assert!(event["message"].as_str().unwrap().contains(&address));

    let leases: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/leases?older_than=1s")).unwrap();
    let leases = leases.as_array().unwrap();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[0]["application"], "fee-tool-my");
    assert_eq!(leases[0]["client"], address.as_str());
    assert!(leases[0]["leak_reported"].as_bool().unwrap());

    // Still held a few leak checks later: reported once, not once per check.
    std::thread::sleep(Duration::from_secs(3));
    let events: serde_json::Value = serde_json::from_str(&http_get(admin, "/api/events")).unwrap();
    let leaks = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "leak")
        .count();
    assert_eq!(leaks, 1, "{events}");
    assert_eq!(
        metric(
            &http_get(admin, "/metrics"),
            "poolguard_pool_leaks_total",
            &[POOL]
        ),
        Some(1.0)
    );

    client.go();
    assert_eq!(client.line(), "released");
    let left: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/leases?older_than=1s")).unwrap();
    assert_eq!(left.as_array().unwrap().len(), 0, "{left}");
    assert!(proxy.log().contains("lease exceeded leak threshold"));
}

#[test]
fn traffic_counters_count_mysql_transactions_and_queries() {
    let db = mariadb(40);
    let (proxy, admin) = observed_proxy(&db);
    let mut client = Client::start(proxy.port, "traffic", "ledger-batch");
    assert!(client.line().starts_with("connected"));
    client.go();
    assert_eq!(client.line(), "created");
    let before = traffic(admin);
    client.go();
    assert_eq!(client.line(), "done");
    let after = traffic(admin);
    assert_eq!(after[0] - before[0], 15.0, "transactions");
    assert_eq!(after[1] - before[1], 55.0, "COM_QUERY");
    assert!(after[2] > before[2], "bytes received grow");
    assert!(after[3] > before[3], "bytes sent grow");

    // Binary protocol: COM_STMT_PREPARE does not count; each COM_STMT_EXECUTE is a query and,
    // autocommit, a transaction.
    let mut c = MyClient::connect(proxy.port).expect("connect");
    let id = c.prepare("SELECT 1").expect("prepare");
    let mid = traffic(admin);
    assert_eq!(mid[1], after[1], "prepare is not a query");
    for _ in 0..3 {
        let mut execute = vec![0x17];
        execute.extend_from_slice(&id.to_le_bytes());
        execute.push(0); // no cursor
        execute.extend_from_slice(&1u32.to_le_bytes()); // iteration count
        c.command_packets(&execute).expect("execute");
    }
    let last = traffic(admin);
    assert_eq!(
        last[0] - mid[0],
        3.0,
        "autocommit executes are transactions"
    );
    assert_eq!(last[1] - mid[1], 3.0, "COM_STMT_EXECUTE");

    let pools: serde_json::Value = serde_json::from_str(&http_get(admin, "/api/pools")).unwrap();
    let pool = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["protocol"] == "mysql" && p["name"] == "bank/app")
        .cloned()
        .unwrap_or_else(|| panic!("{pools}"));
    assert_eq!(pool["transactions_total"].as_f64(), Some(last[0]));
    assert_eq!(pool["queries_total"].as_f64(), Some(last[1]));
    assert!(pool["transaction_seconds_total"].as_f64().unwrap() > 0.0);
    assert!(pool["query_seconds_total"].as_f64().unwrap() > 0.0);
}
