//! `poolguard spike` through the real binary against sandbox servers: the generator's counts
//! match what the server committed, the spike's shape and the leakers are honoured (the server
//! sees them), and the JSON and HTML reports are produced and well-formed.
//!
//! Assertions are on counts only, never on latencies.

use std::path::Path;
use std::process::Command;

use poolguard_e2e::mysql::mariadb;
use poolguard_e2e::*;
use serde_json::Value;

/// Runs `poolguard spike ARGS --report DIR --quiet`, returns the parsed spike.json.
fn spike(args: &[&str], dir: &Path) -> Value {
    let out = Command::new(poolguard_bin())
        .arg("spike")
        .args(args)
        .arg("--report")
        .arg(dir)
        .arg("--quiet")
        .output()
        .expect("run poolguard spike");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    println!("{text}");
    assert!(text.contains("p99 ms"), "summary table: {text}");
    let json = std::fs::read_to_string(dir.join("spike.json")).expect("spike.json");
    serde_json::from_str(&json).expect("spike.json parses")
}

fn group<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["groups"]
        .as_array()
        .and_then(|g| {
            g.iter()
                .find(|g| g["name"].as_str().is_some_and(|n| n.starts_with(name)))
        })
        .unwrap_or_else(|| panic!("no group {name} in {r}"))
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

fn max_server(r: &Value, key: &str) -> u64 {
    r["server"]
        .as_array()
        .expect("server samples")
        .iter()
        .map(|s| n(&s[key]))
        .max()
        .unwrap_or(0)
}

#[test]
fn pg_write_counts_spike_shape_leakers_and_report() {
    let pg = sandbox(40);
    let dir = tempfile::tempdir().unwrap();
    let (su, su_pw) = pg.superuser();
    let r = spike(
        &[
            &pg.url(USER, PASSWORD, DB),
            "--server-url",
            &pg.url(su, su_pw, DB),
            "--workload",
            "write",
            "--concurrency",
            "4",
            "--spike",
            "3x@2s+2s",
            "--leak-idle",
            "2",
            "--leak-in-tx",
            "3",
            "--duration",
            "6s",
        ],
        dir.path(),
    );
    // Every reported success is a row the server committed, and no more.
    let ok = n(&r["ok"]);
    assert!(ok > 0);
    assert_eq!(n(&r["server_rows"]), ok, "reported vs server rows");
    let run = r["run_id"].as_str().unwrap();
    let rows = pg
        .psql(
            DB,
            &format!("SELECT count(*) FROM poolguard_sim WHERE run = '{run}'"),
        )
        .unwrap();
    assert_eq!(
        rows.trim().parse::<u64>().unwrap(),
        ok,
        "rows counted with psql"
    );
    assert_eq!(n(&r["errors"]), 0, "{r}");
    // The leaked transactions were never committed.
    let leaked = pg
        .psql(
            DB,
            &format!("SELECT count(*) FROM poolguard_sim WHERE run = '{run}-leak'"),
        )
        .unwrap();
    assert_eq!(leaked.trim(), "0");

    // Spike shape: 8 extra workers, active in seconds 2 and 3 only; the base in every second.
    let spike = group(&r, "spike1");
    assert_eq!(n(&spike["workers"]), 8);
    let timeline = r["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 6);
    for (t, s) in timeline.iter().enumerate() {
        let (base, spiked) = (n(&s["group_ok"][0]), n(&s["group_ok"][1]));
        assert!(base > 0, "base idle in second {t}");
        assert_eq!(
            spiked > 0,
            (2..4).contains(&t),
            "spike in second {t}: {spiked}"
        );
    }
    assert_eq!(
        timeline.iter().map(|s| n(&s["ok"])).sum::<u64>(),
        ok,
        "timeline and totals agree"
    );

    // Leakers: all held, and the server saw them (3 transactions idle > 1 s; 4 + 8 + 5 clients).
    assert_eq!(n(&group(&r, "leak-idle")["leaked"]), 2);
    assert_eq!(n(&group(&r, "leak-in-tx")["leaked"]), 3);
    assert_eq!(max_server(&r, "idle_in_tx"), 3, "{}", r["server"]);
    let peak = n(&r["peak_server_connections"]);
    assert!(
        (17..=18).contains(&peak),
        "peak {peak}: 4 base + 8 spike + 5 leakers"
    );
    assert_eq!(n(&r["max_connections"]), 40);

    // The HTML report is self-contained, with its three charts.
    let html = std::fs::read_to_string(dir.path().join("spike.html")).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert_eq!(html.matches("<svg").count(), 3, "three charts");
    assert!(html.contains("<polyline") && html.contains("max_connections 40"));
    assert!(!html.contains("<script") && !html.contains(PASSWORD));
}

#[test]
fn pg_rate_mode_spike_multiplies_the_rate() {
    let pg = sandbox(30);
    let dir = tempfile::tempdir().unwrap();
    // 40 requests/s (1 paced worker), 4x from 2 s to 4 s: 3 more workers at 40/s each.
    let r = spike(
        &[
            &pg.url(USER, PASSWORD, DB),
            "--workload",
            "read",
            "--rate",
            "40",
            "--spike",
            "4x@2s+2s",
            "--duration",
            "6s",
        ],
        dir.path(),
    );
    let base = n(&group(&r, "base")["ok"]);
    let spiked = n(&group(&r, "spike1")["ok"]);
    assert!(
        (200..=245).contains(&base),
        "base: 40/s for 6 s, got {base}"
    );
    assert!(
        (200..=245).contains(&spiked),
        "spike: 120/s for 2 s, got {spiked}"
    );
    assert_eq!(n(&group(&r, "spike1")["workers"]), 3);
}

#[test]
fn mysql_counts_and_leakers() {
    let db = mariadb(40);
    let dir = tempfile::tempdir().unwrap();
    let (root, root_pw) = db.root();
    let r = spike(
        &[
            &db.url(USER, PASSWORD, DB),
            "--server-url",
            &db.url(root, root_pw, DB),
            "--workload",
            "mixed",
            "--concurrency",
            "3",
            "--leak-in-tx",
            "2",
            "--leak-idle",
            "1",
            "--duration",
            "4s",
        ],
        dir.path(),
    );
    let ok = n(&r["ok"]);
    assert!(ok > 0);
    assert_eq!(n(&r["errors"]), 0, "{r}");
    assert_eq!(n(&r["server_rows"]), ok);
    let run = r["run_id"].as_str().unwrap();
    let rows = db
        .sql(
            DB,
            &format!("SELECT count(*) FROM poolguard_sim WHERE run = '{run}'"),
        )
        .unwrap();
    assert_eq!(rows.trim().parse::<u64>().unwrap(), ok);
    assert_eq!(n(&group(&r, "leak-in-tx")["leaked"]), 2);
    assert_eq!(max_server(&r, "idle_in_tx"), 2, "{}", r["server"]);
    assert_eq!(n(&r["peak_server_connections"]), 6, "3 workers + 3 leakers");
}
