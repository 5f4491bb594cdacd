//! The authentication exchange after the handshake response.
//!
//! - `AuthSwitchRequest` (server -> client): 0xFE, plugin name NUL, plugin data. The server asks
//!   the client to redo authentication with another plugin and a fresh nonce; the client answers
//!   with the bare auth response (no header).
//! - `AuthMoreData` (server -> client): 0x01 then plugin data, e.g. caching_sha2_password's
//!   `0x03` (fast auth succeeded, OK follows) or `0x04` (send the full password), or a PEM key.
//!
//! Native and sha2 nonces are sent NUL-terminated in a switch request; the NUL is not part of the
//! nonce, so decoding strips one trailing NUL and encoding adds it back.

use bytes::{BufMut, BytesMut};

use super::greeting::until_nul;
use crate::auth::{CACHING_SHA2_FAST_AUTH_SUCCESS, CACHING_SHA2_PERFORM_FULL_AUTH};
use crate::consts::{AUTH_MORE_DATA_HEADER, EOF_HEADER};
use crate::lenenc::{put_nul_bytes, utf8, Reader};
use crate::DecodeError;

/// Server asks the client to authenticate with `plugin_name` using `plugin_data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    /// Plugin to switch to, e.g. "mysql_native_password".
    pub plugin_name: String,
    /// Plugin data (the new 20-byte nonce for native/sha2), without the trailing NUL.
    pub plugin_data: Vec<u8>,
}

impl AuthSwitchRequest {
    /// Decodes the payload. The pre-4.1 one-byte form (switch to old_password) is unsupported.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let header = r.u8("auth switch header")?;
        if header != EOF_HEADER {
            return Err(DecodeError::UnexpectedHeader {
                expected: "AuthSwitchRequest (0xFE)",
                header,
            });
        }
        if r.is_empty() {
            return Err(DecodeError::Unsupported(
                "old_password auth switch (0xFE without plugin name)",
            ));
        }
        let plugin_name = utf8(r.nul_bytes_or_rest(), "auth plugin name")?;
        let data = r.rest();
        let plugin_data = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
        Ok(AuthSwitchRequest {
            plugin_name,
            plugin_data,
        })
    }

    /// Writes the payload: 0xFE, name NUL, data, NUL (as servers send it).
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(EOF_HEADER);
        put_nul_bytes(buf, until_nul(self.plugin_name.as_bytes()));
        buf.put_slice(&self.plugin_data);
        buf.put_u8(0);
    }
}

/// Extra authentication data from the server (0x01 header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMoreData {
    /// The plugin data after the header.
    pub data: Vec<u8>,
}

impl AuthMoreData {
    /// caching_sha2_password: the scramble matched; an OK packet follows.
    pub fn fast_auth_success() -> Self {
        AuthMoreData {
            data: vec![CACHING_SHA2_FAST_AUTH_SUCCESS],
        }
    }

    /// caching_sha2_password: the server needs the cleartext password (over TLS) or RSA.
    pub fn perform_full_auth() -> Self {
        AuthMoreData {
            data: vec![CACHING_SHA2_PERFORM_FULL_AUTH],
        }
    }

    /// True for caching_sha2's fast-auth-success marker.
    pub fn is_fast_auth_success(&self) -> bool {
        self.data == [CACHING_SHA2_FAST_AUTH_SUCCESS]
    }

    /// True for caching_sha2's perform-full-auth marker.
    pub fn is_perform_full_auth(&self) -> bool {
        self.data == [CACHING_SHA2_PERFORM_FULL_AUTH]
    }

    /// Decodes the payload.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        match payload.split_first() {
            Some((&AUTH_MORE_DATA_HEADER, data)) => Ok(AuthMoreData {
                data: data.to_vec(),
            }),
            _ => Err(DecodeError::UnexpectedHeader {
                expected: "AuthMoreData (0x01)",
                header: payload.first().copied().unwrap_or(0),
            }),
        }
    }

    /// Writes the payload.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(AUTH_MORE_DATA_HEADER);
        buf.put_slice(&self.data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn switch_exact_bytes() {
        let nonce: Vec<u8> = (0x21u8..0x21 + 20).collect();
        let req = AuthSwitchRequest {
            plugin_name: "mysql_native_password".into(),
            plugin_data: nonce.clone(),
        };
        let mut b = BytesMut::new();
        req.encode(&mut b);
        let mut expected = vec![0xfe];
        expected.extend_from_slice(b"mysql_native_password\0");
        expected.extend_from_slice(&nonce);
        expected.push(0);
        assert_eq!(&b[..], &expected[..]);
        assert_eq!(AuthSwitchRequest::decode(&b).unwrap(), req);
        // Without the trailing NUL (some servers) the data is the same.
        assert_eq!(AuthSwitchRequest::decode(&b[..b.len() - 1]).unwrap(), req);
    }

    #[test]
    fn switch_rejects_old_password_and_wrong_header() {
        assert!(matches!(
            AuthSwitchRequest::decode(&[0xfe]),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(AuthSwitchRequest::decode(&[0x00, b'x', 0]).is_err());
        assert!(AuthSwitchRequest::decode(&[]).is_err());
    }

    #[test]
    fn more_data_markers() {
        let mut b = BytesMut::new();
        AuthMoreData::fast_auth_success().encode(&mut b);
        assert_eq!(&b[..], &[0x01, 0x03]);
        assert!(AuthMoreData::decode(&b).unwrap().is_fast_auth_success());
        let mut b = BytesMut::new();
        AuthMoreData::perform_full_auth().encode(&mut b);
        assert_eq!(&b[..], &[0x01, 0x04]);
        assert!(AuthMoreData::decode(&b).unwrap().is_perform_full_auth());
        assert!(AuthMoreData::decode(&[0x02, 0x03]).is_err());
        assert!(AuthMoreData::decode(&[]).is_err());
    }

    proptest! {
        #[test]
        fn switch_round_trips(name in "[a-z_]{0,30}", data in proptest::collection::vec(1u8..=255, 0..40)) {
            let req = AuthSwitchRequest { plugin_name: name, plugin_data: data };
            let mut b = BytesMut::new();
            req.encode(&mut b);
            prop_assert_eq!(AuthSwitchRequest::decode(&b).unwrap(), req);
        }

        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..60)) {
            let _ = AuthSwitchRequest::decode(&buf);
            let _ = AuthMoreData::decode(&buf);
        }
    }
}
