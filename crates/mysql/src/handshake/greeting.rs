//! The server greeting, `Protocol::HandshakeV10`.
//!
//! Layout: `int<1>` 10, `string<NUL>` server version, `int<4>` connection id, 8 bytes of
//! auth-plugin-data, a 0x00 filler, `int<2>` capabilities (low), then (if more data) `int<1>`
//! charset, `int<2>` status, `int<2>` capabilities (high), `int<1>` auth-plugin-data length, 10
//! reserved bytes (MariaDB puts its extended capabilities in the last 4 when CLIENT_MYSQL is
//! clear), the rest of the auth-plugin-data (`max(13, len - 8)` bytes, NUL included) if
//! CLIENT_SECURE_CONNECTION, and the NUL-terminated plugin name if CLIENT_PLUGIN_AUTH.

use bytes::{BufMut, BytesMut};

use crate::consts::{CLIENT_MYSQL, CLIENT_PLUGIN_AUTH, CLIENT_SECURE_CONNECTION, ERR_HEADER};
use crate::lenenc::{put_nul_bytes, utf8, Reader};
use crate::DecodeError;

/// The only protocol version spoken since MySQL 3.21.
const PROTOCOL_VERSION: u8 = 10;

/// The server greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeV10 {
    /// Human-readable version; MariaDB prefixes it with "5.5.5-" for old replication clients.
    pub server_version: String,
    /// The server's thread id (what `KILL` takes).
    pub connection_id: u32,
    /// The nonce (scramble) without its trailing NUL: 20 bytes from real servers.
    pub auth_plugin_data: Vec<u8>,
    /// Capability flags (the standard 32 bits).
    pub capabilities: u32,
    /// MariaDB extended capabilities (`MARIADB_CLIENT_*`); 0 when CLIENT_MYSQL is set.
    pub mariadb_capabilities: u32,
    /// Default collation id (low 8 bits).
    pub charset: u8,
    /// Server status flags.
    pub status_flags: u16,
    /// Default authentication plugin; empty without CLIENT_PLUGIN_AUTH.
    pub auth_plugin_name: String,
}

impl HandshakeV10 {
    /// True when the server is MariaDB (it clears CLIENT_MYSQL to announce extended capabilities;
    /// the version string is the fallback test for MariaDB < 10.2).
    pub fn is_mariadb(&self) -> bool {
        self.capabilities & CLIENT_MYSQL == 0 || self.server_version.contains("MariaDB")
    }

    /// Decodes a greeting. A server refusing the connection sends an ERR packet instead (e.g. 1040
    /// "Too many connections", 1129 "Host is blocked"): check [`crate::response::classify`] first;
    /// here it is reported as an unexpected 0xFF header.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let version = r.u8("protocol version")?;
        if version == ERR_HEADER {
            return Err(DecodeError::UnexpectedHeader {
                expected: "HandshakeV10 (the server sent ERR)",
                header: version,
            });
        }
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedProtocolVersion(version));
        }
        let server_version = String::from_utf8_lossy(r.nul_bytes("server version")?).into_owned();
        let connection_id = r.u32("connection id")?;
        let mut auth_plugin_data = r.take(8, "auth-plugin-data-part-1")?.to_vec();
        r.skip(1, "filler")?;
        let mut capabilities = u32::from(r.u16("capability flags (low)")?);
        let mut hs = HandshakeV10 {
            server_version,
            connection_id,
            auth_plugin_data: Vec::new(),
            capabilities,
            mariadb_capabilities: 0,
            charset: 0,
            status_flags: 0,
            auth_plugin_name: String::new(),
        };
        if r.is_empty() {
            // Pre-4.1 servers stop here.
            hs.auth_plugin_data = auth_plugin_data;
            return Ok(hs);
        }
        hs.charset = r.u8("character set")?;
        hs.status_flags = r.u16("status flags")?;
        capabilities |= u32::from(r.u16("capability flags (high)")?) << 16;
        hs.capabilities = capabilities;
        let auth_data_len = r.u8("auth-plugin-data length")?;
        // 6 reserved bytes, then 4 that MariaDB uses for its extended capabilities.
        let [.., e0, e1, e2, e3]: [u8; 10] = r.array("reserved")?;
        if capabilities & CLIENT_MYSQL == 0 {
            hs.mariadb_capabilities = u32::from_le_bytes([e0, e1, e2, e3]);
        }
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            // The length byte counts the trailing NUL; 13 is the minimum on the wire.
            let len = usize::from(auth_data_len).saturating_sub(8).max(13);
            let part2 = r.take_at_most(len);
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            auth_plugin_data.extend_from_slice(part2);
        }
        hs.auth_plugin_data = auth_plugin_data;
        if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            // Some MySQL 5.5 versions omit the final NUL.
            hs.auth_plugin_name = utf8(r.nul_bytes_or_rest(), "auth plugin name")?;
        }
        Ok(hs)
    }

    /// Writes the greeting payload. The nonce should be 20 bytes (shorter ones are zero-padded to
    /// the 8 + 12 bytes the layout needs); strings are cut at an interior NUL, which the format
    /// cannot carry.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(PROTOCOL_VERSION);
        put_nul_bytes(buf, until_nul(self.server_version.as_bytes()));
        buf.put_u32_le(self.connection_id);
        let data = &self.auth_plugin_data;
        let part1 = data.get(..8).unwrap_or(data);
        buf.put_slice(part1);
        buf.put_bytes(0, 8usize.saturating_sub(part1.len()));
        buf.put_u8(0);
        buf.put_u16_le(self.capabilities as u16);
        buf.put_u8(self.charset);
        buf.put_u16_le(self.status_flags);
        buf.put_u16_le((self.capabilities >> 16) as u16);
        let part2 = data.get(8..).unwrap_or_default();
        let part2_padded = part2.len().max(12);
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            // 8 + part2 + NUL, as servers count it.
            let len = part2_padded.saturating_add(8 + 1);
            buf.put_u8(u8::try_from(len).unwrap_or(u8::MAX));
        } else {
            buf.put_u8(0);
        }
        buf.put_bytes(0, 6);
        if self.capabilities & CLIENT_MYSQL == 0 {
            buf.put_u32_le(self.mariadb_capabilities);
        } else {
            buf.put_bytes(0, 4);
        }
        if self.capabilities & CLIENT_SECURE_CONNECTION != 0 {
            buf.put_slice(part2);
            buf.put_bytes(0, part2_padded.saturating_sub(part2.len()));
            buf.put_u8(0);
        }
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            put_nul_bytes(buf, until_nul(self.auth_plugin_name.as_bytes()));
        }
    }
}

/// The bytes before the first NUL (all of them if there is none).
pub(crate) fn until_nul(s: &[u8]) -> &[u8] {
    s.split(|&b| b == 0).next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::*;
    use crate::testutil::unhex;
    use proptest::prelude::*;

    /// A greeting captured from a throwaway MariaDB 10.11.19 (Debian 12), default settings:
    /// version "5.5.5-10.11.19-MariaDB-0+deb12u1", mysql_native_password, utf8mb4_general_ci (45).
    const MARIADB_10_11_GREETING: &str = include_str!("../../testdata/mariadb_10_11_greeting.hex");

    #[test]
    fn decodes_a_real_mariadb_greeting() {
        let payload = unhex(MARIADB_10_11_GREETING);
        let hs = HandshakeV10::decode(&payload).unwrap();
        assert_eq!(hs.server_version, "5.5.5-10.11.19-MariaDB-0+deb12u1");
        assert!(hs.is_mariadb());
        assert_eq!(hs.capabilities & CLIENT_MYSQL, 0);
        for flag in [
            CLIENT_PROTOCOL_41,
            CLIENT_SECURE_CONNECTION,
            CLIENT_PLUGIN_AUTH,
            CLIENT_DEPRECATE_EOF,
            CLIENT_SESSION_TRACK,
            CLIENT_CONNECT_ATTRS,
            CLIENT_MULTI_RESULTS,
        ] {
            assert_ne!(hs.capabilities & flag, 0, "flag {flag:#x}");
        }
        assert_ne!(hs.mariadb_capabilities & MARIADB_CLIENT_PROGRESS, 0);
        assert_ne!(hs.mariadb_capabilities & MARIADB_CLIENT_CACHE_METADATA, 0);
        assert_eq!(hs.auth_plugin_data.len(), 20);
        assert!(!hs.auth_plugin_data.contains(&0));
        assert_eq!(hs.auth_plugin_name, "mysql_native_password");
        assert_eq!(hs.status_flags, SERVER_STATUS_AUTOCOMMIT);
        // Re-encoding reproduces the server's bytes exactly.
        let mut b = BytesMut::new();
        hs.encode(&mut b);
        assert_eq!(&b[..], &payload[..]);
    }

    #[test]
    fn mysql_greeting_exact_bytes() {
        // A MySQL 5.7 greeting (documented capture): 5.7.18-log, id 0x297a12.
        let payload = unhex(
            "0a 35 2e 37 2e 31 38 2d 6c 6f 67 00 12 7a 29 00 33 58 38 18 44 5e 16 48 00 ff ff 21 02 00
             ff c1 15 00 00 00 00 00 00 00 00 00 00 40 79 11 30 2a 41 61 55 64 77 6e 0d 00 6d 79 73
             71 6c 5f 6e 61 74 69 76 65 5f 70 61 73 73 77 6f 72 64 00",
        );
        let hs = HandshakeV10::decode(&payload).unwrap();
        assert_eq!(hs.server_version, "5.7.18-log");
        assert_eq!(hs.connection_id, 0x297a12);
        assert_eq!(hs.capabilities, 0xc1ff_ffff);
        assert_eq!(hs.mariadb_capabilities, 0);
        assert!(!hs.is_mariadb());
        assert_eq!(hs.charset, 0x21);
        assert_eq!(hs.status_flags, 2);
        assert_eq!(
            hs.auth_plugin_data,
            unhex("33 58 38 18 44 5e 16 48 40 79 11 30 2a 41 61 55 64 77 6e 0d")
        );
        assert_eq!(hs.auth_plugin_name, MYSQL_NATIVE_PASSWORD_NAME);
        let mut b = BytesMut::new();
        hs.encode(&mut b);
        assert_eq!(&b[..], &payload[..]);
    }

    const MYSQL_NATIVE_PASSWORD_NAME: &str = "mysql_native_password";

    #[test]
    fn tolerates_missing_final_nul_and_rejects_err_and_v9() {
        let mut payload = unhex(MARIADB_10_11_GREETING);
        payload.pop();
        assert_eq!(
            HandshakeV10::decode(&payload).unwrap().auth_plugin_name,
            "mysql_native_password"
        );
        let err = HandshakeV10::decode(&[0xff, 0x10, 0x04, b'T']).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::UnexpectedHeader { header: 0xff, .. }
        ));
        assert_eq!(
            HandshakeV10::decode(&[9, b'x', 0]),
            Err(DecodeError::UnsupportedProtocolVersion(9))
        );
    }

    #[test]
    fn truncated_greetings_are_errors() {
        let payload = unhex(MARIADB_10_11_GREETING);
        // Every cut inside the fixed part (up to the end of the 10 reserved bytes) fails cleanly.
        let version_end = payload.iter().position(|&b| b == 0).unwrap();
        let reserved_end = version_end + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
        for cut in 1..reserved_end {
            if cut == version_end + 1 + 4 + 8 + 1 + 2 {
                continue; // a pre-4.1 greeting ends here
            }
            assert!(
                HandshakeV10::decode(&payload[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let e = HandshakeV10::decode(&payload[..reserved_end - 3]).unwrap_err();
        assert_eq!(e, DecodeError::too_short("reserved", 10, 7));
    }

    fn proxy_greeting() -> HandshakeV10 {
        HandshakeV10 {
            server_version: "8.0.36-poolguard".into(),
            connection_id: 42,
            auth_plugin_data: crate::auth::generate_nonce().to_vec(),
            capabilities: CLIENT_PROTOCOL_41
                | CLIENT_LONG_PASSWORD
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_DEPRECATE_EOF
                | CLIENT_CONNECT_WITH_DB
                | CLIENT_TRANSACTIONS,
            mariadb_capabilities: 0,
            charset: DEFAULT_COLLATION,
            status_flags: SERVER_STATUS_AUTOCOMMIT,
            auth_plugin_name: "caching_sha2_password".into(),
        }
    }

    #[test]
    fn proxy_greeting_round_trips() {
        let hs = proxy_greeting();
        let mut b = BytesMut::new();
        hs.encode(&mut b);
        assert_eq!(HandshakeV10::decode(&b).unwrap(), hs);
        // MariaDB-style greeting with extended capabilities.
        let mut maria = proxy_greeting();
        maria.capabilities &= !CLIENT_MYSQL;
        maria.mariadb_capabilities = MARIADB_CLIENT_PROGRESS | MARIADB_CLIENT_STMT_BULK_OPERATIONS;
        let mut b = BytesMut::new();
        maria.encode(&mut b);
        assert_eq!(HandshakeV10::decode(&b).unwrap(), maria);
    }

    proptest! {
        #[test]
        fn round_trips(
            version in "[a-zA-Z0-9.+-]{0,40}", id in any::<u32>(), caps in any::<u32>(), ext in any::<u32>(),
            charset in any::<u8>(), status in any::<u16>(), plugin in "[a-z_]{0,30}",
            nonce in proptest::array::uniform20(1u8..=255),
        ) {
            // The round trip holds for the shapes real greetings have: 4.1 with secure connection.
            let caps = caps | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION;
            let hs = HandshakeV10 {
                server_version: version, connection_id: id, auth_plugin_data: nonce.to_vec(),
                capabilities: caps, mariadb_capabilities: if caps & CLIENT_MYSQL == 0 { ext } else { 0 },
                charset, status_flags: status,
                auth_plugin_name: if caps & CLIENT_PLUGIN_AUTH != 0 { plugin } else { String::new() },
            };
            let mut b = BytesMut::new();
            hs.encode(&mut b);
            prop_assert_eq!(HandshakeV10::decode(&b).unwrap(), hs);
        }

        #[test]
        fn random_bytes_never_panic(mut buf in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = HandshakeV10::decode(&buf);
            if let Some(b) = buf.first_mut() { *b = 10; }
            let _ = HandshakeV10::decode(&buf);
        }
    }
}
