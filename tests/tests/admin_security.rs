//! The admin surface lets no one in: tokens with two roles, Host and Origin checks, probes
//! without a token, statement literals redacted, and the console's stats_users. Against the real
//! binary and a real PostgreSQL; every request is plain HTTP/1.1 on loopback.

use poolguard_e2e::admin::*;
use poolguard_e2e::*;

const READ_TOKEN: &str = "test-read-token-abcdefghijkl";

fn start(pg: &PgSandbox, admin: u16, env: &[(&str, &str)]) -> Proxy {
    let port = free_port();
    let spec = PoolSpec {
        pool_size: 2,
        limits: format!(
            "\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nusers = [\"{USER}\"]\nstats_users = [\"stats\"]\n\n[[users]]\nname = \"stats\"\npassword = \"stats-secret\"\n"
        ),
        ..PoolSpec::default()
    };
    Proxy::start_with_env(&config_for(pg, port, &spec), port, env)
}

fn status(admin: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    http_request_with(admin, method, path, headers).0
}

#[test]
fn tokens_roles_host_and_origin() {
    let pg = sandbox(20);
    let admin = free_port();
    let _proxy = start(
        &pg,
        admin,
        &[
            ("POOLGUARD_ADMIN_TOKEN", ADMIN_TOKEN),
            ("POOLGUARD_READ_TOKEN", READ_TOKEN),
        ],
    );
    let read = format!("Bearer {READ_TOKEN}");
    let adm = format!("Bearer {ADMIN_TOKEN}");
    let with = |v: &str| [("Authorization", v.to_owned())];
    let h = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    let call = |method: &str, path: &str, headers: Vec<(String, String)>| {
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        status(admin, method, path, &refs)
    };
    // Probes and the static page need nothing.
    for path in ["/healthz", "/readyz", "/"] {
        assert_eq!(call("GET", path, vec![]), 200, "{path}");
    }
    // Reading needs a token; either role reads.
    assert_eq!(call("GET", "/metrics", vec![]), 401);
    assert_eq!(
        call(
            "GET",
            "/api/pools",
            h(&with("Bearer wrong-token-0000000000"))
        ),
        401
    );
    assert_eq!(call("GET", "/metrics", h(&with(&read))), 200);
    assert_eq!(call("GET", "/api/leases", h(&with(&adm))), 200);
    // Changing state needs the admin token.
    assert_eq!(call("POST", "/api/reload", vec![]), 401);
    assert_eq!(call("POST", "/api/reload", h(&with(&read))), 401);
    assert_eq!(call("POST", "/api/reload", h(&with(&adm))), 200);
    // Another site's page cannot use a visitor's browser (CSRF), even with a token.
    let mut csrf = h(&with(&adm));
    csrf.push(("Origin".into(), "http://evil.example".into()));
    assert_eq!(call("POST", "/api/reload", csrf), 403);
    let mut same = h(&with(&adm));
    same.push(("Origin".into(), format!("http://127.0.0.1:{admin}")));
    same.push(("Host".into(), format!("127.0.0.1:{admin}")));
    assert_eq!(call("POST", "/api/reload", same), 200);
    // DNS rebinding: a foreign name for this address is refused.
    let mut rebinding = h(&with(&read));
    rebinding.push(("Host".into(), format!("evil.example:{admin}")));
    assert_eq!(call("GET", "/metrics", rebinding), 421);
}

#[test]
fn without_tokens_nothing_changes_state_and_statements_are_redacted() {
    let pg = sandbox(20);
    let admin = free_port();
    let proxy = start(&pg, admin, &[]);
    // Reading stays open on loopback (the host's own users); changing state is refused.
    assert_eq!(status(admin, "GET", "/api/pools", &[]), 200);
    let (code, body) = http_post(admin, "/api/reload");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no admin token"), "{body}");

    // A client holds a transaction whose last statement carries secret literals.
    let mut held = std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-At",
            "-h",
            "127.0.0.1",
            "-U",
            USER,
            "-d",
            DB,
            "-p",
        ])
        .arg(proxy.port.to_string())
        .arg("-c")
        .arg("BEGIN; SELECT 'hunter2-secret', 4111111111111111; SELECT pg_sleep(120)")
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    let leases = wait_for(std::time::Duration::from_secs(30), "a lease", || {
        let body = http_get(admin, "/api/leases");
        body.contains("pg_sleep").then_some(body)
    });
    let _ = held.kill();
    let _ = held.wait();
    assert!(
        !leases.contains("hunter2") && !leases.contains("4111111111111111"),
        "a literal reached /api/leases: {leases}"
    );
    assert!(leases.contains("pg_sleep(?)"), "{leases}");
}

#[test]
fn stats_users_read_the_console_but_change_nothing() {
    let pg = sandbox(20);
    let admin = free_port();
    let proxy = start(&pg, admin, &[]);
    let console = |user: &str, password: &str, sql: &str| {
        let mut cmd = std::process::Command::new("psql");
        cmd.args([
            "-X",
            "-q",
            "-At",
            "-h",
            "127.0.0.1",
            "-U",
            user,
            "-d",
            "pgbouncer",
            "-p",
        ])
        .arg(proxy.port.to_string())
        .arg("-c")
        .arg(sql)
        .env("PGPASSWORD", password);
        cmd.output().expect("psql")
    };
    let show = console("stats", "stats-secret", "SHOW POOLS");
    assert!(show.status.success(), "{}", stderr(&show));
    let pause = console("stats", "stats-secret", "PAUSE");
    assert!(!pause.status.success());
    assert!(
        stderr(&pause).contains("admin access needed"),
        "{}",
        stderr(&pause)
    );
    let used = psql(proxy.port, "SELECT 1");
    assert!(used.status.success(), "{}", stderr(&used));
    let discards = console(USER, PASSWORD, "SHOW DISCARDS");
    assert!(discards.status.success(), "{}", stderr(&discards));
    for reason in [
        "dropped",
        "panicked",
        "unproven",
        "broken",
        "unfinished",
        "cleanup_failed",
    ] {
        assert!(
            stdout(&discards).contains(&format!("bank/app|postgres|{reason}|0")),
            "{}",
            stdout(&discards)
        );
    }
}

/// `curl` against the admin listener: the HTTP status, or `Err(curl's exit code)` when no HTTP
/// answer came (a TLS failure, a refused plaintext request).
fn curl(url: &str, args: &[&str]) -> Result<u16, i32> {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    match out.status.code() {
        Some(0) => Ok(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()),
        code => Err(code.unwrap_or(-1)),
    }
}

#[test]
fn the_admin_listener_speaks_https_only_when_configured() {
    let pg = sandbox(20);
    let pki = tls::Pki::new();
    let other = tls::Pki::new();
    let admin = free_port();
    let port = free_port();
    let spec = PoolSpec {
        pool_size: 2,
        limits: format!(
            "\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            pki.file("server.crt"),
            pki.file("server.key")
        ),
        ..PoolSpec::default()
    };
    let _proxy = Proxy::start_with_env(
        &config_for(&pg, port, &spec),
        port,
        &[("POOLGUARD_READ_TOKEN", READ_TOKEN)],
    );
    let https = |path: &str| format!("https://localhost:{admin}{path}");
    let ca = pki.file("ca.crt");
    let bearer = format!("Authorization: Bearer {READ_TOKEN}");
    assert_eq!(curl(&https("/healthz"), &["--cacert", &ca]), Ok(200));
    assert_eq!(curl(&https("/metrics"), &["--cacert", &ca]), Ok(401));
    assert_eq!(
        curl(&https("/metrics"), &["--cacert", &ca, "-H", &bearer]),
        Ok(200)
    );
    // Another CA's client does not trust poolguard's certificate (curl: 60).
    assert_eq!(
        curl(&https("/healthz"), &["--cacert", &other.file("ca.crt")]),
        Err(60)
    );
    // Plain HTTP on the same port gets no answer.
    assert!(curl(&format!("http://127.0.0.1:{admin}/healthz"), &[]).is_err());
}

#[test]
fn the_admin_listener_can_require_client_certificates() {
    let pg = sandbox(20);
    let pki = tls::Pki::new();
    let admin = free_port();
    let port = free_port();
    let spec = PoolSpec {
        pool_size: 2,
        limits: format!(
            "\n[admin]\nlisten = \"127.0.0.1:{admin}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntls_client_ca_file = \"{}\"\n",
            pki.file("server.crt"),
            pki.file("server.key"),
            pki.file("ca.crt")
        ),
        ..PoolSpec::default()
    };
    let _proxy = Proxy::start_with(&config_for(&pg, port, &spec), port);
    let url = format!("https://localhost:{admin}/healthz");
    let ca = pki.file("ca.crt");
    assert_eq!(
        curl(
            &url,
            &[
                "--cacert",
                &ca,
                "--cert",
                &pki.file("client.crt"),
                "--key",
                &pki.file("client.key")
            ]
        ),
        Ok(200)
    );
    assert!(curl(&url, &["--cacert", &ca]).is_err());
}
