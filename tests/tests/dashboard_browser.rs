//! The dashboard in a real browser: headless Debian Chromium (through playwright-core, see
//! tests/clients/node/dashboard.js) loads poolguard's admin page, which must show the configured
//! pool with the numbers `/api/pools` reports; a client then holds a transaction past
//! `leak_threshold` with a known application_name, and the page must show it without a reload
//! (in the holders table and the events list); the screenshot must be a real PNG of the page.
//!
//! Skipped, with a message, only when Chromium is not installed and `POOLGUARD_REQUIRE_BROWSER`
//! is unset (`scripts/test` sets it, so CI fails instead). `POOLGUARD_SCREENSHOT=path` keeps
//! the screenshot there (README's `docs/dashboard.png`); otherwise it goes to a temp dir.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use poolguard_e2e::admin::*;
use poolguard_e2e::*;

mod scripted;
use scripted::Scripted;

const APP: &str = "fee-tool-browser";

/// Debian's Chromium, or `POOLGUARD_CHROMIUM`.
fn chromium() -> PathBuf {
    std::env::var_os("POOLGUARD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// dashboard.js, one JSON line per answer.
struct Browser(Scripted);

impl Browser {
    fn open(url: &str) -> Browser {
        let script = client_script("node/dashboard.js");
        Browser(Scripted::spawn(
            Command::new("node")
                .arg(&script)
                .arg(url)
                .arg(chromium())
                .current_dir(script.parent().unwrap()),
        ))
    }

    /// The script's next answer (bounded wait); its own errors fail the test.
    fn answer(&self) -> serde_json::Value {
        let line = self.0.line(
            Duration::from_secs(120),
            "is playwright-core installed? run scripts/setup or `npm ci` in tests/clients/node",
        );
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert_ne!(v["event"], "error", "dashboard.js: {}", v["message"]);
        v
    }

    fn command(&mut self, line: &str) -> serde_json::Value {
        self.0.send(line);
        self.answer()
    }
}

/// Width and height from a PNG's signature and IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn dashboard_shows_pools_and_a_live_leak() {
    if !chromium().exists() {
        assert!(
            std::env::var_os("POOLGUARD_REQUIRE_BROWSER").is_none(),
            "POOLGUARD_REQUIRE_BROWSER is set but {} is missing: install Debian's chromium (scripts/setup)",
            chromium().display()
        );
        eprintln!(
            "SKIPPED dashboard_shows_pools_and_a_live_leak: {} is not installed (apt-get install chromium, or scripts/setup); set POOLGUARD_REQUIRE_BROWSER=1 to make this a failure",
            chromium().display()
        );
        return;
    }
    let pg = sandbox(30);
    let admin = free_port();
    let spec = PoolSpec {
        pool_size: 3,
        limits: format!(
            "leak_threshold = \"2s\"\nidle_in_transaction_timeout = \"0s\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nusers = [\"{USER}\"]\n"
        ),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    // Pools exist from their first client on.
    let out = psql(proxy.port, "SELECT 1");
    assert!(out.status.success(), "{}", stderr(&out));
    // The server's own numbers come from the first poll.
    wait_for(Duration::from_secs(20), "server poll", || {
        metric(
            &http_get(admin, "/metrics"),
            "poolguard_server_max_connections",
            &["backend=\"pg\""],
        )
    });

    let mut browser = Browser::open(&format!("http://127.0.0.1:{admin}/"));
    let loaded = browser.answer();
    assert_eq!(loaded["event"], "loaded");
    let pools: serde_json::Value = serde_json::from_str(&http_get(admin, "/api/pools")).unwrap();
    let pool = &pools[0];
    assert_eq!(pool["name"], "bank/app", "{pools}");
    let servers: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/servers")).unwrap();
    let server = &servers[0];
    let text = loaded["text"].as_str().unwrap();
    for expected in [
        "bank/app".to_owned(),
        format!("{} / {} in use / cap", pool["in_use"], pool["cap"]),
        "backend pg".to_owned(),
        format!(
            "/ {} server connections / max_connections",
            server["server_max_connections"]
        ),
        format!("/ {}\npoolguard's (budget)", server["budget_limit"]),
    ] {
        assert!(text.contains(&expected), "page lacks {expected:?}:\n{text}");
    }

    // A leak: a known application holds a transaction past leak_threshold.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(async {
        let mut cfg: tokio_postgres::Config = proxy.conn_str().parse().unwrap();
        cfg.application_name(APP);
        let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("BEGIN; SELECT count(*) FROM pg_class")
            .await
            .unwrap();
        client
    });
    wait_for(Duration::from_secs(20), "leak event", || {
        http_get(admin, "/api/events")
            .contains("\"kind\":\"leak\"")
            .then_some(())
    });
    // The page picks it up on its own: same document, no reload.
    let found = browser.command(&format!("wait-text LEAK {APP}"));
    assert_eq!(found["same_document"], true, "{found}");
    let text = found["text"].as_str().unwrap();
    assert!(text.contains("idle in transaction"), "{text}");

    let keep = std::env::var_os("POOLGUARD_SCREENSHOT").map(PathBuf::from);
    let dir = tempfile::tempdir().unwrap();
    let path = keep
        .clone()
        .map(|p| {
            if p.is_relative() {
                repo_root().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| dir.path().join("dashboard.png"));
    let shot = browser.command(&format!("screenshot {}", path.display()));
    let bytes = std::fs::read(&path).expect("screenshot written");
    let (w, h) = png_size(&bytes);
    assert_eq!(
        (shot["width"].as_u64(), shot["height"].as_u64()),
        (Some(u64::from(w)), Some(u64::from(h))),
        "the browser decodes the PNG it wrote"
    );
    assert!(w >= 1000 && h >= 600, "{w}x{h}");
    assert!(bytes.len() > 20_000, "{} bytes", bytes.len());
    assert!(
        shot["colors"].as_u64().unwrap() >= 16,
        "a uniform image is no dashboard: {shot}"
    );

    rt.block_on(async {
        client.batch_execute("COMMIT").await.unwrap();
    });
    drop(browser);
}
