//! `poolguard demo --once` runs start to finish on a fresh sandbox and reports a bounded pool.

use poolguard_e2e::poolguard_bin;

#[test]
fn demo_once_exits_zero_and_reports_peak_within_pool() {
    let out = std::process::Command::new(poolguard_bin())
        .args(["demo", "--once", "--seconds", "3", "--clients", "20", "--port", "0"])
        .output()
        .expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("failed transactions:          0"), "{text}");
    let peak: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("peak server connections:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("peak line");
    assert!((1..=5).contains(&peak), "peak {peak} outside the pool of 5\n{text}");
}
