//! The TradeMate incident, replayed: a Flask API (SQLAlchemy over PyMySQL, the real stack of the
//! outage) scaled out to three processes, each engine with `pool_size=10, max_overflow=5`, whose
//! leaky endpoint opens connections and never closes them (every third one inside `BEGIN` with an
//! uncommitted INSERT), while a healthy endpoint keeps being called. See
//! `tests/clients/trademate_app.py`.
//!
//! Directly against a MariaDB with `max_connections = 20` the leaks fill the server, new
//! connections are refused with 1040 "Too many connections" and the healthy endpoint answers 500.
//! Through poolguard (transaction mode, pool 8, budget 10) MariaDB never sees more than the 8
//! pool connections from the app (plus poolguard's own short server-poll connection), the healthy endpoint keeps answering, and the leaked transactions
//! are rolled back by `idle_in_transaction_timeout` (their late COMMIT fails with 1205, their rows
//! never appear).
//!
//! Assertions are on counts only; the figures of both runs are printed.

use std::process::{Command, Output};
use std::time::Duration;

use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

const MAX_CONNECTIONS: u32 = 20;
const ENGINES: u32 = 3;
const BURST: u32 = 7;
const SECONDS: u32 = 10;

/// trademate_app.py's one-line JSON report.
struct Report {
    json: serde_json::Value,
    raw: String,
}

impl Report {
    fn num(&self, key: &str) -> u64 {
        self.json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("no number {key} in {}", self.raw))
    }

    fn map_count(&self, key: &str, entry: &str) -> u64 {
        self.json[key][entry].as_u64().unwrap_or(0)
    }

    fn map(&self, key: &str) -> String {
        self.json[key].to_string()
    }
}

fn run_trademate(port: u16) -> (Report, Output) {
    let url = format!("mysql+pymysql://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}");
    let out = run_within(
        Command::new("python3")
            .arg(client_script("trademate_app.py"))
            .arg(url)
            .args(["--engines", &ENGINES.to_string()])
            .args(["--burst", &BURST.to_string()])
            .args(["--seconds", &SECONDS.to_string()])
            .args([
                "--leak-rate",
                "1",
                "--max-leaks",
                "10",
                "--healthy-threads",
                "2",
            ])
            .args(["--settle", "3"]),
        Duration::from_secs(u64::from(SECONDS) + 60),
    );
    let text = stdout(&out);
    let line = text.lines().last().unwrap_or_default().to_string();
    assert!(
        out.status.success(),
        "trademate_app.py failed ({}):\n{text}\n{}",
        out.status,
        stderr(&out)
    );
    let json = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("bad report ({e}): {line}\n{}", stderr(&out)));
    (Report { json, raw: line }, out)
}

fn orders(db: &MariaDbSandbox, kind: &str) -> u64 {
    db.sql(
        DB,
        &format!("SELECT COUNT(*) FROM trademate_orders WHERE kind = '{kind}'"),
    )
    .expect("count orders as root")
    .parse()
    .expect("a count")
}

fn percent(ok: u64, failed: u64) -> f64 {
    if ok + failed == 0 {
        0.0
    } else {
        100.0 * ok as f64 / (ok + failed) as f64
    }
}

fn summary(r: &Report) -> String {
    let (ok, failed) = (r.num("healthy_ok"), r.num("healthy_500"));
    format!(
        "healthy {ok} ok / {failed} 500 = {:.1}% success; leaky {} ok / {} 500 \
         (leaked in tx {}, idle {}); late COMMITs ok {} failed {}; idle probes ok {} failed {}; \
         endpoint errors {}; leaked connections told {}; messages {}",
        percent(ok, failed),
        r.num("leaky_ok"),
        r.num("leaky_500"),
        r.num("leaked_tx_ok"),
        r.num("leaked_idle_ok"),
        r.num("late_commit_ok"),
        r.num("late_commit_failed"),
        r.num("idle_probe_ok"),
        r.num("idle_probe_failed"),
        r.map("errors"),
        r.map("leaked_kicked"),
        r.map("messages"),
    )
}

#[test]
fn trademate_leak_direct_exhausts_mariadb() {
    let db = mariadb(MAX_CONNECTIONS);
    let sampler = MyPeakSampler::start(&db);
    let (r, _) = run_trademate(db.port());
    let (peak, samples) = sampler.finish();
    let leaked_rows = orders(&db, "leaked-tx");
    eprintln!(
        "TradeMate replay DIRECT (max_connections {MAX_CONNECTIONS}, {ENGINES} engines x (10+5)): \
         {}; peak app connections {peak} ({samples} samples); leaked-tx rows committed {leaked_rows}\n{}",
        summary(&r),
        r.raw
    );
    let (ok, failed) = (r.num("healthy_ok"), r.num("healthy_500"));
    // The server is exhausted: it reached max_connections and refused the rest with 1040.
    assert!(
        peak >= u64::from(MAX_CONNECTIONS),
        "peak {peak} below max_connections"
    );
    assert!(
        r.num("leaky_500") > 0,
        "every leak got a connection: {}",
        r.raw
    );
    assert!(
        r.map_count("errors", "1040") > 0,
        "no 1040 among the errors: {}",
        r.raw
    );
    // Healthy traffic is down.
    assert!(failed > 0, "{}", r.raw);
    assert!(
        ok * 100 < (ok + failed) * 50,
        "healthy success rate {:.1}% not below 50%: {}",
        percent(ok, failed),
        r.raw
    );
    // Nothing reclaimed the leaked transactions: they stayed open, and the late COMMIT landed.
    assert_eq!(r.num("late_commit_ok"), r.num("leaked_tx_ok"), "{}", r.raw);
    assert_eq!(leaked_rows, r.num("leaked_tx_ok"));
}

#[test]
fn trademate_leak_through_poolguard_is_contained() {
    let db = mariadb(MAX_CONNECTIONS);
    let spec = MyPoolSpec {
        mode: "transaction",
        pool_size: 8,
        budget: 10,
        limits: "idle_in_transaction_timeout = \"2s\"\nacquire_timeout = \"3s\"".into(),
        ..MyPoolSpec::default()
    };
    let proxy = start_mysql_proxy(&db, &spec);
    let sampler = MyPeakSampler::start(&db);
    let (r, _) = run_trademate(proxy.port);
    let (peak, samples) = sampler.finish();
    let leaked_rows = orders(&db, "leaked-tx");
    let healthy_rows = orders(&db, "healthy");
    let log = proxy.log();
    let reclaims = log.matches("idle_in_transaction_timeout").count();
    eprintln!(
        "TradeMate replay THROUGH POOLGUARD (max_connections {MAX_CONNECTIONS}, {ENGINES} engines x (10+5); \
         transaction mode, pool_size 8, budget 10, idle_in_transaction_timeout 2s, acquire_timeout 3s): \
         {}; peak app connections {peak} ({samples} samples); leaked-tx rows committed {leaked_rows}; \
         healthy rows {healthy_rows}; log lines on idle_in_transaction_timeout {reclaims}\n{}",
        summary(&r),
        r.raw
    );
    let (ok, failed) = (r.num("healthy_ok"), r.num("healthy_500"));
    // Bounded by the backend budget, the hard cap. SQLAlchemy asks for CLIENT_FOUND_ROWS, which
    // the MySQL door serves from its own pool (`bank/app (found_rows)`, pool_size 8); the one
    // server login poolguard makes to learn the greeting stays idle in the plain `bank/app`
    // pool. Both pools share the budget, so pool_size + 1 here, and never above the budget.
    assert!(samples > 0);
    assert!(peak > 0, "MariaDB never saw poolguard");
    assert!(
        peak <= spec.pool_size as u64 + 1,
        "MariaDB saw {peak} app connections; pool_size is {} (+1 idle in the plain pool)",
        spec.pool_size
    );
    assert!(peak <= spec.budget as u64, "peak {peak} above the budget");
    // Contained: the healthy endpoint kept answering.
    assert!(ok > 0, "no healthy request succeeded: {}", r.raw);
    assert!(
        ok * 100 >= (ok + failed) * 80,
        "healthy success rate {:.1}% below 80%: {}",
        percent(ok, failed),
        r.raw
    );
    assert_eq!(r.map_count("errors", "1040"), 0, "{}", r.raw);
    assert!(
        healthy_rows >= ok,
        "healthy writes lost: {healthy_rows} < {ok}"
    );
    // Every leak got in (idle clients hold no server in transaction mode) ...
    assert_eq!(r.num("leaky_500"), 0, "{}", r.raw);
    assert!(
        r.num("leaked_tx_ok") > 0,
        "no leaked transaction: {}",
        r.raw
    );
    // ... and every leaked transaction was reclaimed: rolled back, its client told 1205.
    assert_eq!(r.num("late_commit_ok"), 0, "{}", r.raw);
    assert_eq!(
        r.map_count("leaked_kicked", "1205"),
        r.num("late_commit_failed"),
        "{}",
        r.raw
    );
    assert!(r.num("late_commit_failed") >= r.num("leaked_tx_ok"));
    assert_eq!(
        leaked_rows, 0,
        "a never-committed transaction's rows are present"
    );
    assert!(
        reclaims >= r.num("leaked_tx_ok") as usize,
        "poolguard logged {reclaims} idle-in-transaction reclaims for {} leaked transactions:\n{log}",
        r.num("leaked_tx_ok")
    );
}
