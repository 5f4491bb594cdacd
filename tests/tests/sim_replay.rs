//! `poolguard replay` on both incidents through the real binary: the direct run fails (the
//! server refuses connections, the leak is never cut) and the run through poolguard stays
//! healthy (no failed request, every healthy request served, leaked transactions reclaimed).
//! Asserted on counts; the figures are printed.

use std::process::Command;

use poolguard_e2e::*;
use serde_json::Value;

fn replay(incident: &str, refused_code: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(poolguard_bin())
        .args([
            "replay",
            incident,
            "--duration",
            "8s",
            "--quiet",
            "--report",
        ])
        .arg(dir.path())
        .output()
        .expect("run poolguard replay");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    println!("{text}");
    assert!(text.contains("through poolguard") && text.contains("time to detect the leak"));
    let json = std::fs::read_to_string(dir.path().join(format!("replay-{incident}.json"))).unwrap();
    let v: Value = serde_json::from_str(&json).expect("replay json parses");
    let c = &v[0];
    let (d, g) = (&c["direct_figures"], &c["guarded_figures"]);
    let n = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"));

    // Direct: refused connections, most healthy requests failing, the leak never cut.
    assert!(n(&d["failed_requests"]) > 0, "{d}");
    assert!(n(&d["healthy_failed"]) > n(&d["healthy_ok"]), "{d}");
    assert!(
        n(&c["direct"]["error_codes"][refused_code]) > 0,
        "{}",
        c["direct"]["error_codes"]
    );
    assert!(d["leak_detected_s"].is_null(), "{d}");
    assert!(d["recovery_s"].is_null(), "direct never recovers: {d}");

    // Through poolguard: nothing failed, the leak was reclaimed, the server stayed below its max.
    assert_eq!(n(&g["failed_requests"]), 0, "{g}");
    assert_eq!(n(&g["healthy_failed"]), 0, "{g}");
    assert!(n(&g["healthy_ok"]) > n(&d["healthy_ok"]), "{g} vs {d}");
    assert!(g["leak_detected_s"].is_number(), "{g}");
    assert!(
        n(&g["peak_server_connections"]) < n(&g["max_connections"]),
        "{g}"
    );
    let spike = c["guarded"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "spike 5x")
        .unwrap();
    assert!(n(&spike["ok"]) > 0 && n(&spike["errors"]) == 0, "{spike}");
    let leak = c["guarded"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "leak-in-tx")
        .unwrap();
    assert_eq!(
        n(&leak["reclaimed"]),
        n(&leak["leaked"]),
        "every leaked transaction reclaimed: {leak}"
    );

    let html = std::fs::read_to_string(dir.path().join(format!("replay-{incident}.html"))).unwrap();
    assert_eq!(html.matches("<svg").count(), 6, "three charts per run");
}

#[test]
fn replay_bankfee_direct_fails_guarded_healthy() {
    replay("bankfee", "53300");
}

#[test]
fn replay_trademate_direct_fails_guarded_healthy() {
    replay("trademate", "1040");
}
