//! SCRAM-SHA-256 (RFC 5802 / RFC 7677) as PostgreSQL uses it: the server side for the proxy's
//! clients ([`ScramServer`]), the client side for the proxy's own server connections
//! ([`ScramClient`]), and the stored verifier ([`ScramVerifier`]).
//!
//! PostgreSQL specifics: the user name in client-first is ignored (the startup packet's `user`
//! counts), and the client usually sends it empty; without TLS there is no channel binding, so the
//! gs2 header must be `n,,` or `y,,` and `p=...` is refused with a clear error; on TLS the server
//! side binds to `tls-server-end-point` (see [`ScramServer::with_channel_binding`]).
//!
//! Invariants: every exchange is a state machine that fails closed (after an error, or out of
//! order, it refuses to continue); secrets are compared in constant time; untrusted inputs are
//! bounded (message size, iteration count) before expensive work. Passwords are used as their UTF-8
//! bytes: SASLprep is not applied, which matches PostgreSQL for every ASCII password and for
//! non-ASCII ones that SASLprep leaves unchanged (NFKC-normalised, no non-ASCII spaces or invisible
//! characters).

mod client;
mod server;

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub use client::ScramClient;
pub use server::{ScramServer, TLS_SERVER_END_POINT};

/// The SASL mechanism name.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// The mechanism with channel binding (offered to clients on TLS).
pub const MECHANISM_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// Iteration count of verifiers built here (PostgreSQL's default `scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// Largest iteration count a client accepts from a server: more would let a hostile server make us
/// burn CPU.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Largest SCRAM message accepted (PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`).
pub const MAX_MESSAGE_LEN: usize = 65_535;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 18;
const STORED_PREFIX: &str = "SCRAM-SHA-256$";

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The peer's message does not follow RFC 5802's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// The client's proof does not match the verifier (SQLSTATE 28P01).
    #[error("password authentication failed")]
    WrongPassword,
    /// The client requires channel binding (`p=`), which needs TLS; this connection has none.
    #[error(
        "SCRAM channel binding was requested, but the connection does not use TLS; \
         connect with channel_binding=disable or prefer"
    )]
    ChannelBindingUnsupported,
    /// The client can bind to the channel but thinks poolguard cannot (`y` gs2 flag) while
    /// SCRAM-SHA-256-PLUS was offered: someone may have removed it from the offer (RFC 5802
    /// §6), so the exchange is refused.
    #[error(
        "SCRAM channel binding negotiation error: the client supports SCRAM channel binding \
         but thinks the server does not; however, this server does support channel binding"
    )]
    ChannelBindingDowngrade,
    /// The server's signature is wrong: it does not know the password (or is an impostor).
    #[error("SCRAM server signature mismatch: the server could not prove it knows the password")]
    ServerSignatureMismatch,
    /// The nonce echoed back is not the one of this exchange.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// The server asks for an iteration count outside `1..=MAX_ITERATIONS`.
    #[error("SCRAM iteration count {0} is outside the accepted range 1..={MAX_ITERATIONS}")]
    IterationsOutOfRange(u64),
    /// A message arrived in a state that does not expect it (or after a failure).
    #[error("SCRAM message out of order")]
    OutOfOrder,
    /// The server ended the exchange with `e=<reason>`.
    #[error("server rejected SCRAM authentication: {0}")]
    ServerError(String),
    /// Passthrough: the server's verifier has another salt or iteration count than the one
    /// the client proved its password against, so the client's keys cannot log in there.
    #[error(
        "the server stores another SCRAM verifier for this user (other salt or iteration \
         count) than the one poolguard checked the client against; SCRAM passthrough needs \
         the same verifier on both (take it from the server: auth_query, or pg_authid)"
    )]
    VerifierMismatch,
    /// A stored verifier string cannot be parsed.
    #[error("invalid SCRAM verifier: {0}")]
    InvalidVerifier(&'static str),
}

impl ScramError {
    /// The SQLSTATE to report to a client whose exchange failed this way: 28P01 (invalid_password)
    /// for a wrong password, 08P01 (protocol_violation) for a broken exchange, 28000
    /// (invalid_authorization_specification) otherwise.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            ScramError::WrongPassword => "28P01",
            ScramError::Malformed(_)
            | ScramError::ChannelBindingUnsupported
            | ScramError::ChannelBindingDowngrade
            | ScramError::NonceMismatch
            | ScramError::IterationsOutOfRange(_)
            | ScramError::OutOfOrder => "08P01",
            ScramError::ServerSignatureMismatch
            | ScramError::ServerError(_)
            | ScramError::VerifierMismatch
            | ScramError::InvalidVerifier(_) => "28000",
        }
    }
}

/// What a server stores instead of a password: enough to verify a client, not to impersonate one.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    /// PBKDF2 iteration count.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: Vec<u8>,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Derives the verifier of `password` (an iteration count of 0 is taken as 1).
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let iterations = iterations.max(1);
        let keys = Keys::from_password(password.as_bytes(), salt, iterations);
        ScramVerifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&keys.client_key),
            server_key: keys.server_key,
        }
    }

    /// Parses PostgreSQL's stored form,
    /// `SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>`.
    pub fn parse(s: &str) -> Result<Self, ScramError> {
        let bad = ScramError::InvalidVerifier;
        let rest = s
            .strip_prefix(STORED_PREFIX)
            .ok_or(bad("does not start with \"SCRAM-SHA-256$\""))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or(bad("missing '$' before the keys"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or(bad("missing ':' between iterations and salt"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or(bad("missing ':' between StoredKey and ServerKey"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| bad("iteration count is not a number"))?;
        if iterations == 0 {
            return Err(bad("iteration count is 0"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| bad("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(bad("salt is empty"));
        }
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: decode_key(stored_key).ok_or(bad("StoredKey is not 32 bytes of base64"))?,
            server_key: decode_key(server_key).ok_or(bad("ServerKey is not 32 bytes of base64"))?,
        })
    }

    /// A verifier for a configured secret: parsed if it is a stored verifier (starts with
    /// `SCRAM-SHA-256$`), else derived from it as a password with a random 16-byte salt and 4096
    /// iterations.
    pub fn for_secret(secret: &str) -> Result<Self, ScramError> {
        if secret.starts_with(STORED_PREFIX) {
            Self::parse(secret)
        } else {
            let mut salt = [0u8; SALT_LEN];
            rand::thread_rng().fill_bytes(&mut salt);
            Ok(Self::from_password(secret, &salt, DEFAULT_ITERATIONS))
        }
    }
}

impl ScramVerifier {
    /// True if `client_key` is this verifier's ClientKey (`SHA-256(ClientKey) = StoredKey`),
    /// compared in constant time: a key that logs in wherever this verifier is stored.
    pub fn holds_client_key(&self, client_key: &[u8; 32]) -> bool {
        constant_time_eq(&sha256(client_key), &self.stored_key)
    }

    /// A verifier that stands in for a user who does not exist, so that the exchange looks the
    /// same as for one who does and fails only at the proof (28P01, like a wrong password).
    ///
    /// Everything is derived with HMAC-SHA-256 from `key` (a secret the caller makes at start and
    /// never shows) and the user name: the salt is the same on every try for one name, as a real
    /// user's is, and differs between names and between keys; it has the length of the salts
    /// built here ([`ScramVerifier::for_secret`], PostgreSQL's own default length). StoredKey is
    /// derived too, from a label no client knows, so no proof matches it. No PBKDF2 runs: an
    /// unknown user costs what a known one costs.
    pub fn stand_in(key: &[u8], user: &str, iterations: u32) -> Self {
        let derive = |label: &[u8]| {
            let mut input = Vec::new();
            input.extend_from_slice(label);
            input.push(0);
            input.extend_from_slice(user.as_bytes());
            hmac(key, &input)
        };
        ScramVerifier {
            iterations: iterations.max(1),
            salt: derive(b"poolguard stand-in salt")
                .into_iter()
                .take(SALT_LEN)
                .collect(),
            stored_key: derive(b"poolguard stand-in StoredKey"),
            server_key: derive(b"poolguard stand-in ServerKey"),
        }
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{STORED_PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl fmt::Debug for ScramVerifier {
    // The keys stay out of logs: StoredKey and ServerKey together let one pose as the server.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .field("salt", &B64.encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// ClientKey and ServerKey: what a client needs to authenticate (the password is only a way to
/// derive them).
#[derive(Clone, Copy)]
struct Keys {
    client_key: [u8; 32],
    server_key: [u8; 32],
}

impl Keys {
    fn from_password(password: &[u8], salt: &[u8], iterations: u32) -> Self {
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted);
        Keys {
            client_key: hmac(&salted, b"Client Key"),
            server_key: hmac(&salted, b"Server Key"),
        }
    }
}

fn decode_key(s: &str) -> Option<[u8; 32]> {
    B64.decode(s).ok()?.try_into().ok()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail; the fallback only keeps the code free
    // of unwrap.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().into()
        }
        Err(_) => [0; 32],
    }
}

/// The three parts of the AuthMessage both sides sign.
fn auth_message(client_first_bare: &str, server_first: &str, client_final_bare: &str) -> Vec<u8> {
    [client_first_bare, server_first, client_final_bare]
        .join(",")
        .into_bytes()
}

fn xor(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Compares without an early exit, so timing does not reveal how many leading bytes match.
/// (Lengths are public in every use here.)
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A fresh random nonce: 18 random bytes, base64 (printable, no ',').
fn random_nonce() -> String {
    let mut raw = [0u8; NONCE_LEN];
    rand::thread_rng().fill_bytes(&mut raw);
    B64.encode(raw)
}

/// RFC 5802: a nonce is printable ASCII except ','.
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Decodes a whole message as UTF-8 after bounding its size.
fn message_str(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::Malformed("message longer than 65535 bytes"));
    }
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("message is not UTF-8"))
}

/// The value of attribute `key` (`"<key>=<value>"`), or `Malformed(what)`.
fn attr<'a>(part: Option<&'a str>, key: u8, what: &'static str) -> Result<&'a str, ScramError> {
    part.and_then(|p| p.strip_prefix(char::from(key)))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(ScramError::Malformed(what))
}

#[cfg(test)]
mod tests;
