//! poolguard logging in to a MySQL 8 server whose account uses caching_sha2_password, against
//! a scripted server on 127.0.0.1 that follows the published exchange (MariaDB has no
//! caching_sha2 server plugin): the fast path, full authentication with the server's RSA key
//! (asked for, or configured), an auth switch into it, a wrong password's 1045 reaching the
//! client, and malformed or hostile AuthMoreData ending the login cleanly.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use poolguard_mysql::auth::{sha2_scramble, CACHING_SHA2_PASSWORD, MYSQL_NATIVE_PASSWORD};
use poolguard_mysql::consts::*;
use poolguard_mysql::full_auth::{RsaKeyPair, ServerPublicKey};
use poolguard_mysql::handshake::{
    decode_client_handshake, AuthSwitchRequest, ClientHandshake, HandshakeV10,
};
use poolguard_mysql::packet::{encode_packet, PacketCodec};
use poolguard_mysql::response::{encode_err, OkPacket};
use poolguard_mysql::Packet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::mysql::pools::acquire_error;
use crate::mysql::server::{MyConnector, ServerError};

const PASSWORD: &str = "s3cret-sha2";

fn pair() -> &'static RsaKeyPair {
    static PAIR: OnceLock<RsaKeyPair> = OnceLock::new();
    PAIR.get_or_init(|| RsaKeyPair::generate().unwrap())
}

/// What the scripted server does after checking the scramble.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Cache hit: 0x03, OK.
    Fast,
    /// Cache miss: 0x04; expects a key request (or not, when the key is configured), then
    /// the RSA-encrypted password; OK if it is `PASSWORD`, else 1045.
    FullRsa { expect_key_request: bool },
    /// Greets with mysql_native_password, then switches to caching_sha2 with a new scramble
    /// and does [`Script::FullRsa`] with it.
    SwitchThenFull,
    /// Answers the key request with this hostile payload instead of a PEM key.
    BadKey(Hostile),
    /// Sends AuthMoreData that is neither 0x03 nor 0x04.
    UnknownMarker,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hostile {
    Garbage,
    Oversized,
    /// A 1024-bit key: too weak to send a password to.
    WeakKey,
}

struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    codec: PacketCodec,
}

impl Wire {
    async fn read(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.codec.decode(&mut self.buf).unwrap() {
                return Some(p);
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn write(&mut self, seq: u8, payload: &[u8]) {
        let mut out = BytesMut::new();
        encode_packet(&mut out, seq, payload);
        let _ = self.stream.write_all(&out).await;
    }

    async fn more_data(&mut self, seq: u8, data: &[u8]) {
        let mut payload = vec![AUTH_MORE_DATA_HEADER];
        payload.extend_from_slice(data);
        self.write(seq, &payload).await;
    }
}

fn greeting(plugin: &str, nonce: &[u8]) -> Vec<u8> {
    let hs = HandshakeV10 {
        server_version: "8.0.36".into(),
        connection_id: 7,
        auth_plugin_data: nonce.to_vec(),
        capabilities: CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH
            | CLIENT_CONNECT_WITH_DB
            | CLIENT_TRANSACTIONS
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
            | CLIENT_CONNECT_ATTRS,
        mariadb_capabilities: 0,
        charset: DEFAULT_COLLATION,
        status_flags: SERVER_STATUS_AUTOCOMMIT,
        auth_plugin_name: plugin.into(),
    };
    let mut b = BytesMut::new();
    hs.encode(&mut b);
    b.to_vec()
}

/// Serves one login by `script`. Returns what the server saw: whether poolguard's scramble was
/// right, and the password it decrypted (full path).
async fn serve(listener: TcpListener, script: Script) -> (bool, Option<Vec<u8>>) {
    let (stream, _) = listener.accept().await.unwrap();
    let mut w = Wire {
        stream,
        buf: BytesMut::new(),
        codec: PacketCodec::new(1 << 20),
    };
    let mut nonce: Vec<u8> = (0x30u8..0x30 + 20).collect();
    let first_plugin = match script {
        Script::SwitchThenFull => MYSQL_NATIVE_PASSWORD,
        _ => CACHING_SHA2_PASSWORD,
    };
    w.write(0, &greeting(first_plugin, &nonce)).await;
    let p = w.read().await.unwrap();
    let Ok(ClientHandshake::Response(r)) = decode_client_handshake(&p.payload) else {
        panic!("not a handshake response");
    };
    let mut seq = p.next_seq();
    let mut scramble = r.auth_response.clone();
    if script == Script::SwitchThenFull {
        assert_eq!(r.auth_plugin_name.as_deref(), Some(MYSQL_NATIVE_PASSWORD));
        nonce = (0x50u8..0x50 + 20).collect();
        let switch = AuthSwitchRequest {
            plugin_name: CACHING_SHA2_PASSWORD.into(),
            plugin_data: nonce.clone(),
        };
        let mut b = BytesMut::new();
        switch.encode(&mut b);
        w.write(seq, &b).await;
        let p = w.read().await.unwrap();
        seq = p.next_seq();
        scramble = p.payload.to_vec();
    } else {
        assert_eq!(r.auth_plugin_name.as_deref(), Some(CACHING_SHA2_PASSWORD));
    }
    let scramble_ok = scramble == sha2_scramble(PASSWORD.as_bytes(), &nonce);
    match script {
        Script::Fast => {
            w.more_data(seq, &[3]).await;
            let mut ok = BytesMut::new();
            OkPacket::with_status(SERVER_STATUS_AUTOCOMMIT).encode(&mut ok, CLIENT_PROTOCOL_41);
            w.write(seq.wrapping_add(1), &ok).await;
            (scramble_ok, None)
        }
        Script::UnknownMarker => {
            w.more_data(seq, &[9]).await;
            let _ = w.read().await;
            (scramble_ok, None)
        }
        Script::BadKey(hostile) => {
            w.more_data(seq, &[4]).await;
            let p = w.read().await.unwrap();
            assert_eq!(&p.payload[..], &[2], "poolguard asks for the key");
            let payload = match hostile {
                Hostile::Garbage => b"-----BEGIN PUBLIC KEY-----\n!!\n".to_vec(),
                Hostile::Oversized => vec![b'A'; 64 * 1024],
                Hostile::WeakKey => WEAK_KEY.as_bytes().to_vec(),
            };
            w.more_data(p.next_seq(), &payload).await;
            // poolguard gives up: nothing more arrives.
            assert!(w.read().await.is_none(), "poolguard sent a password anyway");
            (scramble_ok, None)
        }
        Script::FullRsa { .. } | Script::SwitchThenFull => {
            let expect_key_request = match script {
                Script::FullRsa { expect_key_request } => expect_key_request,
                _ => true,
            };
            w.more_data(seq, &[4]).await;
            let mut p = w.read().await.unwrap();
            if expect_key_request {
                assert_eq!(&p.payload[..], &[2], "poolguard asks for the key");
                w.more_data(p.next_seq(), pair().public_pem().as_bytes())
                    .await;
                p = w.read().await.unwrap();
            }
            let password = pair().decrypt_password(&p.payload, &nonce);
            let next = p.next_seq();
            let mut out = BytesMut::new();
            if password.as_deref() == Some(PASSWORD.as_bytes()) {
                OkPacket::with_status(SERVER_STATUS_AUTOCOMMIT)
                    .encode(&mut out, CLIENT_PROTOCOL_41);
            } else {
                encode_err(
                    &mut out,
                    1045,
                    "28000",
                    "Access denied for user 'app'@'localhost' (using password: YES)",
                );
            }
            w.write(next, &out).await;
            (scramble_ok, password)
        }
    }
}

/// A 1024-bit RSA public key (SPKI PEM), below what poolguard accepts.
const WEAK_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDCMrq3NP9TVXR8xtExUdiKuyV7
3B7vjvJ7KHSg2IW2uWcowILH8v3OrJMbrxOkjqjlp6ICpm+T+Jo2rvH7VZfTuUsM
Y2M81k5d6tYOwP8KxYz95BgrD9zS10E+LXaVlE7mU1MqB8c5Kp49HCBtcLB3eJI2
1S0N7LWynCI4pw1BfwIDAQAB
-----END PUBLIC KEY-----
";

/// Logs in to a scripted server; returns poolguard's outcome and what the server saw.
async fn login(
    script: Script,
    password: &str,
    known_key: Option<ServerPublicKey>,
) -> (Result<(), ServerError>, (bool, Option<Vec<u8>>)) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(serve(listener, script));
    let mut connector = MyConnector::new(
        addr.clone(),
        crate::tls::connect::ServerTls::disabled(),
        "app".into(),
        password.into(),
        "bank".into(),
        Duration::from_secs(10),
    );
    connector.server_rsa_key = known_key.map(Arc::new);
    let outcome = connector.open_at(addr).await.map(drop);
    (outcome, server.await.unwrap())
}

#[tokio::test]
async fn fast_path() {
    let (outcome, (scramble_ok, _)) = login(Script::Fast, PASSWORD, None).await;
    outcome.unwrap();
    assert!(
        scramble_ok,
        "poolguard's scramble is SHA256-based and right"
    );
}

#[tokio::test]
async fn full_auth_asks_for_the_key_and_sends_the_password_encrypted() {
    let script = Script::FullRsa {
        expect_key_request: true,
    };
    let (outcome, (_, seen)) = login(script, PASSWORD, None).await;
    outcome.unwrap();
    assert_eq!(seen.as_deref(), Some(PASSWORD.as_bytes()));
}

#[tokio::test]
async fn full_auth_with_a_configured_key_does_not_ask() {
    let key = ServerPublicKey::from_pem(pair().public_pem().as_bytes()).unwrap();
    let script = Script::FullRsa {
        expect_key_request: false,
    };
    let (outcome, (_, seen)) = login(script, PASSWORD, Some(key)).await;
    outcome.unwrap();
    assert_eq!(seen.as_deref(), Some(PASSWORD.as_bytes()));
}

#[tokio::test]
async fn auth_switch_into_full_auth_uses_the_new_scramble() {
    let (outcome, (scramble_ok, seen)) = login(Script::SwitchThenFull, PASSWORD, None).await;
    outcome.unwrap();
    assert!(scramble_ok);
    assert_eq!(seen.as_deref(), Some(PASSWORD.as_bytes()));
}

#[tokio::test]
async fn wrong_password_is_the_servers_1045_for_the_client() {
    let script = Script::FullRsa {
        expect_key_request: true,
    };
    let (outcome, (scramble_ok, seen)) = login(script, "not-it", None).await;
    assert!(!scramble_ok);
    assert_eq!(seen.as_deref(), Some(&b"not-it"[..]));
    let e = outcome.unwrap_err();
    assert!(
        matches!(&e, ServerError::Refused { err, .. } if err.code == 1045),
        "{e}"
    );
    // What the pool hands the client session: the server's own code and message.
    let client = acquire_error(poolguard_pool::AcquireError::Connect(e));
    assert_eq!(client.mysql_code(false), 1045);
    assert!(client.to_string().contains("Access denied"), "{client}");
}

#[tokio::test]
async fn hostile_auth_data_ends_the_login_cleanly() {
    for (script, expect) in [
        (Script::BadKey(Hostile::Garbage), "not a PEM RSA public key"),
        (Script::BadKey(Hostile::Oversized), "larger than"),
        (Script::BadKey(Hostile::WeakKey), "1024 bits"),
        (
            Script::UnknownMarker,
            "unexpected caching_sha2_password data",
        ),
    ] {
        let (outcome, _) = login(script, PASSWORD, None).await;
        let e = outcome.unwrap_err();
        assert!(matches!(e, ServerError::Protocol { .. }), "{e}");
        assert!(e.to_string().contains(expect), "{e}");
    }
}

/// When the door asks for the full password: the policies, native-hash users, empty
/// passwords, and the cache going stale when the password changes.
#[test]
fn full_auth_policy() {
    use crate::config::FullAuth;
    use crate::mysql::sha2::Sha2State;
    use poolguard_mysql::auth::native_password_hash;
    let state = Sha2State::default();
    let scramble = [1u8; 32];
    let hash = native_password_hash(b"pw");
    for policy in [FullAuth::WhenNeeded, FullAuth::FirstLogin, FullAuth::Always] {
        assert!(state.wants_full_auth(policy, "app", Some(&hash), &scramble));
        assert!(
            !state.wants_full_auth(policy, "app", Some("pw"), &[]),
            "empty password"
        );
    }
    assert!(!state.wants_full_auth(FullAuth::WhenNeeded, "app", Some("pw"), &scramble));
    assert!(!state.wants_full_auth(FullAuth::WhenNeeded, "bob", None, &scramble));
    assert!(state.wants_full_auth(FullAuth::FirstLogin, "app", Some("pw"), &scramble));
    assert!(state.wants_full_auth(FullAuth::FirstLogin, "bob", None, &scramble));
    state.remember("app", "pw");
    assert!(!state.wants_full_auth(FullAuth::FirstLogin, "app", Some("pw"), &scramble));
    assert!(state.wants_full_auth(FullAuth::Always, "app", Some("pw"), &scramble));
    // A reload gave the user another password: cold again.
    assert!(state.wants_full_auth(FullAuth::FirstLogin, "app", Some("new"), &scramble));
    // A native hash never warms.
    state.remember("app", &hash);
    assert!(state.wants_full_auth(FullAuth::FirstLogin, "app", Some(&hash), &scramble));
}
