//! The server side of one SCRAM-SHA-256 exchange: the proxy authenticating a client.
//!
//! Invariants: `Initial -> SentServerFirst -> Done`, any error or out-of-order call moves to
//! `Failed` for good; the proof is checked by recomputing StoredKey and comparing in constant time;
//! the server-final signature is only produced after the proof checked out.
//!
//! Channel binding (RFC 5802 §6, `tls-server-end-point` of RFC 5929, as PostgreSQL does it): on
//! TLS the proxy offers SCRAM-SHA-256-PLUS besides SCRAM-SHA-256 and builds the exchange with
//! [`ScramServer::with_channel_binding`]. Then the client's gs2 header must agree with the
//! mechanism it chose (`p=tls-server-end-point` with PLUS, `n` or `y` without), a `y` is refused
//! (the client could bind but thinks we cannot: someone stripped PLUS from our offer), and the
//! client-final `c=` must carry the gs2 header followed by this connection's binding data.

use super::{
    attr, auth_message, constant_time_eq, hmac, message_str, random_nonce, sha256, valid_nonce,
    xor, ScramError, ScramVerifier, B64,
};
use base64::Engine as _;

/// One server-side exchange. Feed it the client's SASLInitialResponse data, then its SASLResponse.
#[derive(Debug)]
pub struct ScramServer {
    verifier: ScramVerifier,
    server_nonce: String,
    binding: Binding,
    state: State,
}

/// What this exchange knows about channel binding.
#[derive(Debug)]
enum Binding {
    /// No TLS: nothing to bind to, PLUS not offered.
    Unavailable,
    /// PLUS offered; the client chose `plus` (SCRAM-SHA-256-PLUS) or not.
    Offered { data: Vec<u8>, plus: bool },
}

/// The channel binding type poolguard supports (and PostgreSQL: the only one).
pub const TLS_SERVER_END_POINT: &str = "tls-server-end-point";

#[derive(Debug)]
enum State {
    Initial,
    SentServerFirst {
        /// What the client-final's `c=` must decode to: the gs2 header as the client sent it,
        /// followed by the channel binding data when it bound to the channel.
        expected_binding: Vec<u8>,
        client_first_bare: String,
        server_first: String,
        /// Client nonce followed by ours.
        nonce: String,
    },
    Done {
        client_key: [u8; 32],
    },
    Failed,
}

impl ScramServer {
    /// An exchange against `verifier` with a fresh random server nonce.
    pub fn new(verifier: ScramVerifier) -> Self {
        Self::with_nonce(verifier, &random_nonce())
    }

    /// An exchange with a fixed server nonce (which must be printable ASCII without ','): for test
    /// vectors and fuzzing only; a predictable nonce makes replay possible.
    #[doc(hidden)]
    pub fn with_nonce(verifier: ScramVerifier, server_nonce: &str) -> Self {
        ScramServer {
            verifier,
            server_nonce: server_nonce.to_owned(),
            binding: Binding::Unavailable,
            state: State::Initial,
        }
    }

    /// Channel binding is offered (the client is on TLS): `data` is this connection's
    /// `tls-server-end-point` data, `plus` whether the client chose SCRAM-SHA-256-PLUS.
    pub fn with_channel_binding(mut self, data: Vec<u8>, plus: bool) -> Self {
        self.binding = Binding::Offered { data, plus };
        self
    }

    /// Handles client-first (`n,,n=<ignored>,r=<nonce>`); returns server-first
    /// (`r=<nonce>,s=<salt>,i=<iterations>`).
    pub fn handle_client_first(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::Initial) {
            self.state = State::Failed;
            return Err(ScramError::OutOfOrder);
        }
        self.state = State::Failed;
        let msg = message_str(msg)?;
        let (gs2_header, client_first_bare) = split_gs2_header(msg)?;
        let expected_binding = self.expected_binding(gs2_header)?;
        let mut parts = client_first_bare.split(',');
        let mut first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::Malformed(
                "mandatory extensions (m=) are not supported",
            ));
        }
        // PostgreSQL ignores the SCRAM user name (the startup packet's "user" is authoritative),
        // but the attribute must be there.
        attr(
            first.take(),
            b'n',
            "client-first lacks the user name attribute (n=)",
        )?;
        let client_nonce = attr(parts.next(), b'r', "client-first lacks the nonce (r=)")?;
        if !valid_nonce(client_nonce) {
            return Err(ScramError::Malformed(
                "client nonce is empty or not printable",
            ));
        }
        // Anything after the nonce is an optional extension, which we may ignore (RFC 5802 §5.1).
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&self.verifier.salt),
            self.verifier.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::SentServerFirst {
            expected_binding,
            client_first_bare: client_first_bare.to_owned(),
            server_first,
            nonce,
        };
        Ok(reply)
    }

    /// Handles client-final (`c=<b64 gs2 header>,r=<nonce>,p=<b64 proof>`): verifies the proof and
    /// returns server-final (`v=<b64 ServerSignature>`). A wrong proof is
    /// [`ScramError::WrongPassword`].
    pub fn handle_client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let State::SentServerFirst {
            expected_binding,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(ScramError::OutOfOrder);
        };
        let msg = message_str(msg)?;
        let mut parts = msg.split(',');
        let binding = attr(
            parts.next(),
            b'c',
            "client-final lacks channel binding data (c=)",
        )?;
        if B64.decode(binding).ok().as_deref() != Some(expected_binding.as_slice()) {
            return Err(ScramError::Malformed(
                "channel binding data (c=) does not match the gs2 header and this connection's channel binding",
            ));
        }
        let echoed = attr(parts.next(), b'r', "client-final lacks the nonce (r=)")?;
        if echoed != nonce {
            return Err(ScramError::NonceMismatch);
        }
        // The proof is the last attribute; optional extensions may sit between r= and p=. No value
        // holds ',' (nonces exclude it, base64 lacks it), so the last ",p=" starts the proof.
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client-final lacks the proof (p=)"))?;
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof is not 32 bytes of base64"))?;

        let auth = auth_message(&client_first_bare, &server_first, without_proof);
        let client_signature = hmac(&self.verifier.stored_key, &auth);
        let client_key = xor(&proof, &client_signature);
        if !constant_time_eq(&sha256(&client_key), &self.verifier.stored_key) {
            return Err(ScramError::WrongPassword);
        }
        let server_signature = hmac(&self.verifier.server_key, &auth);
        self.state = State::Done { client_key };
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }

    /// Checks the gs2 header against the mechanism and the offer; returns what `c=` must hold.
    fn expected_binding(&self, gs2_header: &str) -> Result<Vec<u8>, ScramError> {
        let flag = gs2_header.as_bytes().first().copied();
        match (&self.binding, flag) {
            (Binding::Unavailable, Some(b'p')) => Err(ScramError::ChannelBindingUnsupported),
            (Binding::Unavailable, _) => Ok(gs2_header.as_bytes().to_vec()),
            (Binding::Offered { plus: true, data }, Some(b'p')) => {
                let kind = gs2_header
                    .strip_prefix("p=")
                    .and_then(|h| h.strip_suffix(",,"))
                    .unwrap_or_default();
                if kind != TLS_SERVER_END_POINT {
                    return Err(ScramError::Malformed(
                        "unsupported channel binding type (only tls-server-end-point)",
                    ));
                }
                let mut expected = gs2_header.as_bytes().to_vec();
                expected.extend_from_slice(data);
                Ok(expected)
            }
            (Binding::Offered { plus: true, .. }, _) => Err(ScramError::Malformed(
                "the client chose SCRAM-SHA-256-PLUS, but its message has no channel binding",
            )),
            (Binding::Offered { plus: false, .. }, Some(b'p')) => Err(ScramError::Malformed(
                "the client chose SCRAM-SHA-256 without channel binding, but its message carries channel binding data",
            )),
            (Binding::Offered { plus: false, .. }, Some(b'y')) => {
                Err(ScramError::ChannelBindingDowngrade)
            }
            (Binding::Offered { plus: false, .. }, _) => Ok(gs2_header.as_bytes().to_vec()),
        }
    }

    /// True once the client's proof has been verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done { .. })
    }

    /// The client's ClientKey, recovered from its valid proof. With the verifier's ServerKey it
    /// lets the proxy log in to a server that stores the same verifier (see
    /// [`ScramClient::from_keys`]), without knowing the password.
    ///
    /// [`ScramClient::from_keys`]: super::ScramClient::from_keys
    pub fn client_key(&self) -> Option<[u8; 32]> {
        match self.state {
            State::Done { client_key } => Some(client_key),
            _ => None,
        }
    }
}

/// Splits client-first into its gs2 header (`n,,`, `y,,` or `p=<type>,,`) and
/// client-first-bare. Which of them the exchange accepts is [`ScramServer::expected_binding`]'s
/// call.
fn split_gs2_header(msg: &str) -> Result<(&str, &str), ScramError> {
    // The end of the flag field: after `n` / `y`, or after `p=<type>` (a type name has no ',').
    let flag_end = match msg.as_bytes().first() {
        Some(b'n' | b'y') if msg.as_bytes().get(1) == Some(&b',') => 1,
        Some(b'p') if msg.as_bytes().get(1) == Some(&b'=') => msg
            .find(',')
            .ok_or(ScramError::Malformed("gs2 header is not terminated by ','"))?,
        _ => {
            return Err(ScramError::Malformed(
                "client-first must start with gs2 header \"n,,\", \"y,,\" or \"p=...,,\"",
            ))
        }
    };
    let header_end = flag_end
        .checked_add(2)
        .ok_or(ScramError::Malformed("gs2 header is not terminated by ','"))?;
    match msg.as_bytes().get(flag_end.saturating_add(1)) {
        // The bytes checked are ASCII, so header_end is a char boundary; checked all the same.
        Some(b',') => msg
            .split_at_checked(header_end)
            .ok_or(ScramError::Malformed("gs2 header is not terminated by ','")),
        Some(b'a') => Err(ScramError::Malformed(
            "authorization identity (a=) is not supported",
        )),
        _ => Err(ScramError::Malformed("gs2 header is not terminated by ','")),
    }
}
