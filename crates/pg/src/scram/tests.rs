//! SCRAM tests: RFC 7677's published exchange, a real PostgreSQL verifier, full client/server round
//! trips, and hostile input.

use super::*;
use proptest::prelude::*;

// RFC 7677 §3.
const PASSWORD: &str = "pencil";
const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                            p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

/// `rolpassword` of `CREATE ROLE u1 PASSWORD 'pencil'` on PostgreSQL 15.
const PG15_PENCIL: &str = "SCRAM-SHA-256$4096:qJ3oebYjXXkVS5ObfjjvtQ==$\
                           sysNFawZeRk+XzS/ClsLyyIaWQy7EjPld0Dt3GZOpkw=:\
                           Tdh/KrgdT8EsNTlNeHL0+UyZjCCc4sFiwd4NpNZJc6c=";

fn rfc_verifier() -> ScramVerifier {
    ScramVerifier::from_password(PASSWORD, &B64.decode(SALT).unwrap(), 4096)
}

#[test]
fn rfc7677_client() {
    let mut client = ScramClient::with_nonce(PASSWORD, CLIENT_NONCE).with_user("user");
    assert_eq!(client.client_first(), CLIENT_FIRST.as_bytes());
    let client_final = client.handle_server_first(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(client_final).unwrap(), CLIENT_FINAL);
    assert_eq!(client.verify_server_final(SERVER_FINAL.as_bytes()), Ok(()));
    assert_eq!(
        client.verify_server_final(b"v=AAAAZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        Err(ScramError::ServerSignatureMismatch)
    );
}

#[test]
fn rfc7677_server() {
    let mut server = ScramServer::with_nonce(rfc_verifier(), SERVER_NONCE);
    let server_first = server.handle_client_first(CLIENT_FIRST.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(server_first).unwrap(), SERVER_FIRST);
    assert!(!server.is_done());
    let server_final = server.handle_client_final(CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(server_final).unwrap(), SERVER_FINAL);
    assert!(server.is_done());
    // The recovered ClientKey logs in anywhere the same verifier is stored.
    let client_key = server.client_key().unwrap();
    assert_eq!(sha256(&client_key), rfc_verifier().stored_key);
}

#[test]
fn rfc7677_server_rejects_tampered_proof() {
    let mut server = ScramServer::with_nonce(rfc_verifier(), SERVER_NONCE);
    server.handle_client_first(CLIENT_FIRST.as_bytes()).unwrap();
    let tampered = CLIENT_FINAL.replace("p=dHzb", "p=dHzc");
    assert_eq!(
        server.handle_client_final(tampered.as_bytes()),
        Err(ScramError::WrongPassword)
    );
    assert_eq!(server.client_key(), None);
    // Failed for good: no second try within one exchange.
    assert_eq!(
        server.handle_client_final(CLIENT_FINAL.as_bytes()),
        Err(ScramError::OutOfOrder)
    );
}

#[test]
fn postgres_stored_verifier() {
    let parsed = ScramVerifier::parse(PG15_PENCIL).unwrap();
    assert_eq!(parsed.iterations, 4096);
    assert_eq!(parsed.salt.len(), 16);
    assert_eq!(parsed.to_string(), PG15_PENCIL);
    assert_eq!(
        ScramVerifier::from_password(PASSWORD, &parsed.salt, 4096),
        parsed
    );
    assert_eq!(ScramVerifier::for_secret(PG15_PENCIL), Ok(parsed.clone()));
    // And a client knowing the password logs in against it.
    assert_eq!(round_trip(parsed, PASSWORD), Ok(()));
    let debug = format!("{:?}", ScramVerifier::parse(PG15_PENCIL).unwrap());
    assert!(
        !debug.contains("sysNFaw") && debug.contains("redacted"),
        "{debug}"
    );
}

#[test]
fn verifier_display_parse_round_trip() {
    let v = rfc_verifier();
    assert_eq!(
        v.to_string(),
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
         WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
    );
    assert_eq!(ScramVerifier::parse(&v.to_string()), Ok(v));
}

#[test]
fn verifier_parse_errors() {
    let bad = |s: &str| match ScramVerifier::parse(s) {
        Err(ScramError::InvalidVerifier(_)) => {}
        other => panic!("{s}: {other:?}"),
    };
    let k = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
    bad("md5abc");
    bad("SCRAM-SHA-256$4096:c2FsdA==");
    bad(&format!("SCRAM-SHA-256$4096c2FsdA==${k}:{k}"));
    bad(&format!("SCRAM-SHA-256$0:c2FsdA==${k}:{k}"));
    bad(&format!("SCRAM-SHA-256$-1:c2FsdA==${k}:{k}"));
    bad(&format!("SCRAM-SHA-256$4096:$${k}:{k}"));
    bad(&format!("SCRAM-SHA-256$4096:!!${k}:{k}"));
    bad(&format!("SCRAM-SHA-256$4096:c2FsdA==${k}"));
    bad(&format!("SCRAM-SHA-256$4096:c2FsdA==${k}:c2FsdA=="));
    assert!(ScramVerifier::parse(&format!("SCRAM-SHA-256$4096:c2FsdA==${k}:{k}")).is_ok());
}

#[test]
fn for_secret_derives_from_a_password() {
    let a = ScramVerifier::for_secret("hunter2").unwrap();
    let b = ScramVerifier::for_secret("hunter2").unwrap();
    assert_eq!((a.iterations, a.salt.len()), (4096, 16));
    assert_ne!(a.salt, b.salt, "salt is random");
    assert_eq!(ScramVerifier::from_password("hunter2", &a.salt, 4096), a);
    assert!(ScramVerifier::for_secret("SCRAM-SHA-256$garbage").is_err());
}

#[test]
fn stand_in_salt_is_stable_per_user_and_unpredictable() {
    let key = [7u8; 32];
    let a = ScramVerifier::stand_in(&key, "mallory", 4096);
    let again = ScramVerifier::stand_in(&key, "mallory", 4096);
    assert_eq!(a, again, "same user, same key: same verifier");
    let real = ScramVerifier::for_secret("hunter2").unwrap();
    assert_eq!(
        (a.iterations, a.salt.len()),
        (real.iterations, real.salt.len())
    );
    let other_user = ScramVerifier::stand_in(&key, "mallory2", 4096);
    let other_key = ScramVerifier::stand_in(&[8u8; 32], "mallory", 4096);
    assert_ne!(a.salt, other_user.salt);
    assert_ne!(a.salt, other_key.salt);
    assert_eq!(
        ScramVerifier::stand_in(&key, "x", 10_000).iterations,
        10_000
    );
    assert_eq!(ScramVerifier::stand_in(&key, "x", 0).iterations, 1);
}

#[test]
fn stand_in_fails_only_at_the_proof() {
    let stand_in = ScramVerifier::stand_in(&[1u8; 32], "mallory", 4096);
    for password in ["", "mallory", "hunter2"] {
        assert_eq!(
            round_trip(stand_in.clone(), password),
            Err(ScramError::WrongPassword),
            "password {password:?}"
        );
    }
}

/// A full exchange between our client (knowing `password`) and our server (holding `verifier`).
fn round_trip(verifier: ScramVerifier, password: &str) -> Result<(), ScramError> {
    round_trip_with(ScramClient::new(password), verifier)
}

fn round_trip_with(mut client: ScramClient, verifier: ScramVerifier) -> Result<(), ScramError> {
    let mut server = ScramServer::new(verifier);
    let server_first = server.handle_client_first(&client.client_first())?;
    let client_final = client.handle_server_first(&server_first)?;
    let server_final = server.handle_client_final(&client_final)?;
    client.verify_server_final(&server_final)
}

#[test]
fn client_server_round_trips() {
    let verifier = ScramVerifier::from_password("correct horse", b"salt-salt", 16);
    assert_eq!(round_trip(verifier.clone(), "correct horse"), Ok(()));
    assert_eq!(
        round_trip(verifier.clone(), "correct horse "),
        Err(ScramError::WrongPassword)
    );
    assert_eq!(
        round_trip(verifier.clone(), ""),
        Err(ScramError::WrongPassword)
    );
    assert_eq!(
        round_trip(ScramVerifier::from_password("", b"s", 1), ""),
        Ok(())
    );
    assert_eq!(
        round_trip(
            ScramVerifier::from_password("pässwörd", b"s", 2),
            "pässwörd"
        ),
        Ok(())
    );
    assert_eq!(ScramError::WrongPassword.sqlstate(), "28P01");
}

/// A client's whole exchange with `password` against `verifier`: the ClientKey the server
/// recovers from its proof.
fn proven_client_key(verifier: &ScramVerifier, password: &str) -> [u8; 32] {
    let mut server = ScramServer::new(verifier.clone());
    let mut client = ScramClient::new(password);
    let sf = server.handle_client_first(&client.client_first()).unwrap();
    let cf = client.handle_server_first(&sf).unwrap();
    server.handle_client_final(&cf).unwrap();
    server.client_key().unwrap()
}

#[test]
fn keys_recovered_by_the_server_log_in_upstream() {
    let verifier = ScramVerifier::from_password("s3cret", b"pepper", 8);
    let client_key = proven_client_key(&verifier, "s3cret");
    let upstream = ScramClient::from_keys(client_key, verifier.server_key);
    assert_eq!(round_trip_with(upstream, verifier.clone()), Ok(()));
    let forged = ScramClient::from_keys([7; 32], verifier.server_key);
    assert_eq!(
        round_trip_with(forged, verifier),
        Err(ScramError::WrongPassword)
    );
}

/// Passthrough's key derivation: the ClientKey the server recovers from a proof (ClientProof
/// XOR ClientSignature) is the one PBKDF2 derives from the password, salt and iterations.
#[test]
fn recovered_client_key_is_the_password_derived_one() {
    // RFC 7677's exchange, replayed on the server side with its nonce.
    let mut server = ScramServer::with_nonce(rfc_verifier(), SERVER_NONCE);
    server.handle_client_first(CLIENT_FIRST.as_bytes()).unwrap();
    server.handle_client_final(CLIENT_FINAL.as_bytes()).unwrap();
    let keys = Keys::from_password(PASSWORD.as_bytes(), &B64.decode(SALT).unwrap(), 4096);
    assert_eq!(server.client_key(), Some(keys.client_key));
    assert_eq!(rfc_verifier().server_key, keys.server_key);
    assert_eq!(sha256(&keys.client_key), rfc_verifier().stored_key);

    // A verifier PostgreSQL 15 stored: a client with the password logs in against it, and the
    // key recovered logs in to a server holding the same verifier, without the password.
    let stored = ScramVerifier::parse(PG15_PENCIL).unwrap();
    let client_key = proven_client_key(&stored, PASSWORD);
    let derived = Keys::from_password(PASSWORD.as_bytes(), &stored.salt, stored.iterations);
    assert_eq!(client_key, derived.client_key);
    assert_eq!(
        round_trip_with(ScramClient::passthrough(client_key, &stored), stored),
        Ok(())
    );
}

#[test]
fn passthrough_stops_at_another_verifier() {
    let ours = ScramVerifier::from_password("s3cret", b"pepper", 8);
    let key = proven_client_key(&ours, "s3cret");
    // Same password, set on the server separately: another salt, or other iterations.
    for theirs in [
        ScramVerifier::from_password("s3cret", b"paprika", 8),
        ScramVerifier::from_password("s3cret", b"pepper", 9),
    ] {
        assert_eq!(
            round_trip_with(ScramClient::passthrough(key, &ours), theirs),
            Err(ScramError::VerifierMismatch)
        );
    }
    assert_eq!(ScramError::VerifierMismatch.sqlstate(), "28000");
    // Without the check the server is the one to refuse.
    let other = ScramVerifier::from_password("s3cret", b"paprika", 8);
    assert_eq!(
        round_trip_with(ScramClient::from_keys(key, ours.server_key), other),
        Err(ScramError::WrongPassword)
    );
}

#[test]
fn server_gs2_handling() {
    let first = |msg: &str| {
        ScramServer::with_nonce(rfc_verifier(), "x").handle_client_first(msg.as_bytes())
    };
    assert!(first("n,,n=,r=abc").is_ok());
    assert!(first("y,,n=,r=abc").is_ok());
    assert!(first("n,,n=user,r=abc,x=ext").is_ok());
    assert_eq!(
        first("p=tls-server-end-point,,n=,r=abc"),
        Err(ScramError::ChannelBindingUnsupported)
    );
    assert!(ScramError::ChannelBindingUnsupported
        .to_string()
        .contains("TLS"));
    for bad in [
        "",
        "n",
        "n,",
        "x,,n=,r=abc",
        "n,a=admin,n=,r=abc",
        "n,,r=abc",
        "n,,n=",
        "n,,n=,r=",
        "n,,n=,r=a b",
        "n,,m=ext,n=,r=abc",
        "n,,n=,x=abc",
        // A multi-byte character where the gs2 header's ',' belongs (byte 3 inside it).
        "n,\u{e9},n=,r=abc",
        "y\u{20ac},n=,r=abc",
    ] {
        assert!(
            matches!(first(bad), Err(ScramError::Malformed(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        ScramServer::new(rfc_verifier()).handle_client_first(b"n,,n=,r=\xff"),
        Err(ScramError::Malformed(_))
    ));
    let huge = format!("n,,n=,r={}", "a".repeat(MAX_MESSAGE_LEN));
    assert!(matches!(first(&huge), Err(ScramError::Malformed(_))));
}

#[test]
fn server_client_final_checks() {
    let start = |gs2: &str| {
        let mut s = ScramServer::with_nonce(rfc_verifier(), SERVER_NONCE);
        s.handle_client_first(format!("{gs2}n=user,r={CLIENT_NONCE}").as_bytes())
            .unwrap();
        s
    };
    let nonce = format!("{CLIENT_NONCE}{SERVER_NONCE}");
    let proof = "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    // c= must echo the gs2 header actually sent ("eSws" is base64 of "y,,").
    assert!(matches!(
        start("y,,").handle_client_final(CLIENT_FINAL.as_bytes()),
        Err(ScramError::Malformed(_))
    ));
    assert_eq!(
        start("n,,").handle_client_final(format!("c=biws,r={CLIENT_NONCE}xx,{proof}").as_bytes()),
        Err(ScramError::NonceMismatch)
    );
    // The proof signs the whole message, extensions included.
    assert_eq!(
        start("n,,").handle_client_final(format!("c=biws,r={nonce},x=1,{proof}").as_bytes()),
        Err(ScramError::WrongPassword)
    );
    for bad in [
        String::new(),
        format!("r={nonce},{proof}"),
        format!("c=biws,{proof}"),
        format!("c=biws,r={nonce}"),
        format!("c=biws,r={nonce},p=short"),
        format!("c=biws,r={nonce},p=!!!"),
        format!("c=bi,r={nonce},{proof}"),
    ] {
        assert!(
            matches!(
                start("n,,").handle_client_final(bad.as_bytes()),
                Err(ScramError::Malformed(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        ScramServer::new(rfc_verifier()).handle_client_final(CLIENT_FINAL.as_bytes()),
        Err(ScramError::OutOfOrder)
    );
    let mut twice = start("n,,");
    assert_eq!(
        twice.handle_client_first(CLIENT_FIRST.as_bytes()),
        Err(ScramError::OutOfOrder)
    );
}

/// A client's whole exchange with channel binding, written out here (poolguard's own client does
/// not bind): `gs2` is the header it sends, `cbind` the binding data it puts after it in `c=`.
fn plus_exchange(
    server: &mut ScramServer,
    password: &str,
    gs2: &str,
    cbind: &[u8],
) -> Result<Vec<u8>, ScramError> {
    let bare = "n=,r=clientnonce";
    let server_first = server.handle_client_first(format!("{gs2}{bare}").as_bytes())?;
    let server_first = String::from_utf8(server_first).unwrap();
    let mut fields = server_first.split(',');
    let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
    let salt = B64
        .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
        .unwrap();
    let iterations = fields.next().unwrap().strip_prefix("i=").unwrap();
    let keys = Keys::from_password(password.as_bytes(), &salt, iterations.parse().unwrap());
    let mut c = gs2.as_bytes().to_vec();
    c.extend_from_slice(cbind);
    let without_proof = format!("c={},r={nonce}", B64.encode(&c));
    let auth = auth_message(bare, &server_first, &without_proof);
    let proof = xor(&keys.client_key, &hmac(&sha256(&keys.client_key), &auth));
    server.handle_client_final(format!("{without_proof},p={}", B64.encode(proof)).as_bytes())
}

#[test]
fn channel_binding_tls_server_end_point() {
    let verifier = ScramVerifier::from_password("pw", b"salt", 2);
    let data = vec![0xab; 32];
    let plus = || ScramServer::new(verifier.clone()).with_channel_binding(data.clone(), true);
    let plain = || ScramServer::new(verifier.clone()).with_channel_binding(data.clone(), false);
    let bound = "p=tls-server-end-point,,";
    // SCRAM-SHA-256-PLUS with the connection's binding data.
    let mut s = plus();
    assert!(plus_exchange(&mut s, "pw", bound, &data).is_ok());
    assert!(s.is_done());
    // Other binding data (another certificate: a man in the middle) fails at c=.
    assert!(matches!(
        plus_exchange(&mut plus(), "pw", bound, &[0xcd; 32]),
        Err(ScramError::Malformed(_))
    ));
    // Binding data left out of c= fails the same way.
    assert!(matches!(
        plus_exchange(&mut plus(), "pw", bound, &[]),
        Err(ScramError::Malformed(_))
    ));
    // PLUS chosen, but no binding in the message; or another binding type.
    for gs2 in ["n,,", "y,,", "p=tls-unique,,", "p=,,"] {
        assert!(
            matches!(
                plus_exchange(&mut plus(), "pw", gs2, &[]),
                Err(ScramError::Malformed(_))
            ),
            "{gs2}"
        );
    }
    // Wrong password with the right binding is still a wrong password.
    assert_eq!(
        plus_exchange(&mut plus(), "nope", bound, &data),
        Err(ScramError::WrongPassword)
    );
    // PLUS offered, plain SCRAM chosen: "n" is fine (the client does not bind), "y" is the
    // downgrade RFC 5802 §6 refuses, "p" contradicts the mechanism.
    assert!(plus_exchange(&mut plain(), "pw", "n,,", &[]).is_ok());
    assert_eq!(
        plus_exchange(&mut plain(), "pw", "y,,", &[]),
        Err(ScramError::ChannelBindingDowngrade)
    );
    assert_eq!(ScramError::ChannelBindingDowngrade.sqlstate(), "08P01");
    assert!(matches!(
        plus_exchange(&mut plain(), "pw", bound, &data),
        Err(ScramError::Malformed(_))
    ));
    // Without TLS nothing changed: "y" is fine, "p" unsupported.
    let mut no_tls = ScramServer::new(verifier.clone());
    assert!(plus_exchange(&mut no_tls, "pw", "y,,", &[]).is_ok());
    assert_eq!(
        plus_exchange(&mut ScramServer::new(verifier), "pw", bound, &data),
        Err(ScramError::ChannelBindingUnsupported)
    );
}

#[test]
fn client_rejects_hostile_server_first() {
    let reply =
        |msg: &str| ScramClient::with_nonce("pw", "abc").handle_server_first(msg.as_bytes());
    assert!(reply("r=abcdef,s=c2FsdA==,i=1").is_ok());
    assert!(reply("r=abcdef,s=c2FsdA==,i=1000000,x=ext").is_ok());
    assert_eq!(
        reply("r=abc,s=c2FsdA==,i=1"),
        Err(ScramError::NonceMismatch)
    );
    assert_eq!(
        reply("r=xyzdef,s=c2FsdA==,i=1"),
        Err(ScramError::NonceMismatch)
    );
    assert_eq!(
        reply("r=abcdef,s=c2FsdA==,i=0"),
        Err(ScramError::IterationsOutOfRange(0))
    );
    assert_eq!(
        reply("r=abcdef,s=c2FsdA==,i=1000001"),
        Err(ScramError::IterationsOutOfRange(1_000_001))
    );
    assert_eq!(
        reply("r=abcdef,s=c2FsdA==,i=99999999999999999999999"),
        Err(ScramError::IterationsOutOfRange(u64::MAX))
    );
    for bad in [
        "",
        "m=x,r=abcdef,s=c2FsdA==,i=1",
        "r=abcdef",
        "r=abcdef,s=,i=1",
        "r=abcdef,s=!!,i=1",
        "r=abcdef,s=c2FsdA==",
        "r=abcdef,s=c2FsdA==,i=",
        "r=abcdef,s=c2FsdA==,i=-1",
        "r=abcdef,s=c2FsdA==,i=+1",
        "s=c2FsdA==,r=abcdef,i=1",
        "r=abc de,s=c2FsdA==,i=1",
    ] {
        assert!(
            matches!(reply(bad), Err(ScramError::Malformed(_))),
            "{bad:?}"
        );
    }
    let mut client = ScramClient::with_nonce("pw", "abc");
    assert_eq!(
        client.verify_server_final(SERVER_FINAL.as_bytes()),
        Err(ScramError::OutOfOrder)
    );
    client
        .handle_server_first(b"r=abcdef,s=c2FsdA==,i=1")
        .unwrap();
    assert_eq!(
        client.handle_server_first(b"r=abcdef,s=c2FsdA==,i=1"),
        Err(ScramError::OutOfOrder)
    );
}

#[test]
fn client_server_final_errors() {
    let mut client = ScramClient::with_nonce(PASSWORD, CLIENT_NONCE).with_user("user");
    client.handle_server_first(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(
        client.verify_server_final(b"e=invalid-proof"),
        Err(ScramError::ServerError("invalid-proof".into()))
    );
    assert!(matches!(
        client.verify_server_final(b"x=1"),
        Err(ScramError::Malformed(_))
    ));
    assert!(matches!(
        client.verify_server_final(b"v=!!"),
        Err(ScramError::Malformed(_))
    ));
    assert_eq!(
        client.verify_server_final(b"v=AAAA"),
        Err(ScramError::ServerSignatureMismatch)
    );
}

#[test]
fn user_names_are_escaped() {
    let c = ScramClient::with_nonce("pw", "n").with_user("a=b,c");
    assert_eq!(c.client_first(), b"n,,n=a=3Db=2Cc,r=n");
    assert!(ScramClient::new("pw")
        .client_first()
        .starts_with(b"n,,n=,r="));
}

#[test]
fn constant_time_eq_basics() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(constant_time_eq(b"", b""));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_input_never_panics(a in proptest::collection::vec(any::<u8>(), 0..128),
                                 b in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut server = ScramServer::new(ScramVerifier::from_password("pw", b"salt", 1));
        let _ = server.handle_client_first(&a);
        let _ = server.handle_client_final(&b);
        let mut client = ScramClient::new("pw");
        let _ = client.handle_server_first(&a);
        let _ = client.verify_server_final(&b);
        let _ = ScramVerifier::parse(&String::from_utf8_lossy(&a));
        for plus in [false, true] {
            let mut bound = ScramServer::new(ScramVerifier::from_password("pw", b"salt", 1))
                .with_channel_binding(b.clone(), plus);
            let _ = bound.handle_client_first(&a);
            let _ = bound.handle_client_final(&b);
        }
    }

    #[test]
    fn gs2_headers_never_panic(flag in "[npy]?", kind in "[=a-z,-]{0,24}", rest in ".{0,16}",
                               plus in any::<bool>()) {
        let mut server = ScramServer::with_nonce(ScramVerifier::from_password("pw", b"s", 1), "x")
            .with_channel_binding(vec![1; 32], plus);
        let _ = server.handle_client_first(format!("{flag}{kind},n=,r=a{rest}").as_bytes());
    }

    #[test]
    fn structured_input_never_panics(nonce in "[!-~]{0,12}", salt in "[A-Za-z0-9+/=]{0,12}",
                                     iter in "[0-9-]{0,4}", tail in ".{0,12}") {
        let mut client = ScramClient::with_nonce("pw", "ab");
        let server_first = format!("r=ab{nonce},s={salt},i={iter}{tail}");
        let _ = client.handle_server_first(server_first.as_bytes());
        let mut server = ScramServer::with_nonce(ScramVerifier::from_password("pw", b"s", 1), "x");
        if server.handle_client_first(format!("n,,n=,r={nonce}").as_bytes()).is_ok() {
            let _ = server.handle_client_final(
                format!("c=biws,r={nonce}x,p={salt}{tail}").as_bytes());
        }
    }
}
