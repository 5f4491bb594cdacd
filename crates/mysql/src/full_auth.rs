//! `caching_sha2_password` full authentication, both sides, with no I/O: the RSA key pair a
//! server (poolguard towards its clients) hands out and decrypts with, the server public key a
//! client (poolguard towards MySQL 8) encrypts with, and the two small state machines of the
//! exchange after AuthMoreData `0x04` ("perform full authentication").
//!
//! The exchange (MySQL's "caching_sha2_password information" and Protocol::AuthMoreData):
//! - over a secure transport (TLS) the client sends the password in clear, NUL-terminated;
//! - otherwise the client either sends `0x02` (request the public key), gets AuthMoreData with
//!   the PEM key, and then sends `RSA-OAEP(SHA-1, MGF1-SHA-1)` of the NUL-terminated password
//!   XORed with the scramble (repeated), or sends that ciphertext at once with a key it has.
//!
//! Invariants:
//! - nothing here panics or allocates from a length on the wire: a key is at most
//!   [`MAX_PUBLIC_KEY_PEM`] bytes of PEM and 2048..=8192 bits, a ciphertext must be exactly the
//!   key's size before any arithmetic is done on it;
//! - RSA is rsa 0.10 (pure Rust, constant-time big integers, blinded decryption): a client can
//!   send poolguard ciphertexts of its choosing, so the private-key operation must not leak
//!   timing (the Marvin attack on 0.9, RUSTSEC-2023-0071);
//! - a decryption or padding failure is one opaque outcome (`None`), never a reason told to
//!   the peer: OAEP error details are a padding oracle.

use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{PrivateKey, PublicKey};
use sha1_oaep::Sha1;

use crate::auth::{
    CACHING_SHA2_FAST_AUTH_SUCCESS, CACHING_SHA2_PERFORM_FULL_AUTH, CACHING_SHA2_REQUEST_PUBLIC_KEY,
};

/// Largest PEM public key accepted from a server (an 8192-bit SPKI key is about 1.5 KiB).
pub const MAX_PUBLIC_KEY_PEM: usize = 16 * 1024;
/// Smallest RSA modulus poolguard encrypts a password to, or decrypts with (MySQL's own
/// generated keys are 2048 bits).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted (bounds the work one login can cause).
pub const MAX_RSA_BITS: usize = 8192;
/// Size of the key pair poolguard generates when none is configured, as MySQL does.
pub const GENERATED_RSA_BITS: usize = 2048;

/// Why a key could not be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("public key of {0} bytes is larger than {MAX_PUBLIC_KEY_PEM} bytes")]
    TooLarge(usize),
    #[error("not a PEM RSA public key (\"BEGIN PUBLIC KEY\" or \"BEGIN RSA PUBLIC KEY\")")]
    NotPublicKey,
    #[error("not a PEM RSA private key (PKCS#8 \"BEGIN PRIVATE KEY\" or PKCS#1 \"BEGIN RSA PRIVATE KEY\")")]
    NotPrivateKey,
    #[error("RSA key of {0} bits: poolguard needs {MIN_RSA_BITS} to {MAX_RSA_BITS} bits")]
    Size(usize),
    #[error("password of {len} bytes does not fit a {bits}-bit RSA key with OAEP padding")]
    PasswordTooLong { len: usize, bits: usize },
    #[error("RSA: {0}")]
    Rsa(String),
}

/// `(password || NUL) XOR scramble`, the scramble repeated as needed: what is RSA-encrypted.
pub fn xor_with_scramble(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(password.len().saturating_add(1));
    out.extend_from_slice(password);
    out.push(0);
    if scramble.is_empty() {
        return out;
    }
    for (b, s) in out.iter_mut().zip(scramble.iter().cycle()) {
        *b ^= s;
    }
    out
}

/// The cleartext full-auth packet: the password, NUL-terminated (only ever over TLS).
pub fn cleartext_packet(password: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(password.len().saturating_add(1));
    out.extend_from_slice(password);
    out.push(0);
    out
}

fn check_bits(bits: usize) -> Result<(), KeyError> {
    if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::Size(bits))
    }
}

/// A server's RSA public key, as a client uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPublicKey(PublicKey);

impl ServerPublicKey {
    /// Parses a PEM public key, SPKI (what MySQL sends and writes to `public_key.pem`) or PKCS#1.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        if pem.len() > MAX_PUBLIC_KEY_PEM {
            return Err(KeyError::TooLarge(pem.len()));
        }
        let text = std::str::from_utf8(pem).map_err(|_| KeyError::NotPublicKey)?;
        // Servers send the file as is: trailing NULs or whitespace are not part of the PEM.
        let text = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        let key = PublicKey::from_public_key_pem(text)
            .or_else(|_| PublicKey::from_pkcs1_pem(text))
            .map_err(|_| KeyError::NotPublicKey)?;
        check_bits(key.size().saturating_mul(8))?;
        Ok(ServerPublicKey(key))
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.0.size().saturating_mul(8)
    }

    /// What a client sends without TLS: RSA-OAEP(SHA-1) of `(password || NUL) XOR scramble`.
    pub fn encrypt_password(&self, password: &[u8], scramble: &[u8]) -> Result<Vec<u8>, KeyError> {
        // OAEP with SHA-1 carries at most k - 2*20 - 2 bytes.
        let room = self.0.size().saturating_sub(42);
        if password.len() >= room {
            return Err(KeyError::PasswordTooLong {
                len: password.len(),
                bits: self.bits(),
            });
        }
        let plain = xor_with_scramble(password, scramble);
        self.0
            .oaep_encrypt::<Sha1>(&plain)
            .map_err(|e| KeyError::Rsa(e.to_string()))
    }
}

/// poolguard's own RSA key pair for clients without TLS, with its public half in PEM.
pub struct RsaKeyPair {
    private: PrivateKey,
    public_pem: String,
}

impl std::fmt::Debug for RsaKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("RsaKeyPair")
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

impl RsaKeyPair {
    /// A fresh key pair from the operating system's RNG ([`GENERATED_RSA_BITS`]). Takes tens of
    /// milliseconds to seconds: call it off the async runtime's threads.
    pub fn generate() -> Result<Self, KeyError> {
        let private = PrivateKey::new(&mut getrandom_sys::SysRng, GENERATED_RSA_BITS)
            .map_err(|e| KeyError::Rsa(e.to_string()))?;
        Self::from_private(private)
    }

    /// Reads a PEM private key (PKCS#8 or PKCS#1).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let private = PrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| PrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| KeyError::NotPrivateKey)?;
        Self::from_private(private)
    }

    fn from_private(private: PrivateKey) -> Result<Self, KeyError> {
        check_bits(private.size().saturating_mul(8))?;
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Rsa(e.to_string()))?;
        Ok(RsaKeyPair {
            private,
            public_pem,
        })
    }

    /// Modulus size in bits.
    pub fn bits(&self) -> usize {
        self.private.size().saturating_mul(8)
    }

    /// The public key as `-----BEGIN PUBLIC KEY-----` PEM, what a `0x02` request gets.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Recovers the password from a client's ciphertext made with `scramble`: `None` for
    /// anything that is not a valid OAEP encryption to this key of a NUL-terminated password.
    pub fn decrypt_password(&self, ciphertext: &[u8], scramble: &[u8]) -> Option<Vec<u8>> {
        // Checked before any arithmetic: a wrong length is not worth a private-key operation.
        if ciphertext.len() != self.private.size() {
            return None;
        }
        let plain = self.private.oaep_decrypt::<Sha1>(ciphertext).ok()?;
        // XOR is its own inverse: undo the scramble, then the password ends at its NUL.
        let mut unmasked = xor_with_scramble(&plain, scramble);
        // xor_with_scramble appended a NUL (masked) of its own; drop it, then the client's.
        unmasked.pop();
        match unmasked.pop() {
            Some(0) => Some(unmasked),
            _ => None,
        }
    }
}

/// What the client side does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep {
    /// Send this payload (the next sequence id).
    Send(Vec<u8>),
    /// Nothing to send: an OK (or ERR) follows.
    AwaitResult,
}

/// Why the client side of the exchange stopped.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FullAuthError {
    #[error("unexpected caching_sha2_password data from the server ({0} bytes)")]
    Unexpected(usize),
    #[error("the server's RSA public key: {0}")]
    Key(#[from] KeyError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// The scramble was sent; the server answers 0x03 or 0x04.
    Scrambled,
    /// 0x03 arrived: only OK/ERR may follow.
    FastDone,
    /// 0x02 was sent: the next AuthMoreData is the key.
    KeyRequested,
    /// The full password went out: only OK/ERR may follow.
    Sent,
}

/// The client side (poolguard logging in to a MySQL 8 server) after its scramble, fed each
/// AuthMoreData payload (without the 0x01 header). A fresh one per scramble: an auth switch to
/// caching_sha2 starts over with the switch's nonce.
#[derive(Debug, Clone)]
pub struct Sha2Client {
    scramble: Vec<u8>,
    /// The connection is TLS: the password may go in clear.
    secure: bool,
    /// A configured server key: no need to ask (and no trust in what the wire says).
    known_key: Option<ServerPublicKey>,
    state: ClientState,
}

impl Sha2Client {
    pub fn new(scramble: &[u8], secure: bool, known_key: Option<ServerPublicKey>) -> Self {
        Sha2Client {
            scramble: scramble.to_vec(),
            secure,
            known_key,
            state: ClientState::Scrambled,
        }
    }

    /// Whether the exchange took the full path and asked the server for its key.
    pub fn requested_key(&self) -> bool {
        self.state == ClientState::KeyRequested
    }

    /// Answers one AuthMoreData payload.
    pub fn on_more_data(
        &mut self,
        data: &[u8],
        password: &[u8],
    ) -> Result<ClientStep, FullAuthError> {
        match (self.state, data) {
            (ClientState::Scrambled, [CACHING_SHA2_FAST_AUTH_SUCCESS]) => {
                self.state = ClientState::FastDone;
                Ok(ClientStep::AwaitResult)
            }
            (ClientState::Scrambled, [CACHING_SHA2_PERFORM_FULL_AUTH]) => {
                if self.secure {
                    self.state = ClientState::Sent;
                    return Ok(ClientStep::Send(cleartext_packet(password)));
                }
                if let Some(key) = &self.known_key {
                    let sealed = key.encrypt_password(password, &self.scramble)?;
                    self.state = ClientState::Sent;
                    return Ok(ClientStep::Send(sealed));
                }
                self.state = ClientState::KeyRequested;
                Ok(ClientStep::Send(vec![CACHING_SHA2_REQUEST_PUBLIC_KEY]))
            }
            (ClientState::KeyRequested, pem) => {
                let key = ServerPublicKey::from_pem(pem)?;
                let sealed = key.encrypt_password(password, &self.scramble)?;
                self.state = ClientState::Sent;
                Ok(ClientStep::Send(sealed))
            }
            (_, other) => Err(FullAuthError::Unexpected(other.len())),
        }
    }
}

/// What the server side does with the client's packet after `0x04` (or after the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// The client asked for the public key: send it as AuthMoreData and read again.
    SendKey,
    /// The password the client proved to hold; check it against the account.
    Password(Vec<u8>),
    /// Not a password poolguard can read (no TLS and no valid ciphertext, a second key
    /// request): refuse as for a wrong password.
    Refuse(&'static str),
}

/// The server side's reading of one client packet in the full path. `key_sent`: the key went
/// out already (a second request is refused). `key` is `None` when poolguard has no key pair.
pub fn server_full_auth(
    payload: &[u8],
    secure: bool,
    key_sent: bool,
    key: Option<&RsaKeyPair>,
    scramble: &[u8],
) -> ServerStep {
    if secure {
        return ServerStep::Password(crate::auth::cleartext_password(payload).to_vec());
    }
    let Some(key) = key else {
        return ServerStep::Refuse("no TLS and no RSA key");
    };
    if payload == [CACHING_SHA2_REQUEST_PUBLIC_KEY] {
        return if key_sent {
            ServerStep::Refuse("public key requested twice")
        } else {
            ServerStep::SendKey
        };
    }
    match key.decrypt_password(payload, scramble) {
        Some(pw) => ServerStep::Password(pw),
        // Some clients send the password in clear when they merely asked for TLS and did not
        // get it: said apart in the log only, refused all the same.
        None if payload.last() == Some(&0) && payload.len() != key.bits() / 8 => {
            ServerStep::Refuse("a cleartext password on a connection without TLS")
        }
        None => ServerStep::Refuse("not an RSA-OAEP encrypted password for poolguard's key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// One key for the module: generation is the slow part.
    fn pair() -> &'static RsaKeyPair {
        static PAIR: OnceLock<RsaKeyPair> = OnceLock::new();
        PAIR.get_or_init(|| RsaKeyPair::generate().unwrap())
    }

    fn scramble() -> Vec<u8> {
        (0x21u8..0x21 + 20).collect()
    }

    #[test]
    fn xor_repeats_the_scramble_and_inverts() {
        let s = [1u8, 2, 3];
        let x = xor_with_scramble(b"abcdefg", &s);
        assert_eq!(x.len(), 8);
        assert_eq!(x[0], b'a' ^ 1);
        assert_eq!(x[3], b'd' ^ 1);
        assert_eq!(x[7], 2, "the NUL, masked with the scramble's next byte");
        assert_eq!(xor_with_scramble(b"", &[]), vec![0]);
    }

    #[test]
    fn rsa_round_trip_through_pem() {
        let pair = pair();
        assert_eq!(pair.bits(), 2048);
        assert!(pair.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        // What a server sends may have a trailing NUL.
        let mut wire = pair.public_pem().as_bytes().to_vec();
        wire.push(0);
        let key = ServerPublicKey::from_pem(&wire).unwrap();
        let sealed = key.encrypt_password(b"s3cret", &scramble()).unwrap();
        assert_eq!(sealed.len(), 256);
        assert_eq!(
            pair.decrypt_password(&sealed, &scramble()),
            Some(b"s3cret".to_vec())
        );
        // Another scramble does not give the password back (the NUL moves or vanishes).
        assert_ne!(
            pair.decrypt_password(&sealed, &[0x41; 20]),
            Some(b"s3cret".to_vec())
        );
        // An empty password round-trips too.
        let sealed = key.encrypt_password(b"", &scramble()).unwrap();
        assert_eq!(pair.decrypt_password(&sealed, &scramble()), Some(vec![]));
    }

    #[test]
    fn bad_ciphertexts_are_none() {
        let pair = pair();
        assert_eq!(pair.decrypt_password(&[], &scramble()), None);
        assert_eq!(pair.decrypt_password(&[7; 255], &scramble()), None);
        assert_eq!(pair.decrypt_password(&[7; 256], &scramble()), None);
        assert_eq!(pair.decrypt_password(&[0xff; 256], &scramble()), None);
        assert_eq!(pair.decrypt_password(&[0; 4096], &scramble()), None);
        let key = ServerPublicKey::from_pem(pair.public_pem().as_bytes()).unwrap();
        let mut sealed = key.encrypt_password(b"pw", &scramble()).unwrap();
        sealed[100] ^= 1;
        assert_eq!(pair.decrypt_password(&sealed, &scramble()), None);
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(
            ServerPublicKey::from_pem(&vec![b'A'; MAX_PUBLIC_KEY_PEM + 1]),
            Err(KeyError::TooLarge(MAX_PUBLIC_KEY_PEM + 1))
        );
        assert_eq!(
            ServerPublicKey::from_pem(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
            ),
            Err(KeyError::NotPublicKey)
        );
        assert_eq!(
            ServerPublicKey::from_pem(&[0xff, 0xfe]),
            Err(KeyError::NotPublicKey)
        );
        assert!(matches!(
            RsaKeyPair::from_pem(pair().public_pem()),
            Err(KeyError::NotPrivateKey)
        ));
        let key = ServerPublicKey::from_pem(pair().public_pem().as_bytes()).unwrap();
        assert!(matches!(
            key.encrypt_password(&[b'x'; 300], &scramble()),
            Err(KeyError::PasswordTooLong {
                len: 300,
                bits: 2048
            })
        ));
    }

    #[test]
    fn client_fast_path_and_full_paths() {
        let pw = b"pw";
        let mut c = Sha2Client::new(&scramble(), false, None);
        assert_eq!(c.on_more_data(&[3], pw), Ok(ClientStep::AwaitResult));
        assert!(c.on_more_data(&[3], pw).is_err(), "0x03 twice");

        let mut c = Sha2Client::new(&scramble(), true, None);
        assert_eq!(
            c.on_more_data(&[4], pw),
            Ok(ClientStep::Send(b"pw\0".to_vec()))
        );
        assert!(c.on_more_data(&[4], pw).is_err());

        let mut c = Sha2Client::new(&scramble(), false, None);
        assert_eq!(c.on_more_data(&[4], pw), Ok(ClientStep::Send(vec![2])));
        assert!(c.requested_key());
        let ClientStep::Send(sealed) = c.on_more_data(pair().public_pem().as_bytes(), pw).unwrap()
        else {
            panic!("expected a ciphertext")
        };
        assert_eq!(
            pair().decrypt_password(&sealed, &scramble()),
            Some(b"pw".to_vec())
        );

        let known = ServerPublicKey::from_pem(pair().public_pem().as_bytes()).unwrap();
        let mut c = Sha2Client::new(&scramble(), false, Some(known));
        let ClientStep::Send(sealed) = c.on_more_data(&[4], pw).unwrap() else {
            panic!("expected a ciphertext")
        };
        assert_eq!(sealed.len(), 256);

        let mut c = Sha2Client::new(&scramble(), false, None);
        assert_eq!(c.on_more_data(&[9], pw), Err(FullAuthError::Unexpected(1)));
        let mut c = Sha2Client::new(&scramble(), false, None);
        c.on_more_data(&[4], pw).unwrap();
        assert!(matches!(
            c.on_more_data(b"garbage", pw),
            Err(FullAuthError::Key(KeyError::NotPublicKey))
        ));
    }

    #[test]
    fn server_steps() {
        let s = scramble();
        assert_eq!(
            server_full_auth(b"pw\0", true, false, None, &s),
            ServerStep::Password(b"pw".to_vec())
        );
        assert!(matches!(
            server_full_auth(b"pw\0", false, false, None, &s),
            ServerStep::Refuse(_)
        ));
        assert_eq!(
            server_full_auth(&[2], false, false, Some(pair()), &s),
            ServerStep::SendKey
        );
        assert!(matches!(
            server_full_auth(&[2], false, true, Some(pair()), &s),
            ServerStep::Refuse(_)
        ));
        // Cleartext without TLS is not accepted.
        assert_eq!(
            server_full_auth(b"pw\0", false, true, Some(pair()), &s),
            ServerStep::Refuse("a cleartext password on a connection without TLS")
        );
        let key = ServerPublicKey::from_pem(pair().public_pem().as_bytes()).unwrap();
        let sealed = key.encrypt_password(b"pw", &s).unwrap();
        assert_eq!(
            server_full_auth(&sealed, false, true, Some(pair()), &s),
            ServerStep::Password(b"pw".to_vec())
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let s = scramble();
            let _ = ServerPublicKey::from_pem(&data);
            let _ = server_full_auth(&data, false, false, Some(pair()), &s);
            let mut c = Sha2Client::new(&s, false, None);
            let _ = c.on_more_data(&data, b"pw");
            let _ = c.on_more_data(&data, b"pw");
        }
    }
}
