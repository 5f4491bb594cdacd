//! What the client sends after the greeting: `HandshakeResponse41`, preceded by a 32-byte
//! `SSLRequest` when it wants TLS; and `COM_CHANGE_USER`, which re-authenticates mid-session.
//!
//! HandshakeResponse41 layout: `int<4>` capabilities, `int<4>` max packet size, `int<1>` charset,
//! 23 reserved bytes (MariaDB clients put their extended capabilities in the last 4), the
//! NUL-terminated user name, the auth response (`string<lenenc>` with
//! CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, else `int<1>` length + bytes with
//! CLIENT_SECURE_CONNECTION, else NUL-terminated), the database if CLIENT_CONNECT_WITH_DB, the
//! plugin name if CLIENT_PLUGIN_AUTH, and `string<lenenc>`-framed key/value attributes if
//! CLIENT_CONNECT_ATTRS. The SSLRequest is the first 32 bytes alone.

use bytes::{BufMut, BytesMut};

use super::greeting::until_nul;
use crate::consts::{
    CLIENT_CONNECT_ATTRS, CLIENT_CONNECT_WITH_DB, CLIENT_MYSQL, CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION,
    CLIENT_SSL, COM_CHANGE_USER,
};
use crate::lenenc::{put_lenenc_bytes, put_nul_bytes, utf8, Reader};
use crate::DecodeError;

/// Length of the fixed part shared by SSLRequest and HandshakeResponse41.
const FIXED_LEN: usize = 32;

/// The short packet a client sends to ask for TLS before its real handshake response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslRequest {
    /// Client capabilities (CLIENT_SSL set).
    pub capabilities: u32,
    /// Client's max packet size.
    pub max_packet_size: u32,
    /// Client collation id.
    pub charset: u8,
    /// MariaDB extended capabilities (last 4 reserved bytes), 0 for MySQL clients.
    pub mariadb_capabilities: u32,
}

impl SslRequest {
    /// Writes the 32-byte payload (CLIENT_SSL is forced on).
    pub fn encode(&self, buf: &mut BytesMut) {
        put_fixed(
            buf,
            self.capabilities | CLIENT_SSL,
            self.max_packet_size,
            self.charset,
            self.mariadb_capabilities,
        );
    }
}

/// The client's answer to the greeting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeResponse41 {
    /// Client capabilities (the server uses the intersection with its own).
    pub capabilities: u32,
    /// Largest packet the client wants to receive.
    pub max_packet_size: u32,
    /// Client collation id.
    pub charset: u8,
    /// MariaDB extended capabilities, 0 for MySQL clients (which set CLIENT_MYSQL).
    pub mariadb_capabilities: u32,
    /// User name.
    pub username: String,
    /// Plugin-specific auth data (a 20-byte native scramble, a 32-byte sha2 scramble, or empty).
    pub auth_response: Vec<u8>,
    /// Initial database, present only with CLIENT_CONNECT_WITH_DB.
    pub database: Option<String>,
    /// Plugin the auth response was computed with, only with CLIENT_PLUGIN_AUTH.
    pub auth_plugin_name: Option<String>,
    /// Connection attributes (`_client_name`, `program_name`...), only with CLIENT_CONNECT_ATTRS.
    /// Decoded lossily: a strange attribute must not cost a client its connection.
    pub connect_attrs: Vec<(String, String)>,
}

/// What a client's first packet turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHandshake {
    /// Start TLS, then read the real response.
    SslRequest(SslRequest),
    /// The handshake response.
    Response(HandshakeResponse41),
}

/// Decodes a client's first packet: an [`SslRequest`] if it is exactly 32 bytes with CLIENT_SSL,
/// else a [`HandshakeResponse41`].
pub fn decode_client_handshake(payload: &[u8]) -> Result<ClientHandshake, DecodeError> {
    let mut r = Reader::new(payload);
    let fixed = read_fixed(&mut r)?;
    if payload.len() == FIXED_LEN && fixed.capabilities & CLIENT_SSL != 0 {
        return Ok(ClientHandshake::SslRequest(fixed));
    }
    HandshakeResponse41::decode_rest(fixed, &mut r).map(ClientHandshake::Response)
}

fn read_fixed(r: &mut Reader<'_>) -> Result<SslRequest, DecodeError> {
    let capabilities = r.u32("client capabilities")?;
    if capabilities & CLIENT_PROTOCOL_41 == 0 {
        return Err(DecodeError::Unsupported(
            "HandshakeResponse320 (client without CLIENT_PROTOCOL_41)",
        ));
    }
    let max_packet_size = r.u32("max packet size")?;
    let charset = r.u8("character set")?;
    // 19 reserved bytes, then 4 that MariaDB uses for its extended capabilities.
    let [.., e0, e1, e2, e3]: [u8; 23] = r.array("reserved")?;
    // MySQL clients set CLIENT_MYSQL and leave the bytes zero; trust the flag, not the bytes.
    let mariadb_capabilities = if capabilities & CLIENT_MYSQL == 0 {
        u32::from_le_bytes([e0, e1, e2, e3])
    } else {
        0
    };
    Ok(SslRequest {
        capabilities,
        max_packet_size,
        charset,
        mariadb_capabilities,
    })
}

fn put_fixed(buf: &mut BytesMut, caps: u32, max_packet: u32, charset: u8, ext: u32) {
    buf.put_u32_le(caps);
    buf.put_u32_le(max_packet);
    buf.put_u8(charset);
    buf.put_bytes(0, 19);
    if caps & CLIENT_MYSQL == 0 {
        buf.put_u32_le(ext);
    } else {
        buf.put_bytes(0, 4);
    }
}

impl HandshakeResponse41 {
    /// Decodes a full handshake response (an SSLRequest is an error here: use
    /// [`decode_client_handshake`] for a client's first packet).
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        match decode_client_handshake(payload)? {
            ClientHandshake::Response(r) => Ok(r),
            ClientHandshake::SslRequest(_) => Err(DecodeError::Malformed {
                what: "handshake response",
                detail: "got an SSL request where the full response was expected",
            }),
        }
    }

    fn decode_rest(fixed: SslRequest, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let caps = fixed.capabilities;
        let username = utf8(r.nul_bytes("username")?, "username")?;
        let auth_response = read_auth_response(r, caps)?.to_vec();
        // The trailing optional fields: clients announce flags they then leave out when the value
        // is empty, and some omit the final NUL, so end-of-packet means "absent".
        let database = if caps & CLIENT_CONNECT_WITH_DB != 0 && !r.is_empty() {
            Some(utf8(r.nul_bytes_or_rest(), "database")?)
        } else {
            None
        };
        let auth_plugin_name = if caps & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
            Some(utf8(r.nul_bytes_or_rest(), "auth plugin name")?)
        } else {
            None
        };
        let connect_attrs = if caps & CLIENT_CONNECT_ATTRS != 0 && !r.is_empty() {
            read_attrs(r)?
        } else {
            Vec::new()
        };
        Ok(HandshakeResponse41 {
            capabilities: caps,
            max_packet_size: fixed.max_packet_size,
            charset: fixed.charset,
            mariadb_capabilities: fixed.mariadb_capabilities,
            username,
            auth_response,
            database,
            auth_plugin_name,
            connect_attrs,
        })
    }

    /// The value of a connection attribute, e.g. `"program_name"`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.connect_attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Writes the payload. The capability flags decide which optional fields are written (as on
    /// the wire); two adjustments keep the packet valid: an auth response longer than 255 bytes
    /// turns on CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, and `database: None` under
    /// CLIENT_CONNECT_WITH_DB is written as an empty name when later fields follow.
    pub fn encode(&self, buf: &mut BytesMut) {
        let mut caps = self.capabilities | CLIENT_PROTOCOL_41;
        if self.auth_response.len() > 255 {
            caps |= CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        }
        put_fixed(
            buf,
            caps,
            self.max_packet_size,
            self.charset,
            self.mariadb_capabilities,
        );
        put_nul_bytes(buf, until_nul(self.username.as_bytes()));
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(buf, &self.auth_response);
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            // len <= 255 here (longer switched to lenenc above).
            buf.put_u8(self.auth_response.len() as u8);
            buf.put_slice(&self.auth_response);
        } else {
            put_nul_bytes(buf, until_nul(&self.auth_response));
        }
        if caps & CLIENT_CONNECT_WITH_DB != 0 {
            put_nul_bytes(
                buf,
                until_nul(self.database.as_deref().unwrap_or("").as_bytes()),
            );
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 {
            let name = self.auth_plugin_name.as_deref().unwrap_or("");
            put_nul_bytes(buf, until_nul(name.as_bytes()));
        }
        if caps & CLIENT_CONNECT_ATTRS != 0 {
            put_attrs(buf, &self.connect_attrs);
        }
    }
}

fn read_auth_response<'a>(r: &mut Reader<'a>, caps: u32) -> Result<&'a [u8], DecodeError> {
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        r.lenenc_bytes("auth response")
    } else if caps & CLIENT_SECURE_CONNECTION != 0 {
        let len = usize::from(r.u8("auth response length")?);
        r.take(len, "auth response")
    } else {
        r.nul_bytes("auth response")
    }
}

fn read_attrs(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, DecodeError> {
    let block = r.lenenc_bytes("connect attributes")?;
    let mut a = Reader::new(block);
    let mut attrs = Vec::new();
    // Each pair takes at least two bytes of the (already bounded) block, so the vector grows with
    // bytes actually received, never with a declared count.
    while !a.is_empty() {
        let k = a.lenenc_bytes("connect attribute key")?;
        let v = a.lenenc_bytes("connect attribute value")?;
        attrs.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Ok(attrs)
}

fn put_attrs(buf: &mut BytesMut, attrs: &[(String, String)]) {
    let mut block = BytesMut::new();
    for (k, v) in attrs {
        put_lenenc_bytes(&mut block, k.as_bytes());
        put_lenenc_bytes(&mut block, v.as_bytes());
    }
    put_lenenc_bytes(buf, &block);
}

/// COM_CHANGE_USER: re-authenticate as `username` and reset the session.
///
/// Layout: 0x11, user NUL, auth response (`int<1>` length + bytes with CLIENT_SECURE_CONNECTION,
/// else NUL-terminated), database NUL, then if more data: `int<2>` charset, plugin name NUL (with
/// CLIENT_PLUGIN_AUTH), attributes (with CLIENT_CONNECT_ATTRS). The flags are the connection's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeUser {
    /// New user name.
    pub username: String,
    /// Auth response computed with the connection's current nonce.
    pub auth_response: Vec<u8>,
    /// New default database (empty for none).
    pub database: String,
    /// Collation id, when sent.
    pub charset: Option<u16>,
    /// Plugin name, when sent.
    pub auth_plugin_name: Option<String>,
    /// Connection attributes, when sent.
    pub connect_attrs: Vec<(String, String)>,
}

impl ChangeUser {
    /// Decodes a COM_CHANGE_USER payload (command byte included).
    pub fn decode(payload: &[u8], capabilities: u32) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let cmd = r.u8("command")?;
        if cmd != COM_CHANGE_USER {
            return Err(DecodeError::UnexpectedHeader {
                expected: "COM_CHANGE_USER (0x11)",
                header: cmd,
            });
        }
        let username = utf8(r.nul_bytes("username")?, "username")?;
        let auth_response = if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let len = usize::from(r.u8("auth response length")?);
            r.take(len, "auth response")?
        } else {
            r.nul_bytes("auth response")?
        }
        .to_vec();
        let database = utf8(r.nul_bytes_or_rest(), "database")?;
        let mut cu = ChangeUser {
            username,
            auth_response,
            database,
            ..ChangeUser::default()
        };
        if r.remaining() >= 2 {
            cu.charset = Some(r.u16("character set")?);
            if capabilities & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
                cu.auth_plugin_name = Some(utf8(r.nul_bytes_or_rest(), "auth plugin name")?);
            }
            if capabilities & CLIENT_CONNECT_ATTRS != 0 && !r.is_empty() {
                cu.connect_attrs = read_attrs(&mut r)?;
            }
        }
        Ok(cu)
    }

    /// Writes the payload (command byte included). An auth response longer than 255 bytes cannot
    /// be expressed and is cut to 255 (no plugin poolguard uses comes close).
    pub fn encode(&self, buf: &mut BytesMut, capabilities: u32) {
        buf.put_u8(COM_CHANGE_USER);
        put_nul_bytes(buf, until_nul(self.username.as_bytes()));
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let auth = self.auth_response.get(..255).unwrap_or(&self.auth_response);
            buf.put_u8(auth.len() as u8);
            buf.put_slice(auth);
        } else {
            put_nul_bytes(buf, until_nul(&self.auth_response));
        }
        put_nul_bytes(buf, until_nul(self.database.as_bytes()));
        let plugin = capabilities & CLIENT_PLUGIN_AUTH != 0;
        let attrs = capabilities & CLIENT_CONNECT_ATTRS != 0;
        if self.charset.is_some() || plugin || attrs {
            buf.put_u16_le(
                self.charset
                    .unwrap_or(u16::from(crate::consts::DEFAULT_COLLATION)),
            );
        }
        if plugin {
            let name = self.auth_plugin_name.as_deref().unwrap_or("");
            put_nul_bytes(buf, until_nul(name.as_bytes()));
        }
        if attrs {
            put_attrs(buf, &self.connect_attrs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::*;
    use crate::testutil::unhex;
    use proptest::prelude::*;

    const MODERN: u32 = CLIENT_LONG_PASSWORD
        | CLIENT_PROTOCOL_41
        | CLIENT_SECURE_CONNECTION
        | CLIENT_PLUGIN_AUTH
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CLIENT_CONNECT_WITH_DB
        | CLIENT_CONNECT_ATTRS
        | CLIENT_TRANSACTIONS
        | CLIENT_DEPRECATE_EOF;

    fn sample() -> HandshakeResponse41 {
        HandshakeResponse41 {
            capabilities: MODERN,
            max_packet_size: 16 << 20,
            charset: DEFAULT_COLLATION,
            mariadb_capabilities: 0,
            username: "app".into(),
            auth_response: crate::auth::native_scramble(b"secret", &[0x41; 20]).to_vec(),
            database: Some("bank".into()),
            auth_plugin_name: Some("mysql_native_password".into()),
            connect_attrs: vec![
                ("_client_name".into(), "libmariadb".into()),
                ("program_name".into(), "mysql".into()),
            ],
        }
    }

    /// The first packet of the `mariadb` 10.11 command-line client (`mariadb -uapp -psecret t`)
    /// captured in front of a throwaway server.
    const MARIADB_CLI_RESPONSE: &str =
        include_str!("../../testdata/mariadb_cli_handshake_response.hex");

    #[test]
    fn decodes_a_real_mariadb_client_response() {
        let payload = unhex(MARIADB_CLI_RESPONSE);
        let ClientHandshake::Response(r) = decode_client_handshake(&payload).unwrap() else {
            panic!("not a response");
        };
        assert_eq!(r.username, "app");
        assert_eq!(r.database.as_deref(), Some("t"));
        assert_eq!(r.auth_plugin_name.as_deref(), Some("mysql_native_password"));
        assert_eq!(r.auth_response.len(), 20);
        assert_ne!(r.capabilities & CLIENT_PROTOCOL_41, 0);
        assert_eq!(
            r.capabilities & CLIENT_MYSQL,
            0,
            "MariaDB client clears CLIENT_MYSQL"
        );
        assert_ne!(r.mariadb_capabilities, 0);
        assert_eq!(r.attr("_client_name"), Some("libmariadb"));
        assert_eq!(r.attr("program_name"), Some("mysql"));
        assert_eq!(r.attr("_server_host"), Some("127.0.0.1"));
        let mut b = BytesMut::new();
        r.encode(&mut b);
        assert_eq!(&b[..], &payload[..]);
    }

    #[test]
    fn exact_bytes_of_a_minimal_response() {
        let r = HandshakeResponse41 {
            capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_LONG_PASSWORD,
            max_packet_size: 0x0100_0000,
            charset: 0x21,
            username: "root".into(),
            auth_response: vec![],
            ..HandshakeResponse41::default()
        };
        let mut b = BytesMut::new();
        r.encode(&mut b);
        let mut expected = vec![0x01, 0x82, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x21];
        expected.extend_from_slice(&[0; 23]);
        expected.extend_from_slice(b"root\0\0");
        assert_eq!(&b[..], &expected[..]);
        assert_eq!(HandshakeResponse41::decode(&b).unwrap(), r);
    }

    #[test]
    fn round_trip_and_auth_response_encodings() {
        let r = sample();
        let mut b = BytesMut::new();
        r.encode(&mut b);
        assert_eq!(HandshakeResponse41::decode(&b).unwrap(), r);
        // 1-byte length (no LENENC flag) and NUL-terminated (no SECURE_CONNECTION) forms.
        let mut one_byte = sample();
        one_byte.capabilities &= !CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let mut b = BytesMut::new();
        one_byte.encode(&mut b);
        assert_eq!(HandshakeResponse41::decode(&b).unwrap(), one_byte);
        let mut nul = sample();
        nul.capabilities &= !(CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_SECURE_CONNECTION);
        nul.auth_response = b"plain".to_vec();
        let mut b = BytesMut::new();
        nul.encode(&mut b);
        assert_eq!(HandshakeResponse41::decode(&b).unwrap(), nul);
        // A long auth response switches to lenenc.
        let mut long = one_byte.clone();
        long.auth_response = vec![7; 300];
        let mut b = BytesMut::new();
        long.encode(&mut b);
        let back = HandshakeResponse41::decode(&b).unwrap();
        assert_eq!(back.auth_response, vec![7; 300]);
        assert_ne!(back.capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, 0);
    }

    #[test]
    fn optional_tail_fields_may_be_absent() {
        let mut r = sample();
        r.capabilities |= CLIENT_CONNECT_WITH_DB | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS;
        let mut b = BytesMut::new();
        put_fixed(&mut b, r.capabilities, 1, 45, 0);
        b.put_slice(b"u\0\x00");
        let d = HandshakeResponse41::decode(&b).unwrap();
        assert_eq!(d.username, "u");
        assert_eq!(d.database, None);
        assert_eq!(d.auth_plugin_name, None);
        assert!(d.connect_attrs.is_empty());
        // Database without its NUL at the very end.
        b.put_slice(b"db");
        assert_eq!(
            HandshakeResponse41::decode(&b).unwrap().database.as_deref(),
            Some("db")
        );
    }

    #[test]
    fn ssl_request_detection() {
        let req = SslRequest {
            capabilities: MODERN,
            max_packet_size: 1 << 24,
            charset: 45,
            mariadb_capabilities: 0,
        };
        let mut b = BytesMut::new();
        req.encode(&mut b);
        assert_eq!(b.len(), 32);
        let got = decode_client_handshake(&b).unwrap();
        assert_eq!(
            got,
            ClientHandshake::SslRequest(SslRequest {
                capabilities: MODERN | CLIENT_SSL,
                ..req
            })
        );
        assert!(HandshakeResponse41::decode(&b).is_err());
        // 32 bytes without CLIENT_SSL is a truncated response, not an SSL request.
        let mut b = BytesMut::new();
        put_fixed(&mut b, MODERN, 0, 45, 0);
        assert!(decode_client_handshake(&b).is_err());
    }

    #[test]
    fn truncated_fixed_part_is_an_error() {
        let mut b = BytesMut::new();
        put_fixed(&mut b, MODERN, 0, 45, 0);
        for cut in 0..b.len() {
            assert!(decode_client_handshake(&b[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(
            decode_client_handshake(&b[..4 + 4 + 1 + 22]),
            Err(DecodeError::too_short("reserved", 23, 22))
        );
    }

    #[test]
    fn user_name_cut_mid_character_is_an_error() {
        let mut b = BytesMut::new();
        put_fixed(&mut b, MODERN, 0, 45, 0);
        // "jo\u{e9}" with its last byte (A9) cut off.
        b.put_slice(b"jo\xc3\0\0");
        assert_eq!(
            HandshakeResponse41::decode(&b),
            Err(DecodeError::InvalidUtf8 { what: "username" })
        );
    }

    #[test]
    fn pre_41_clients_and_bad_attrs_are_rejected() {
        let mut b = BytesMut::new();
        b.put_u32_le(CLIENT_SECURE_CONNECTION);
        b.put_bytes(0, 40);
        assert!(matches!(
            decode_client_handshake(&b),
            Err(DecodeError::Unsupported(_))
        ));
        // Attribute block announcing more bytes than present.
        let mut b = BytesMut::new();
        put_fixed(&mut b, MODERN, 0, 45, 0);
        b.put_slice(b"u\0\x00db\0plug\0");
        b.put_slice(&[0xfc, 0xff, 0xff, 1, b'k']);
        assert!(matches!(
            HandshakeResponse41::decode(&b),
            Err(DecodeError::TooShort {
                what: "connect attributes",
                ..
            })
        ));
    }

    #[test]
    fn change_user_round_trips() {
        let caps = MODERN;
        let cu = ChangeUser {
            username: "app".into(),
            auth_response: vec![1; 20],
            database: "bank".into(),
            charset: Some(45),
            auth_plugin_name: Some("mysql_native_password".into()),
            connect_attrs: vec![("k".into(), "v".into())],
        };
        let mut b = BytesMut::new();
        cu.encode(&mut b, caps);
        assert_eq!(b[0], COM_CHANGE_USER);
        assert_eq!(ChangeUser::decode(&b, caps).unwrap(), cu);
        // Minimal old-style form: user, NUL-terminated auth, db.
        let old = ChangeUser::decode(b"\x11u\0pw\0db\0", CLIENT_PROTOCOL_41).unwrap();
        assert_eq!(old.username, "u");
        assert_eq!(old.auth_response, b"pw");
        assert_eq!(old.database, "db");
        assert_eq!(old.charset, None);
    }

    proptest! {
        #[test]
        fn responses_round_trip(
            caps in any::<u32>(), user in "[a-z]{0,16}", auth in proptest::collection::vec(1u8..=255, 0..40),
            db in proptest::option::of("[a-z]{1,16}"), plugin in proptest::option::of("[a-z_]{1,24}"),
            attrs in proptest::collection::vec(("[a-z_]{0,10}", ".{0,10}"), 0..4), ext in any::<u32>(),
        ) {
            let caps = (caps | CLIENT_PROTOCOL_41) & !CLIENT_SSL;
            let r = HandshakeResponse41 {
                capabilities: caps, max_packet_size: 1, charset: 8,
                mariadb_capabilities: if caps & CLIENT_MYSQL == 0 { ext } else { 0 },
                username: user, auth_response: auth,
                database: if caps & CLIENT_CONNECT_WITH_DB != 0 { db } else { None },
                auth_plugin_name: if caps & CLIENT_PLUGIN_AUTH != 0 { plugin } else { None },
                connect_attrs: if caps & CLIENT_CONNECT_ATTRS != 0 { attrs } else { vec![] },
            };
            let mut b = BytesMut::new();
            r.encode(&mut b);
            let mut d = HandshakeResponse41::decode(&b).unwrap();
            // An absent database / plugin under its flag is written empty; later fields need it.
            if r.database.is_none() && d.database.as_deref() == Some("") { d.database = None; }
            if r.auth_plugin_name.is_none() && d.auth_plugin_name.as_deref() == Some("") { d.auth_plugin_name = None; }
            prop_assert_eq!(d, r);
        }

        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..120), caps in any::<u32>()) {
            let _ = decode_client_handshake(&buf);
            let mut fixed = BytesMut::new();
            put_fixed(&mut fixed, caps | CLIENT_PROTOCOL_41, 0, 0, 0);
            fixed.extend_from_slice(&buf);
            let _ = decode_client_handshake(&fixed);
            let _ = ChangeUser::decode(&buf, caps);
        }
    }
}
