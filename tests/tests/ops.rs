//! What an operator or an orchestrator relies on: JSON logs, the build and process metrics,
//! the probes, and `run` refusing to front a superuser with the default password.

use std::process::Command;

use poolguard_e2e::admin::{http_get, metric};
use poolguard_e2e::*;

#[test]
fn json_logs_probes_and_process_metrics() {
    let pg = sandbox(20);
    let admin = free_port();
    let port = free_port();
    let spec = PoolSpec {
        limits: format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start_with_env(
        &config_for(&pg, port, &spec),
        port,
        &[("POOLGUARD_LOG_FORMAT", "json")],
    );
    let out = psql(proxy.port, "SELECT 1");
    assert!(out.status.success(), "{}", stderr(&out));
    let log = proxy.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("fields").is_some(),
            "{line}"
        );
    }
    assert_eq!(http_get(admin, "/healthz").trim(), "ok");
    assert_eq!(http_get(admin, "/readyz").trim(), "ready");
    let m = http_get(admin, "/metrics");
    assert_eq!(
        metric(&m, "poolguard_build_info", &["version=\""]),
        Some(1.0)
    );
    let fds = metric(&m, "process_open_fds", &[]).expect("process_open_fds");
    let max = metric(&m, "process_max_fds", &[]).expect("process_max_fds");
    assert!(fds >= 3.0 && max >= fds, "{fds} of {max}");
    assert!(metric(&m, "process_resident_memory_bytes", &[]).is_some_and(|b| b > 1e6));
}

#[test]
fn run_without_a_config_refuses_the_default_superuser_password() {
    for password in [None, Some("postgres")] {
        let mut cmd = Command::new(poolguard_bin());
        cmd.arg("run").env_remove("POOLGUARD_CONFIG");
        match password {
            Some(p) => cmd.env("POOLGUARD_PASSWORD", p),
            None => cmd.env_remove("POOLGUARD_PASSWORD"),
        };
        let out = cmd.output().expect("run poolguard");
        assert!(!out.status.success(), "{password:?}: it started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("poolguard init"), "{password:?}: {err}");
    }
    let init = Command::new(poolguard_bin())
        .arg("init")
        .output()
        .expect("poolguard init");
    assert!(init.status.success());
    assert!(String::from_utf8_lossy(&init.stdout).contains("[[backends]]"));
}
