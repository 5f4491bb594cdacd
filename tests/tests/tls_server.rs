//! Server-facing TLS (`[[backends]] server_tls`), through the real binary against sandbox
//! servers that refuse plain TCP: PostgreSQL with `ssl = on` and `hostnossl ... reject` first in
//! pg_hba, MariaDB with `require_secure_transport = ON`. Certificates are made here with the
//! `openssl` CLI: a CA, a server certificate for 127.0.0.1 and localhost, one for another name
//! only (verify-ca must accept it, verify-full must not), and a second, unrelated CA.
//!
//! What is pinned: every poolguard connection is TLS on the server's own books
//! (`pg_stat_ssl`, `Ssl_cipher`); transaction-mode reuse and cancels (a client's CancelRequest
//! and `query_timeout`) work over TLS; `disable` reaches the server's own refusal as an error,
//! not a hang; a wrong CA or a wrong name fails `poolguard check` naming host and reason, and
//! a client gets a clear error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use poolguard_e2e::admin::{http_get, wait_for};
use poolguard_e2e::mysql::*;
use poolguard_e2e::*;

/// Certificates for one test, in a temporary directory readable by the servers' accounts.
struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A CA ("ca"), a second unrelated CA ("other-ca"), and server certificates: "server" for
    /// IP 127.0.0.1 and localhost, "elsewhere" for db.elsewhere.invalid only.
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        // The server accounts (postgres, mysql) read the files from here.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let pki = Pki { dir };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.issue("server", "ca", "IP:127.0.0.1,DNS:localhost");
        pki.issue("elsewhere", "ca", "DNS:db.elsewhere.invalid");
        pki
    }

    fn ca(&self, name: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            "[req]\ndistinguished_name = dn\nx509_extensions = v3\n[dn]\n[v3]\n\
             basicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
        )
        .unwrap();
        openssl(
            self.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=poolguard test {name}"),
                "-config",
                &ext,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }

    fn issue(&self, name: &str, ca: &str, sans: &str) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.path(&ext),
            format!(
                "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = serverAuth,clientAuth\nsubjectAltName = {sans}\n"
            ),
        )
        .unwrap();
        openssl(
            self.dir.path(),
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        openssl(
            self.dir.path(),
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.crt"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &format!("{name}.crt"),
            ],
        );
        // World-readable for MariaDB's account; PostgreSQL gets its own 0600 copy.
        for f in [format!("{name}.crt"), format!("{name}.key")] {
            std::fs::set_permissions(
                self.path(&f),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.path(file)).unwrap()
    }
}

/// A PostgreSQL that takes TLS connections only (the sandbox's own psql uses TLS: libpq's
/// default `prefer`), serving `cert` ("server" or "elsewhere").
fn tls_only_postgres(pki: &Pki, cert: &str) -> PgSandbox {
    tls_postgres(pki, cert)
        .hba_line("hostnossl all all 0.0.0.0/0 reject")
        .start()
        .expect("start TLS-only PostgreSQL")
}

/// A PostgreSQL with `ssl = on` serving `cert`, to be started.
fn tls_postgres(pki: &Pki, cert: &str) -> poolguard_sandbox::PgBuilder {
    PgSandbox::builder()
        .max_connections(30)
        .user(USER, PASSWORD)
        .database(DB, USER)
        .file("server.crt", &pki.read(&format!("{cert}.crt")))
        .file("server.key", &pki.read(&format!("{cert}.key")))
        .setting("ssl", "on")
        .setting("ssl_cert_file", "server.crt")
        .setting("ssl_key_file", "server.key")
}

/// The `[[backends]]` TLS lines.
fn tls_lines(mode: &str, ca: Option<&Path>) -> String {
    let mut s = format!("server_tls = \"{mode}\"\n");
    if let Some(ca) = ca {
        s.push_str(&format!(
            "server_tls_ca_file = {:?}\n",
            ca.display().to_string()
        ));
    }
    s
}

/// The PostgreSQL config with `host` as the backend's address and `server_tls = mode`.
fn pg_config(
    pg: &PgSandbox,
    port: u16,
    spec: &PoolSpec,
    host: &str,
    mode: &str,
    ca: Option<&Path>,
) -> String {
    config_for(pg, port, spec).replace(
        &format!("hosts = [\"127.0.0.1:{}\"]", pg.port()),
        &format!(
            "hosts = [\"{host}:{}\"]\n{}",
            pg.port(),
            tls_lines(mode, ca)
        ),
    )
}

/// Rewrites the proxy's configuration and reloads it (SIGHUP); returns once the log says the
/// reload was applied. How the failing settings are reached: `run` refuses to start when its
/// budget check cannot log in, so they come by reload, which also shows a reload takes effect.
fn reload(proxy: &Proxy, config: &str) {
    let applied = || proxy.log().matches("configuration reloaded").count();
    let before = applied();
    std::fs::write(proxy.config_path(), config).unwrap();
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while applied() == before {
        assert!(
            Instant::now() < deadline,
            "reload not applied:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// psql's `SELECT 1` through poolguard, which must fail (within 30 s: an error, not a hang);
/// what psql printed.
fn psql_refused(port: u16) -> String {
    let out = run_within(
        psql_command(port)
            .args(["-c", "SELECT 1"])
            .env("PGPASSWORD", PASSWORD),
        Duration::from_secs(30),
    );
    assert!(!out.status.success(), "must be refused: {}", stdout(&out));
    stderr(&out)
}

/// (role, last check's error) of `host` from `/api/servers`.
fn host_check(admin: u16, host: &str) -> (String, String) {
    let servers: serde_json::Value =
        serde_json::from_str(&http_get(admin, "/api/servers")).expect("servers JSON");
    let found = servers
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["hosts"].as_array().cloned().unwrap_or_default())
        .find(|h| h["addr"] == host)
        .unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (text(&found["role"]), text(&found["last_check_error"]))
}

/// Three psql clients in a transaction at the same time (so three server connections).
fn three_at_once(port: u16) {
    let sessions: Vec<_> = (0..3)
        .map(|_| {
            let mut cmd = psql_command(port);
            cmd.args(["-c", "BEGIN; SELECT pg_sleep(0.3); COMMIT;"])
                .env("PGPASSWORD", PASSWORD);
            cmd.spawn().unwrap()
        })
        .collect();
    for mut s in sessions {
        assert!(s.wait().unwrap().success());
    }
}

/// poolguard started after `poolguard check` passed on the same configuration.
fn start_checked(config: &str, port: u16) -> Proxy {
    let (ok, text) = run_check(config);
    assert!(ok, "check must pass:\n{text}");
    Proxy::start_with(config, port)
}

/// A `pg_stat_ssl` column of the session's own server connection, through poolguard.
fn own_ssl(port: u16, column: &str) -> String {
    let out = psql(
        port,
        &format!("SELECT {column} FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

fn run_check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, config).unwrap();
    let out = run_within(
        Command::new(poolguard_bin())
            .args(["check", "--config"])
            .arg(&f),
        Duration::from_secs(60),
    );
    (
        out.status.success(),
        format!("{}\n{}", stdout(&out), stderr(&out)),
    )
}

/// (poolguard's connections as the server counts them, how many of them are TLS).
fn pg_tls_counts(pg: &PgSandbox) -> (u64, u64) {
    let out = pg
        .psql(
            "postgres",
            "SELECT count(*), count(*) FILTER (WHERE ssl) FROM pg_stat_ssl \
             JOIN pg_stat_activity USING (pid) WHERE usename = 'app'",
        )
        .unwrap();
    let (all, tls) = out.split_once('|').expect("two columns");
    (all.parse().unwrap(), tls.parse().unwrap())
}

#[test]
fn pg_verify_full_runs_every_connection_over_tls_and_disable_is_refused_by_the_server() {
    let pki = Pki::new();
    let pg = tls_only_postgres(&pki, "server");
    let spec = PoolSpec::default();
    let port = free_port();
    let ca = pki.path("ca.crt");
    let config = pg_config(&pg, port, &spec, "127.0.0.1", "verify-full", Some(&ca));
    let proxy = start_checked(&config, port);
    assert_eq!(
        own_ssl(proxy.port, "ssl"),
        "t",
        "the session's own server connection is TLS"
    );
    // Three clients at once: three server connections, each TLS on the server's books.
    three_at_once(proxy.port);
    let (all, tls) = pg_tls_counts(&pg);
    assert!(all >= 1, "poolguard's connections stay pooled");
    assert_eq!(all, tls, "every poolguard connection to the server is TLS");

    // disable: the pooled TLS connections retire with the reload, and the server's pg_hba
    // refusal of the next connection reaches the client as an error, promptly.
    reload(
        &proxy,
        &pg_config(&pg, port, &spec, "127.0.0.1", "disable", None),
    );
    // The server's own words, which a hang cut short by psql_refused's limit would not have.
    let err = psql_refused(proxy.port);
    assert!(
        err.contains("no encryption") || err.contains("pg_hba.conf"),
        "the server's own reason reaches the client: {err}"
    );
}

#[test]
fn pg_wrong_ca_or_name_fails_check_naming_host_and_reason() {
    let pki = Pki::new();
    let pg = tls_only_postgres(&pki, "elsewhere");
    let spec = PoolSpec::default();
    let host = format!("127.0.0.1:{}", pg.port());

    // A CA that did not sign the server's certificate.
    let port = free_port();
    let wrong = pg_config(
        &pg,
        port,
        &spec,
        "127.0.0.1",
        "verify-ca",
        Some(&pki.path("other-ca.crt")),
    );
    let (ok, text) = run_check(&wrong);
    assert!(!ok, "check must fail with the wrong CA:\n{text}");
    assert!(
        text.contains(&host) && text.contains("TLS certificate verify failed: UnknownIssuer"),
        "check names the host and the reason:\n{text}"
    );
    let ca = pki.path("ca.crt");
    let chain_only = pg_config(&pg, port, &spec, "127.0.0.1", "verify-ca", Some(&ca));
    // Health checks follow the backend's TLS too: primary with the right CA, down with the
    // reason once the wrong one is in force.
    let admin = free_port();
    let checked = |config: &str| {
        format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n",
            config.replace(
                "server_tls = ",
                "health_check_interval = \"200ms\"\nserver_tls = "
            )
        )
    };
    let proxy = Proxy::start_with(&checked(&chain_only), port);
    wait_for(Duration::from_secs(30), "host seen as primary", || {
        (host_check(admin, &host).0 == "primary").then_some(())
    });
    reload(&proxy, &checked(&wrong));
    let why = wait_for(Duration::from_secs(30), "host seen as down", || {
        let (role, error) = host_check(admin, &host);
        (role == "down").then_some(error)
    });
    assert!(why.contains("UnknownIssuer"), "{why}");
    let err = psql_refused(proxy.port);
    assert!(
        err.contains("certificate verify failed"),
        "the client is told why: {err}"
    );
    assert!(
        proxy.log().contains("UnknownIssuer"),
        "and the log says it:\n{}",
        proxy.log()
    );
    drop(proxy);

    // The right CA, a certificate for another name: verify-full refuses, verify-ca accepts.
    let full = pg_config(&pg, port, &spec, "127.0.0.1", "verify-full", Some(&ca));
    let (ok, text) = run_check(&full);
    assert!(
        !ok,
        "verify-full must refuse a certificate for another name:\n{text}"
    );
    assert!(
        text.contains(&host) && text.contains("not valid for name"),
        "{text}"
    );
    let (ok, text) = run_check(&chain_only);
    assert!(ok, "verify-ca checks the chain only:\n{text}");
    // prefer and require encrypt without checking the certificate (libpq's meaning).
    for mode in ["prefer", "require"] {
        let (ok, text) = run_check(&pg_config(&pg, port, &spec, "127.0.0.1", mode, None));
        assert!(ok, "{mode}:\n{text}");
    }
}

#[test]
fn pg_without_tls_prefer_goes_plain_and_says_so_once_require_refuses() {
    let pg = sandbox(20);
    let (spec, port) = (PoolSpec::default(), free_port());
    let config = config_for(&pg, port, &spec); // no server_tls: the default, prefer
    let proxy = start_checked(&config, port);
    three_at_once(proxy.port);
    assert_eq!(own_ssl(proxy.port, "ssl"), "f");
    // Once for the pools' host, however many connections they opened (the budget check's
    // one-off connection at start says it for itself, without a backend name).
    let log = proxy.log();
    let said = log
        .lines()
        .filter(|l| l.contains("does not offer TLS") && l.contains("backend=pg"))
        .count();
    assert_eq!(said, 1, "{log}");

    let (ok, text) = run_check(&pg_config(&pg, port, &spec, "127.0.0.1", "require", None));
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", pg.port()))
            && text.contains("server does not accept TLS, and server_tls = require requires it"),
        "{text}"
    );
}

#[test]
fn pg_client_certificate_is_presented_when_configured() {
    let pki = Pki::new();
    // CN=app: what pg_hba's clientcert=verify-full compares with the user name.
    pki.issue("app", "ca", "DNS:app.invalid");
    let pg = tls_postgres(&pki, "server")
        .file("ca.crt", &pki.read("ca.crt"))
        .setting("ssl_ca_file", "ca.crt")
        .hba_line("hostssl bank app 127.0.0.1/32 scram-sha-256 clientcert=verify-full")
        .hba_line("hostnossl all all 0.0.0.0/0 reject")
        .start()
        .expect("start PostgreSQL asking for client certificates");
    let (spec, port, ca) = (PoolSpec::default(), free_port(), pki.path("ca.crt"));
    let without = pg_config(&pg, port, &spec, "127.0.0.1", "verify-full", Some(&ca));
    let (ok, text) = run_check(&without);
    assert!(!ok, "the server wants a certificate:\n{text}");
    assert!(text.contains("certificate"), "{text}");
    let with = without.replace(
        "server_tls = ",
        &format!(
            "server_tls_cert_file = {:?}\nserver_tls_key_file = {:?}\nserver_tls = ",
            pki.path("app.crt").display().to_string(),
            pki.path("app.key").display().to_string()
        ),
    );
    let proxy = start_checked(&with, port);
    assert_eq!(own_ssl(proxy.port, "client_dn"), "/CN=app");
}

#[test]
fn pg_transaction_reuse_and_cancels_over_tls() {
    let pki = Pki::new();
    let pg = tls_only_postgres(&pki, "server");
    let spec = PoolSpec {
        pool_size: 3,
        budget: 5,
        ..PoolSpec::default()
    };
    // By name this time: verify-full matches the certificate's DNS name.
    let ca = pki.path("ca.crt");
    let by_name = |spec: &PoolSpec| {
        let port = free_port();
        let config = pg_config(&pg, port, spec, "localhost", "verify-full", Some(&ca));
        Proxy::start_with(&config, port)
    };
    let proxy = by_name(&spec);

    // 6 clients x 40 transactions on a pool of 3: each server connection serves many.
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "BEGIN;\nSELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();\nCOMMIT;\n",
    )
    .unwrap();
    let out = run_pg(
        Command::new("pgbench")
            .args([
                "-n",
                "-h",
                "127.0.0.1",
                "-U",
                USER,
                "-c",
                "6",
                "-j",
                "2",
                "-t",
                "40",
            ])
            .arg("-p")
            .arg(proxy.port.to_string())
            .arg("-f")
            .arg(script.path())
            .arg(DB),
    );
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("number of transactions actually processed: 240/240"),
        "{}",
        stdout(&out)
    );
    let (all, tls) = pg_tls_counts(&pg);
    assert!(
        all <= 3,
        "a pool of 3 served 240 transactions with {all} connections"
    );
    assert_eq!(all, tls, "all of them TLS");

    // Megabytes both ways: a 4 MB statement to the server (many TLS records, writes the
    // socket takes in parts; each must be flushed out of rustls) and 4 MB back.
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        big.path(),
        format!(
            "SELECT md5('{}') = md5(repeat('ab', 2000000));\nSELECT repeat('cd', 2000000);\n",
            "ab".repeat(2_000_000)
        ),
    )
    .unwrap();
    let out = psql_file(proxy.port, big.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("t\n"),
        "{}",
        text.get(..100).unwrap_or(&text)
    );
    assert!(
        text.get(2..) == Some("cd".repeat(2_000_000).as_str()),
        "4 MB back intact"
    );

    // A client's CancelRequest (tokio-postgres' cancel token), relayed over TLS.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(&proxy.conn_str(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let token = client.cancel_token();
        let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(29)").await });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let running = pg
                .psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(29)' AND state = 'active'",
                )
                .unwrap();
            if running == "1" {
                break;
            }
            assert!(Instant::now() < deadline, "the query never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        token.cancel_query(tokio_postgres::NoTls).await.unwrap();
        let err = query.await.unwrap().expect_err("cancelled");
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("57014"),
            "{err:?}"
        );
    });
    drop(proxy);

    // query_timeout: poolguard's own CancelRequest goes to the server over TLS.
    let spec = PoolSpec {
        limits: "query_timeout = \"1s\"\n".into(),
        ..spec
    };
    let proxy = by_name(&spec);
    // Cancelled, not run out: a finished pg_sleep would succeed.
    let out = psql(proxy.port, "SELECT pg_sleep(30)");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("canceling statement"),
        "{}",
        stderr(&out)
    );
}

/// A MariaDB with TLS from `cert`, and `require_secure_transport` on once the sandbox's own
/// setup (plain TCP) is done.
fn tls_only_mariadb(pki: &Pki, cert: &str) -> MariaDbSandbox {
    let db = MariaDbSandbox::builder()
        .max_connections(30)
        .user(USER, PASSWORD)
        .database(DB, USER)
        .setting("ssl-ca", &pki.path("ca.crt").display().to_string())
        .setting(
            "ssl-cert",
            &pki.path(&format!("{cert}.crt")).display().to_string(),
        )
        .setting(
            "ssl-key",
            &pki.path(&format!("{cert}.key")).display().to_string(),
        )
        .start()
        .expect("start MariaDB");
    db.sql("", "SET GLOBAL require_secure_transport = ON")
        .unwrap();
    db
}

fn my_config(db: &MariaDbSandbox, port: u16, mode: &str, ca: Option<&Path>) -> String {
    mysql_config_for(db, port, &MyPoolSpec::default()).replace(
        &format!("hosts = [\"127.0.0.1:{}\"]", db.port()),
        &format!(
            "hosts = [\"127.0.0.1:{}\"]\n{}",
            db.port(),
            tls_lines(mode, ca)
        ),
    )
}

#[test]
fn mariadb_verify_ca_runs_over_tls_and_disable_gets_the_servers_refusal() {
    let pki = Pki::new();
    // The certificate names another host: verify-ca must not care, verify-full must.
    let db = tls_only_mariadb(&pki, "elsewhere");
    let ca = pki.path("ca.crt");
    let port = free_port();
    let config = my_config(&db, port, "verify-ca", Some(&ca));
    let (ok, text) = run_check(&config);
    assert!(ok, "{text}");
    let proxy = Proxy::start_with(&config, port);
    // Several transactions, one session each, on the pooled TLS connections.
    for _ in 0..5 {
        let out = mariadb_cli(proxy.port, "SHOW STATUS LIKE 'Ssl_cipher'");
        assert!(out.status.success(), "{}", stderr(&out));
        let line = stdout(&out);
        let cipher = line.split('\t').nth(1).unwrap_or("");
        assert!(!cipher.is_empty(), "the server connection is TLS: {line:?}");
    }
    // Transaction-mode reuse: 4 clients x 25 transactions on a pool of 5.
    let out = mariadb_cli(proxy.port, "CREATE TABLE t (id int, who int)");
    assert!(out.status.success(), "{}", stderr(&out));
    let port = proxy.port;
    let clients: Vec<_> = (0..4)
        .map(|who| {
            std::thread::spawn(move || {
                let mut c = MyClient::connect(port).unwrap();
                for id in 0..25 {
                    c.query("BEGIN").unwrap();
                    c.query(&format!("INSERT INTO t VALUES ({id}, {who})"))
                        .unwrap();
                    c.query("COMMIT").unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let out = mariadb_cli(proxy.port, "SELECT COUNT(*) FROM t");
    assert_eq!(stdout(&out), "100", "{}", stderr(&out));
    let servers = maria_app_connections(&db);
    assert!(servers <= 5, "{servers} server connections for a pool of 5");
    // The idle check before reuse reads through TLS: records that carry no data (TLS 1.3
    // session tickets) do not make a pooled connection look closed.
    assert!(
        !proxy.log().contains("closed by the server"),
        "{}",
        proxy.log()
    );

    let full = my_config(&db, port, "verify-full", Some(&ca));
    let (ok, text) = run_check(&full);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", db.port())) && text.contains("not valid for name"),
        "{text}"
    );

    // disable: the pooled TLS connections retire with the reload; the next plain one is
    // refused by the server, and its error reaches the client.
    reload(&proxy, &my_config(&db, port, "disable", None));
    let out = mariadb_cli(proxy.port, "SELECT 1");
    assert!(!out.status.success());
    assert!(
        // MariaDB 10.11 answers a plain login under require_secure_transport with 1045.
        stderr(&out).contains("ERROR 1045") || stderr(&out).contains("insecure transport"),
        "the server's refusal reaches the client: {}",
        stderr(&out)
    );
    // The same login succeeds once the server takes plain TCP again: the refusal was about
    // the transport, not the password.
    db.sql("", "SET GLOBAL require_secure_transport = OFF")
        .unwrap();
    let out = mariadb_cli(proxy.port, "SELECT 1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1");
}

/// Not a check: the relay's cost of TLS, for the record (`cargo test -p poolguard-e2e --test
/// tls_server -- --ignored --nocapture`). pgbench (`SELECT 1` transactions, 4 clients, pool of
/// 5) through transaction mode to one server that takes both, with `server_tls = "disable"`
/// and `"require"`, interleaved.
#[test]
#[ignore]
fn measure_relay_over_tls() {
    let pki = Pki::new();
    let pg = tls_postgres(&pki, "server").start().unwrap();
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(script.path(), "SELECT 1;\n").unwrap();
    let spec = PoolSpec::default();
    for round in 0..2 {
        for mode in ["disable", "require"] {
            let port = free_port();
            let proxy =
                Proxy::start_with(&pg_config(&pg, port, &spec, "127.0.0.1", mode, None), port);
            let out = run_pg(
                Command::new("pgbench")
                    .args(["-n", "-c", "4", "-j", "2", "-T", "5", "-h", "127.0.0.1"])
                    .args(["-U", USER, "-p", &proxy.port.to_string(), "-f"])
                    .arg(script.path())
                    .arg(DB),
            );
            let tps = stdout(&out)
                .lines()
                .find(|l| l.starts_with("tps"))
                .unwrap_or("")
                .to_owned();
            eprintln!("round {round} server_tls={mode}: {tps}");
        }
    }
}
