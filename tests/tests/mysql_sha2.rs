//! caching_sha2_password full authentication on poolguard's MySQL door (poolguard as the
//! server), with real clients: PyMySQL over TLS (password in clear) and without (RSA-OAEP with
//! poolguard's key), node mysql2 without TLS, the mariadb CLI over both; and a raw client that
//! shows which path poolguard chose (AuthMoreData 0x03 fast, 0x04 full) as the cache warms.
//! poolguard as the client of a MySQL 8 server is tested against a scripted server in
//! `crates/proxy/src/mysql/sha2_tests.rs` (MariaDB has no caching_sha2 server plugin).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::BytesMut;
use poolguard_e2e::mysql::*;
use poolguard_e2e::tls::Pki;
use poolguard_e2e::*;
use poolguard_mysql::auth::{sha2_auth_response, CACHING_SHA2_PASSWORD};
use poolguard_mysql::consts::*;
use poolguard_mysql::full_auth::ServerPublicKey;
use poolguard_mysql::handshake::{HandshakeResponse41, HandshakeV10};
use poolguard_mysql::packet::{encode_packet, PacketCodec};
use poolguard_mysql::Packet;

/// A blocking connection-phase client speaking only caching_sha2_password.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
    codec: PacketCodec,
}

/// How a raw login went: the AuthMoreData marker poolguard sent first (3 fast, 4 full), the
/// public key it sent (if asked), and the outcome (the ERR code on refusal).
struct Login {
    marker: Option<u8>,
    key_pem: Option<String>,
    result: Result<(), u16>,
}

impl Raw {
    fn read(&mut self) -> Packet {
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf).expect("packet") {
                return p;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("read");
            assert!(n > 0, "poolguard closed the connection mid-login");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn write(&mut self, seq: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_packet(&mut out, seq, payload);
        self.stream.write_all(&out).unwrap();
    }

    /// Logs in as `app` with `password`; on 0x04 asks for the key and sends the password
    /// encrypted with it.
    fn login(port: u16, password: &str) -> Login {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut c = Raw {
            stream,
            buf: BytesMut::new(),
            codec: PacketCodec::new(1 << 20),
        };
        let greeting = c.read();
        let hs = HandshakeV10::decode(&greeting.payload).unwrap();
        assert_eq!(hs.auth_plugin_name, CACHING_SHA2_PASSWORD);
        let nonce = hs.auth_plugin_data.clone();
        let response = HandshakeResponse41 {
            capabilities: (CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_CONNECT_WITH_DB)
                & hs.capabilities,
            max_packet_size: 1 << 24,
            charset: DEFAULT_COLLATION,
            username: USER.into(),
            auth_response: sha2_auth_response(password.as_bytes(), &nonce),
            database: Some(DB.into()),
            auth_plugin_name: Some(CACHING_SHA2_PASSWORD.into()),
            ..HandshakeResponse41::default()
        };
        let mut payload = BytesMut::new();
        response.encode(&mut payload);
        c.write(greeting.next_seq(), &payload);
        let mut login = Login {
            marker: None,
            key_pem: None,
            result: Ok(()),
        };
        loop {
            let p = c.read();
            match p.payload.first() {
                Some(&OK_HEADER) => return login,
                Some(&ERR_HEADER) => {
                    let err = ErrPacket::decode(&p.payload).unwrap();
                    login.result = Err(err.code);
                    return login;
                }
                Some(&AUTH_MORE_DATA_HEADER) if login.marker.is_none() => {
                    login.marker = p.payload.get(1).copied();
                    if login.marker == Some(4) {
                        c.write(p.next_seq(), &[2]);
                    }
                }
                Some(&AUTH_MORE_DATA_HEADER) if login.key_pem.is_none() => {
                    let pem = p.payload[1..].to_vec();
                    let key = ServerPublicKey::from_pem(&pem).expect("poolguard's key");
                    let sealed = key.encrypt_password(password.as_bytes(), &nonce).unwrap();
                    c.write(p.next_seq(), &sealed);
                    login.key_pem = Some(String::from_utf8(pem).unwrap());
                }
                other => panic!("unexpected packet during login: {other:?}"),
            }
        }
    }
}

fn sha2_front(policy: &str, extra: &str) -> MyPoolSpec {
    MyPoolSpec {
        front: format!(
            "auth_method = \"caching_sha2_password\"\ncaching_sha2_full_auth = \"{policy}\"\n{extra}"
        ),
        ..Default::default()
    }
}

fn pymysql(port: u16, password: &str, ca: Option<String>) -> String {
    let mut args = vec![port.to_string(), password.to_owned()];
    args.extend(ca);
    let out = python("mysql_sha2_pymysql.py", &args, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

/// `first_login`: cold, a user is asked for its full password (a wrong one is 1045); once one
/// full authentication succeeded, the fast path; the key poolguard hands out is the configured
/// `rsa_private_key_file`'s.
#[test]
fn first_login_goes_full_then_fast_with_the_configured_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("rsa.key");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let key = key_file.display().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &key,
    ]);
    let public = openssl(&["pkey", "-in", &key, "-pubout"]);
    let db = mariadb(20);
    let proxy = start_mysql_proxy(
        &db,
        &sha2_front(
            "first_login",
            &format!("rsa_private_key_file = \"{key}\"\n"),
        ),
    );
    let port = proxy.port;

    let wrong = Raw::login(port, "not-the-password");
    assert_eq!(wrong.marker, Some(4), "a cold user takes the full path");
    assert_eq!(wrong.result, Err(1045));

    let cold = Raw::login(port, PASSWORD);
    assert_eq!(cold.marker, Some(4));
    assert_eq!(cold.result, Ok(()));
    assert_eq!(
        cold.key_pem.as_deref().map(str::trim),
        Some(public.trim()),
        "poolguard sends the public half of rsa_private_key_file"
    );

    let warm = Raw::login(port, PASSWORD);
    assert_eq!(warm.marker, Some(3), "warm: fast auth success");
    assert_eq!(warm.result, Ok(()));
    assert_eq!(Raw::login(port, "not-the-password").result, Err(1045));

    // A real client on the fast path now.
    assert_eq!(pymysql(port, PASSWORD, None), "value=42");

    // What poolguard sends a MySQL 8 server without TLS, OpenSSL (which MySQL uses) decrypts:
    // RSA-OAEP with SHA-1 and MGF1-SHA-1, the password NUL-terminated, XORed with the scramble.
    let scramble: Vec<u8> = (0x21u8..0x21 + 20).collect();
    let server_key = ServerPublicKey::from_pem(public.as_bytes()).unwrap();
    let sealed = server_key
        .encrypt_password(PASSWORD.as_bytes(), &scramble)
        .unwrap();
    let sealed_file = dir.path().join("sealed");
    std::fs::write(&sealed_file, &sealed).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkeyutl", "-decrypt", "-inkey", &key, "-in"])
        .arg(&sealed_file)
        .args([
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-pkeyopt",
            "rsa_mgf1_md:sha1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let unmasked: Vec<u8> = out
        .stdout
        .iter()
        .zip(scramble.iter().cycle())
        .map(|(b, s)| b ^ s)
        .collect();
    assert_eq!(unmasked, [PASSWORD.as_bytes(), &[0]].concat());
}

/// `always`: every login takes the full path; real clients do it over TLS (password in clear)
/// and without (RSA with poolguard's generated key), and a wrong password is 1045 for each.
#[test]
fn real_clients_full_auth_over_tls_and_rsa() {
    let pki = Pki::new();
    let db = mariadb(20);
    let proxy = start_mysql_proxy(&db, &sha2_front("always", &pki.front("allow")));
    let port = proxy.port;
    let ca = pki.file("ca.crt");

    assert_eq!(pymysql(port, PASSWORD, Some(ca.clone())), "value=42");
    assert_eq!(pymysql(port, "wrong", Some(ca.clone())), "error=1045");
    assert_eq!(pymysql(port, PASSWORD, None), "value=42");
    assert_eq!(pymysql(port, "wrong", None), "error=1045");

    for (password, expected) in [(PASSWORD, "value=42"), ("wrong", "error=1045")] {
        let out = node(
            "mysql_sha2.js",
            &[port.to_string(), password.into()],
            Duration::from_secs(60),
        );
        assert_eq!(stdout(&out), expected, "{}", stderr(&out));
    }

    let tls = [
        "--ssl".to_string(),
        "--ssl-verify-server-cert".into(),
        format!("--ssl-ca={ca}"),
    ];
    let out = mariadb_cli_with(port, &tls, "SELECT 40 + 2");
    assert_eq!(stdout(&out), "42", "{}", stderr(&out));
    // Without TLS the CLI's caching_sha2 plugin asks for poolguard's key (with `--skip-ssl`:
    // without it, a 10.11 CLI that wanted TLS and did not get it sends the password in clear,
    // which poolguard refuses with 1045 as MySQL does).
    let out = mariadb_cli_with(port, &["--skip-ssl".into()], "SELECT 40 + 2");
    assert_eq!(stdout(&out), "42", "{}", stderr(&out));

    // Still the full path after all those successes.
    let again = Raw::login(port, PASSWORD);
    assert_eq!((again.marker, again.result), (Some(4), Ok(())));
}
