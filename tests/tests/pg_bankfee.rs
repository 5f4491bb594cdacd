//! The bank-fee incident, replayed with the real node-postgres pg-pool: a service checks clients
//! out and never releases them, some in the middle of a transaction, while healthy requests keep
//! arriving. Directly against a small PostgreSQL the server runs out of connections and the
//! healthy requests fail; through poolguard the server never sees more than the pool size, the
//! healthy requests are served, and the leaked transactions are rolled back by
//! `idle_in_transaction_timeout`, never committed.
//!
//! The healthy loop opens a fresh connection per request (a new instance, a cron job, the next
//! request of a service whose pool is already drained), so a connection it happens to keep cannot
//! hide the exhaustion. Two smaller tests pin what `idle_in_transaction_timeout` must not count:
//! a long statement, and time spent waiting for a server.
//!
//! Assertions are on counts and states only; the figures of both runs are printed.

use std::process::{Command, Output};
use std::time::Duration;

use poolguard_e2e::*;

/// The server: 12 connections, 3 reserved for superusers, so 9 for `app`.
const MAX_CONNECTIONS: u32 = 12;
const LEAK_IDLE: u32 = 6;
const LEAK_IN_TX: u32 = 6;
const HEALTHY_SECONDS: u32 = 8;

/// bankfee.js's one-line JSON report. Its figures are integers at the top level or in flat
/// maps of integers (`errors`, `leaked_kicked`), so finding `"key":` is enough; the e2e package
/// has no JSON crate.
#[derive(Debug)]
struct Report {
    raw: String,
}

impl Report {
    /// A top-level integer.
    fn num(&self, key: &str) -> u64 {
        number_after(&self.raw, key).unwrap_or_else(|| panic!("no number {key} in {}", self.raw))
    }

    /// The text of a flat object member, `{...}` included.
    fn map(&self, key: &str) -> &str {
        let pat = format!("\"{key}\":{{");
        let Some(start) = self.raw.find(&pat) else {
            return "{}";
        };
        let obj = &self.raw[start + pat.len() - 1..];
        // The count maps hold no strings with braces: the first '}' closes them.
        obj.find('}').map(|end| &obj[..=end]).unwrap_or("{}")
    }

    /// An integer in a flat map (0 when absent).
    fn map_count(&self, key: &str, entry: &str) -> u64 {
        number_after(self.map(key), entry).unwrap_or(0)
    }
}

/// The integer following `"key":` in `json`.
fn number_after(json: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let rest = &json[json.find(&pat)? + pat.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn run_bankfee(url: &str) -> (Report, Output) {
    let out = run_within(
        Command::new("node")
            .arg(client_script("node/bankfee.js"))
            .arg(url)
            .args(["--leak-idle", &LEAK_IDLE.to_string()])
            .args(["--leak-in-tx", &LEAK_IN_TX.to_string()])
            .args(["--healthy-seconds", &HEALTHY_SECONDS.to_string()])
            .arg("--late-commit")
            .current_dir(client_script("node")),
        Duration::from_secs(u64::from(HEALTHY_SECONDS) + 90),
    );
    let line = stdout(&out);
    let line = line.lines().last().unwrap_or_default().to_string();
    assert!(
        out.status.success(),
        "bankfee.js failed ({}):\n{line}\n{}",
        out.status,
        stderr(&out)
    );
    (Report { raw: line }, out)
}

fn ledger_count(pg: &PgSandbox, kind: &str) -> u64 {
    pg.psql(
        DB,
        &format!("SELECT count(*) FROM bankfee_ledger WHERE kind = '{kind}'"),
    )
    .expect("count ledger rows")
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

#[test]
fn bankfee_leak_direct_exhausts_the_server() {
    let pg = sandbox(MAX_CONNECTIONS);
    let sampler = PeakSampler::start(&pg);
    let (r, _) = run_bankfee(&pg.url(USER, PASSWORD, DB));
    let (peak, _) = sampler.finish();
    let (ok, failed) = (r.num("healthy_ok"), r.num("healthy_failed"));
    eprintln!(
        "bank-fee replay DIRECT (max_connections {MAX_CONNECTIONS}, leaks {LEAK_IDLE} idle + {LEAK_IN_TX} in transaction): \
         healthy {ok} ok / {failed} failed = {:.1}% success; peak app connections {peak}; \
         leaked idle ok {} failed {}; leaked in-tx ok {} failed {}; late COMMITs that went through {}; errors {}\n{}",
        percent(ok, failed),
        r.num("leaked_idle_ok"),
        r.num("leaked_idle_failed"),
        r.num("leaked_tx_ok"),
        r.num("leaked_tx_failed"),
        r.num("late_commit_ok"),
        r.map("errors"),
        r.raw,
    );

    // The leaks took the slots the server has for non-superusers; the rest were refused.
    let usable = u64::from(MAX_CONNECTIONS) - 3;
    let leaked = r.num("leaked_idle_ok") + r.num("leaked_tx_ok");
    assert!(leaked <= usable, "{}", r.raw);
    assert!(
        leaked < u64::from(LEAK_IDLE + LEAK_IN_TX),
        "every leak got a connection: {}",
        r.raw
    );
    assert!(
        r.num("leaked_idle_failed") + r.num("leaked_tx_failed") > 0,
        "{}",
        r.raw
    );
    // Healthy traffic is down, refused by the server itself.
    assert!(
        failed > ok,
        "healthy requests were not mostly failing: {}",
        r.raw
    );
    assert!(
        r.map_count("errors", "53300") > 0,
        "no 53300 too_many_connections among the errors: {}",
        r.raw
    );
    assert!(
        r.raw.contains("too many clients") || r.raw.contains("slots are reserved"),
        "no 'too many clients' message: {}",
        r.raw
    );
    // Nothing reclaimed the leaked transactions: they stayed open, and the late COMMIT landed.
    assert_eq!(r.map("leaked_kicked"), "{}", "{}", r.raw);
    assert_eq!(r.num("late_commit_ok"), r.num("leaked_tx_ok"), "{}", r.raw);
    assert_eq!(ledger_count(&pg, "leaked-tx"), r.num("leaked_tx_ok"));
    assert_eq!(ledger_count(&pg, "healthy"), ok);
    assert!(peak <= usable, "peak {peak} above the server's limit?");
}

#[test]
fn bankfee_leak_through_poolguard_is_contained() {
    let pg = sandbox(MAX_CONNECTIONS);
    let spec = PoolSpec {
        mode: "transaction",
        pool_size: 5,
        budget: 8,
        limits: "idle_in_transaction_timeout = \"2s\"\nacquire_timeout = \"3s\"".into(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let sampler = PeakSampler::start(&pg);
    let (r, _) = run_bankfee(&proxy.url());
    let (peak, samples) = sampler.finish();
    let (ok, failed) = (r.num("healthy_ok"), r.num("healthy_failed"));
    eprintln!(
        "bank-fee replay THROUGH POOLGUARD (max_connections {MAX_CONNECTIONS}, pool_size 5, budget 8, idle_in_transaction_timeout 2s, acquire_timeout 3s; \
         leaks {LEAK_IDLE} idle + {LEAK_IN_TX} in transaction): healthy {ok} ok / {failed} failed = {:.1}% success; \
         peak app connections {peak} ({samples} samples); leaked idle ok {} failed {}; leaked in-tx ok {} failed {}; \
         leaked clients told {}; late COMMITs that went through {}; errors {}\n{}",
        percent(ok, failed),
        r.num("leaked_idle_ok"),
        r.num("leaked_idle_failed"),
        r.num("leaked_tx_ok"),
        r.num("leaked_tx_failed"),
        r.map("leaked_kicked"),
        r.num("late_commit_ok"),
        r.map("errors"),
        r.raw,
    );

    // Bounded: the server never saw more than the pool.
    assert!(samples > 0);
    assert!(peak > 0, "the server never saw poolguard");
    assert!(
        peak <= spec.pool_size as u64,
        "the server saw {peak} app connections; pool_size is {}",
        spec.pool_size
    );
    // Contained: the healthy traffic was served.
    assert!(ok > 0, "no healthy request succeeded: {}", r.raw);
    assert!(
        ok * 100 >= (ok + failed) * 80,
        "healthy success rate {:.1}% below 80%: {}",
        percent(ok, failed),
        r.raw
    );
    // Idle leaked clients hold no server connection in transaction mode: all of them got in.
    assert_eq!(r.num("leaked_idle_ok"), u64::from(LEAK_IDLE), "{}", r.raw);
    assert!(
        r.num("leaked_tx_ok") > 0,
        "no leaked transaction started: {}",
        r.raw
    );
    // Every leaked transaction was reclaimed and its client told why (25P03) ...
    assert_eq!(
        r.map_count("leaked_kicked", "25P03"),
        r.num("leaked_tx_ok"),
        "each leaked transaction should be reclaimed once with 25P03, and only leaked ones \
         (an extra 25P03 with a failed leak is a client kicked right after waiting for a server: \
         see waiting_for_a_server_is_not_idle_time): {}",
        r.raw
    );
    // ... so the late COMMIT found nothing to commit, and the leaked writes are not there.
    assert_eq!(r.num("late_commit_ok"), 0, "{}", r.raw);
    assert_eq!(
        ledger_count(&pg, "leaked-tx"),
        0,
        "leaked writes were committed"
    );
    assert_eq!(ledger_count(&pg, "healthy"), ok);
    // Explained: poolguard's log says what it did.
    let log = proxy.log();
    assert!(
        log.contains("idle_in_transaction_timeout"),
        "log does not mention idle_in_transaction_timeout:\n{log}"
    );
    assert!(
        log.contains("rolled back"),
        "log does not mention the rollback"
    );
}

/// psql through the proxy with each `-c` sent as its own query, in order.
fn psql_steps(port: u16, steps: &[&str]) -> Output {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
    ])
    .args(["-U", USER, "-d", DB, "-p", &port.to_string()]);
    for s in steps {
        cmd.args(["-c", s]);
    }
    cmd.env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "20");
    run_within(&mut cmd, Duration::from_secs(60))
}

/// idle_in_transaction_timeout is about a transaction left idle, not a busy one: a statement that
/// runs longer than the timeout, followed by a short client pause, must not get the client
/// reclaimed (PostgreSQL's own idle_in_transaction_session_timeout counts from when the session
/// went idle).
#[test]
fn a_long_statement_in_a_transaction_is_not_idle_time() {
    let pg = sandbox(30);
    let spec = PoolSpec {
        limits: "idle_in_transaction_timeout = \"2s\"".into(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let out = psql_steps(
        proxy.port,
        &[
            "CREATE TABLE IF NOT EXISTS busy_tx (x int)",
            "BEGIN",
            "INSERT INTO busy_tx VALUES (1)",
            "SELECT pg_sleep(3)",
            // Idle in the transaction, well under the timeout.
            "\\! sleep 0.5",
            "SELECT 'alive'",
            "COMMIT",
        ],
    );
    assert!(
        out.status.success(),
        "the busy transaction was reclaimed as idle ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("alive"), "{}", stdout(&out));
    assert_eq!(pg.psql(DB, "SELECT count(*) FROM busy_tx").unwrap(), "1");
}

/// The same for a transaction that waited for a server: time spent queued for the pool is not
/// time idle in a transaction. Client A keeps the only server busy (never idle) for longer than
/// the timeout; client B's BEGIN waits for it, then B pauses briefly and commits.
#[test]
fn waiting_for_a_server_is_not_idle_time() {
    let pg = sandbox(30);
    let spec = PoolSpec {
        pool_size: 1,
        budget: 2,
        limits: "idle_in_transaction_timeout = \"2s\"\nacquire_timeout = \"20s\"".into(),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    let port = proxy.port;
    let a = std::thread::spawn(move || {
        psql_steps(
            port,
            &[
                "BEGIN",
                "SELECT pg_sleep(1)",
                "SELECT pg_sleep(1)",
                "SELECT pg_sleep(1)",
                "SELECT 'a done'",
                "COMMIT",
            ],
        )
    });
    // Let A take the server first (if B wins instead, nothing waits and the test proves less).
    std::thread::sleep(Duration::from_millis(300));
    let b = psql_steps(
        port,
        &["BEGIN", "\\! sleep 0.5", "SELECT 'b alive'", "COMMIT"],
    );
    let a = a.join().expect("client A");
    assert!(
        a.status.success(),
        "client A failed ({}): {}",
        a.status,
        stderr(&a)
    );
    assert!(
        b.status.success(),
        "client B, which waited for the server, was reclaimed as idle ({}):\n{}\n{}",
        b.status,
        stdout(&b),
        stderr(&b)
    );
    assert!(stdout(&b).contains("b alive"), "{}", stdout(&b));
}
