//! TLS between clients and poolguard's MySQL door, with real clients (the mariadb CLI, PyMySQL,
//! node mysql2) verifying poolguard's certificate against a CA made by `openssl` for the test;
//! `client_tls = "require"` refusing a plaintext client with 3159; client certificates.

use std::time::Duration;

use poolguard_e2e::mysql::*;
use poolguard_e2e::tls::Pki;
use poolguard_e2e::*;

fn verified(pki: &Pki) -> Vec<String> {
    vec![
        "--ssl".into(),
        "--ssl-verify-server-cert".into(),
        format!("--ssl-ca={}", pki.file("ca.crt")),
    ]
}

fn proxy_with(db: &MariaDbSandbox, front: String) -> Proxy {
    start_mysql_proxy(
        db,
        &MyPoolSpec {
            front,
            ..Default::default()
        },
    )
}

#[test]
fn mysql_clients_over_tls_and_require() {
    let pki = Pki::new();
    let db = mariadb(20);
    let proxy = proxy_with(&db, pki.front("require"));
    let port = proxy.port;

    // The CLI's `status` reports the cipher of its own connection (to poolguard).
    let out = mariadb_cli_with(port, &verified(&pki), "status; SELECT 40 + 2");
    let text = stdout(&out);
    assert!(out.status.success(), "mariadb over TLS: {}", stderr(&out));
    assert!(
        text.contains("Cipher in use is TLS_"),
        "no TLS in the CLI's status:\n{text}"
    );
    assert!(text.ends_with("42"), "{text}");

    let out = python(
        "mysql_tls_pymysql.py",
        &[port.to_string(), pki.file("ca.crt")],
        Duration::from_secs(60),
    );
    assert_eq!(stdout(&out), "tls=TLSv1.3 value=42", "{}", stderr(&out));
    let out = node(
        "mysql_tls.js",
        &[port.to_string(), pki.file("ca.crt")],
        Duration::from_secs(60),
    );
    assert_eq!(stdout(&out), "tls=TLSv1.3 value=42", "{}", stderr(&out));

    // A client that does not ask for TLS gets what require_secure_transport gives.
    let out = mariadb_cli_with(port, &["--skip-ssl".into()], "SELECT 1");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("ERROR 3159"), "{err}");
    assert!(err.contains("insecure transport"), "{err}");
}

#[test]
fn mysql_disabled_door_does_not_offer_tls() {
    let pki = Pki::new();
    let db = mariadb(20);
    let proxy = start_mysql_proxy(&db, &MyPoolSpec::default());
    // Plaintext works as before; a client insisting on TLS is told the server has none.
    let out = mariadb_cli(proxy.port, "SELECT 40 + 2");
    assert_eq!(stdout(&out), "42", "{}", stderr(&out));
    let out = mariadb_cli_with(proxy.port, &verified(&pki), "SELECT 1");
    assert!(
        !out.status.success(),
        "TLS was negotiated on a disabled door"
    );
    assert!(stderr(&out).contains("SSL"), "{}", stderr(&out));
}

#[test]
fn mysql_client_certificates_are_verified() {
    let pki = Pki::new();
    let db = mariadb(20);
    let proxy = proxy_with(&db, pki.front_verifying_clients());
    let mut with_cert = verified(&pki);
    with_cert.push(format!("--ssl-cert={}", pki.file("client.crt")));
    with_cert.push(format!("--ssl-key={}", pki.file("client.key")));
    let out = mariadb_cli_with(proxy.port, &with_cert, "SELECT 40 + 2");
    assert_eq!(stdout(&out), "42", "{}", stderr(&out));
    let out = mariadb_cli_with(proxy.port, &verified(&pki), "SELECT 1");
    assert!(
        !out.status.success(),
        "a client without a certificate got in"
    );
}
