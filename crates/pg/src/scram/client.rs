//! The client side of one SCRAM-SHA-256 exchange: the proxy logging in to a PostgreSQL server.
//!
//! Invariants: the server's input is untrusted: its nonce must extend ours, its iteration count
//! must lie in `1..=MAX_ITERATIONS` before any PBKDF2 work; `Initial -> SentClientFinal`, with any
//! error or repeated call moving to `Failed`; the server's signature is compared in constant time.

use super::{
    attr, auth_message, constant_time_eq, hmac, message_str, random_nonce, sha256, valid_nonce,
    xor, Keys, ScramError, B64, MAX_ITERATIONS,
};
use base64::Engine as _;

/// One client-side exchange: send [`client_first`](Self::client_first) in a SASLInitialResponse,
/// answer the server-first, then check the server-final.
pub struct ScramClient {
    credential: Credential,
    nonce: String,
    /// SASL-escaped user name; PostgreSQL ignores it, so it is normally empty.
    user: String,
    state: State,
}

enum Credential {
    Password(Vec<u8>),
    /// Keys recovered from a client's proof; `expect` is the salt and iteration count of the
    /// verifier they belong to, when known: a server showing others stores another verifier,
    /// against which these keys cannot succeed.
    Keys {
        keys: Keys,
        expect: Option<(Vec<u8>, u32)>,
    },
}

enum State {
    Initial,
    SentClientFinal { server_signature: [u8; 32] },
    Failed,
}

impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Initial => "Initial",
            State::SentClientFinal { .. } => "SentClientFinal",
            State::Failed => "Failed",
        };
        f.debug_struct("ScramClient")
            .field("nonce", &self.nonce)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// An exchange proving knowledge of `password`, with a fresh random nonce.
    pub fn new(password: &str) -> Self {
        Self::with_nonce(password, &random_nonce())
    }

    /// An exchange using ClientKey and ServerKey directly instead of a password, e.g. those
    /// recovered by [`ScramServer::client_key`](super::ScramServer::client_key) and the client's
    /// verifier. Only works against a server storing that same verifier (salt and iterations).
    pub fn from_keys(client_key: [u8; 32], server_key: [u8; 32]) -> Self {
        ScramClient {
            credential: Credential::Keys {
                keys: Keys {
                    client_key,
                    server_key,
                },
                expect: None,
            },
            nonce: random_nonce(),
            user: String::new(),
            state: State::Initial,
        }
    }

    /// SCRAM passthrough: logs in with the ClientKey a client proved against `verifier` (see
    /// [`ScramServer::client_key`](super::ScramServer::client_key)) and the verifier's
    /// ServerKey. A server whose server-first shows another salt or iteration count stores
    /// another verifier: the exchange stops there with [`ScramError::VerifierMismatch`]
    /// instead of sending a proof bound to fail.
    pub fn passthrough(client_key: [u8; 32], verifier: &super::ScramVerifier) -> Self {
        let mut client = Self::from_keys(client_key, verifier.server_key);
        if let Credential::Keys { expect, .. } = &mut client.credential {
            *expect = Some((verifier.salt.clone(), verifier.iterations));
        }
        client
    }

    /// An exchange with a fixed client nonce (printable ASCII without ','): for test vectors and
    /// fuzzing only.
    #[doc(hidden)]
    pub fn with_nonce(password: &str, nonce: &str) -> Self {
        ScramClient {
            credential: Credential::Password(password.as_bytes().to_vec()),
            nonce: nonce.to_owned(),
            user: String::new(),
            state: State::Initial,
        }
    }

    /// Sets the user name sent in client-first (PostgreSQL ignores it): for test vectors.
    #[doc(hidden)]
    pub fn with_user(mut self, user: &str) -> Self {
        self.user = user.replace('=', "=3D").replace(',', "=2C");
        self
    }

    fn client_first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.nonce)
    }

    /// Client-first: `n,,n=,r=<nonce>` (no channel binding).
    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare()).into_bytes()
    }

    /// Handles server-first (`r=<nonce>,s=<salt>,i=<iterations>`); returns client-final.
    pub fn handle_server_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(
            std::mem::replace(&mut self.state, State::Failed),
            State::Initial
        ) {
            return Err(ScramError::OutOfOrder);
        }
        let server_first = message_str(msg)?;
        let mut parts = server_first.split(',');
        let mut first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extensions (m=) are not supported",
            ));
        }
        let nonce = attr(first.take(), b'r', "server-first lacks the nonce (r=)")?;
        if !valid_nonce(nonce) {
            return Err(ScramError::Malformed("server nonce is not printable"));
        }
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = attr(parts.next(), b's', "server-first lacks the salt (s=)")?;
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt is not valid base64"))?;
        if salt.is_empty() {
            return Err(ScramError::Malformed("salt is empty"));
        }
        let iterations = attr(
            parts.next(),
            b'i',
            "server-first lacks the iteration count (i=)",
        )?;
        if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ScramError::Malformed("iteration count is not a number"));
        }
        let iterations = iterations.parse::<u64>().unwrap_or(u64::MAX);
        let iterations = match u32::try_from(iterations) {
            Ok(i @ 1..=MAX_ITERATIONS) => i,
            _ => return Err(ScramError::IterationsOutOfRange(iterations)),
        };

        let keys = match &self.credential {
            Credential::Password(password) => Keys::from_password(password, &salt, iterations),
            Credential::Keys {
                expect: Some((want_salt, want_iterations)),
                ..
            } if *want_salt != salt || *want_iterations != iterations => {
                return Err(ScramError::VerifierMismatch);
            }
            Credential::Keys { keys, .. } => *keys,
        };
        // "biws" is base64("n,,"): no channel binding.
        let client_final_bare = format!("c=biws,r={nonce}");
        let auth = auth_message(&self.client_first_bare(), server_first, &client_final_bare);
        let stored_key = sha256(&keys.client_key);
        let proof = xor(&keys.client_key, &hmac(&stored_key, &auth));
        self.state = State::SentClientFinal {
            server_signature: hmac(&keys.server_key, &auth),
        };
        Ok(format!("{client_final_bare},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final (`v=<signature>`); `e=<reason>` becomes [`ScramError::ServerError`].
    pub fn verify_server_final(&self, msg: &[u8]) -> Result<(), ScramError> {
        let State::SentClientFinal { server_signature } = &self.state else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = message_str(msg)?;
        let first = msg.split(',').next();
        if let Ok(reason) = attr(first, b'e', "") {
            return Err(ScramError::ServerError(reason.to_owned()));
        }
        let signature = attr(first, b'v', "server-final lacks the signature (v=)")?;
        let signature = B64
            .decode(signature)
            .map_err(|_| ScramError::Malformed("server signature is not valid base64"))?;
        if constant_time_eq(&signature, server_signature) {
            Ok(())
        } else {
            Err(ScramError::ServerSignatureMismatch)
        }
    }
}
