//! The shipped monitoring files stay true to the binary: `deploy/prometheus-alerts.yml` passes
//! `promtool check rules` and its unit tests (`promtool test rules`), and every poolguard metric
//! named by an alert rule or by `deploy/grafana-dashboard.json` (valid JSON) is one a running
//! poolguard really exports.

use std::collections::BTreeSet;
use std::process::Command;

use poolguard_e2e::admin::http_get;
use poolguard_e2e::*;

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo_root().join("deploy"))
        .output()
        .expect("promtool (Debian package prometheus, installed by scripts/setup)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Every `poolguard_...` name in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("poolguard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn alert_rules_and_dashboard_use_only_exported_metrics() {
    promtool(&["check", "rules", "prometheus-alerts.yml"]);
    promtool(&["test", "rules", "prometheus-alerts.test.yml"]);

    let pg = sandbox(20);
    let admin = free_port();
    let proxy = Proxy::start(&pg, &PoolSpec::with_admin(admin));
    let out = psql(proxy.port, "SELECT 1");
    assert!(out.status.success(), "{}", stderr(&out));
    let exposition = http_get(admin, "/metrics");
    let mut exported = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            exported.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }

    let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus-alerts.yml")).unwrap();
    let rule_exprs: String = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect::<Vec<_>>()
        .join("\n");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("deploy/grafana-dashboard.json")).unwrap(),
    )
    .expect("the Grafana dashboard is valid JSON");
    let mut dashboard_exprs = String::new();
    fn collect(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr" {
                        out.push_str(v.as_str().unwrap_or_default());
                        out.push('\n');
                    } else {
                        collect(v, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut dashboard_exprs);
    assert!(!dashboard_exprs.is_empty(), "the dashboard has queries");
    for (what, exprs) in [("alert rules", rule_exprs), ("dashboard", dashboard_exprs)] {
        let used = metric_names(&exprs);
        assert!(!used.is_empty(), "{what}: no metric found");
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{what} use metrics poolguard does not export: {missing:?}"
        );
    }
}
