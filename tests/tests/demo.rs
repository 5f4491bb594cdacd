//! `poolguard demo --once` runs start to finish on fresh sandboxes: both incident replays, direct
//! failing and through poolguard healthy, and the report written.

use poolguard_e2e::poolguard_bin;

/// The "failed requests" row of a side-by-side table: (direct, through poolguard).
fn failed(table: &str) -> (u64, u64) {
    let row = table
        .lines()
        .find_map(|l| l.strip_prefix("failed requests"))
        .expect("failed requests row");
    let v: Vec<u64> = row
        .split_whitespace()
        .map(|x| x.parse().expect("count"))
        .collect();
    (v[0], v[1])
}

#[test]
fn demo_once_replays_both_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(poolguard_bin())
        .args([
            "demo",
            "--once",
            "--seconds",
            "6",
            "--port",
            "0",
            "--admin-port",
            "0",
            "--report",
        ])
        .arg(dir.path())
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for incident in ["bankfee", "trademate"] {
        let table = text
            .split(&format!("== {incident} replay"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {incident} table\n{text}"));
        let (direct, guarded) = failed(table);
        assert!(direct > 0, "{incident}: the direct run should fail\n{text}");
        assert_eq!(
            guarded, 0,
            "{incident}: through poolguard nothing should fail\n{text}"
        );
    }
    assert!(text.contains("replay report:"), "{text}");
    assert!(text.contains("dashboard:"), "{text}");
    // The proxy's log went to its own file, named in the report, not through the terminal.
    assert!(text.contains("poolguard's log:"), "{text}");
    let log = std::fs::read_to_string(dir.path().join("demo-poolguard.log")).expect("the log");
    assert!(log.contains("PostgreSQL front door open"), "{log}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("front door open"),
        "the proxy's log reached the terminal: {stderr}"
    );
    let html = std::fs::read_to_string(dir.path().join("replay.html")).expect("replay.html");
    assert!(html.contains("bankfee replay") && html.contains("trademate replay"));
}
