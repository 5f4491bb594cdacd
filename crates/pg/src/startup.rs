//! Startup-phase packets: what a client sends before any tagged message. They are untagged: an
//! Int32 length that counts itself, then an Int32 code that says which packet this is (a protocol
//! version for a StartupMessage, a magic number for SSLRequest, GSSENCRequest and CancelRequest).
//!
//! Invariants: a packet's length must be within `8..=MAX_STARTUP_LEN` and is checked as soon as its
//! 4 bytes are present; the whole packet is parsed before anything is consumed, so an error or
//! `Ok(None)` leaves the buffer untouched; parameters are decoded strictly (terminator as the
//! last byte, `user` present), as PostgreSQL does. Their bytes are in the client's encoding, not
//! necessarily UTF-8: a name or value that is not UTF-8 is kept with each non-ASCII byte written
//! `\xNN`, as PostgreSQL itself cleans `application_name`; it never refuses the packet.

use bytes::{Buf, BufMut, BytesMut};

use crate::wire::{put_cstr, put_untagged, Reader};
use crate::DecodeError;

/// Largest startup packet accepted, its length field included: PostgreSQL's own
/// `MAX_STARTUP_PACKET_LENGTH` (10,000) bounds what follows the length field.
pub const MAX_STARTUP_LEN: usize = 10_004;
/// Protocol 3.0, the version every current client and server speaks.
pub const PROTOCOL_VERSION_3: u32 = 3 << 16;
/// Code of an SSLRequest (`1234 << 16 | 5679`).
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Code of a GSSENCRequest (`1234 << 16 | 5680`).
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// Code of a CancelRequest (`1234 << 16 | 5678`).
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A decoded startup-phase packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupRequest {
    /// SSLRequest: the client asks for TLS; answer a single byte `S` or `N`.
    Ssl,
    /// GSSENCRequest: the client asks for GSSAPI encryption; answer `N` to refuse.
    GssEnc,
    /// CancelRequest, sent on a fresh connection: cancel the query running on backend `pid`.
    Cancel {
        /// Process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData.
        secret: i32,
    },
    /// StartupMessage.
    Startup {
        /// The requested protocol version: major 3, any minor (`version & 0xffff`); a server that
        /// supports fewer minors answers with NegotiateProtocolVersion.
        version: u32,
        /// Parameters in the order sent (`user` is guaranteed present; `_pq_.*` entries are
        /// protocol options).
        params: Vec<(String, String)>,
    },
}

impl StartupRequest {
    /// The value of startup parameter `name`; `None` for other packets or an absent parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            StartupRequest::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Decodes the first startup-phase packet in `buf` and consumes it. `Ok(None)` if it is not all
/// there yet.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupRequest>, DecodeError> {
    let Some(&len_bytes) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(len_bytes);
    if len < 8 {
        return Err(DecodeError::BadLength(i64::from(len)));
    }
    let len = len as usize; // positive i32: lossless
    if len > MAX_STARTUP_LEN {
        return Err(DecodeError::TooLong {
            len,
            max: MAX_STARTUP_LEN,
        });
    }
    let Some(packet) = buf.get(4..len) else {
        return Ok(None);
    };
    let request = parse_packet(packet)?;
    buf.advance(len);
    Ok(Some(request))
}

/// Parses a startup packet after its length field.
fn parse_packet(packet: &[u8]) -> Result<StartupRequest, DecodeError> {
    let mut r = Reader::new(packet);
    let code = r.u32("startup packet code")?;
    match code {
        SSL_REQUEST_CODE => {
            r.finish("SSLRequest must be exactly 8 bytes")?;
            Ok(StartupRequest::Ssl)
        }
        GSSENC_REQUEST_CODE => {
            r.finish("GSSENCRequest must be exactly 8 bytes")?;
            Ok(StartupRequest::GssEnc)
        }
        CANCEL_REQUEST_CODE => {
            if r.remaining() != 8 {
                return Err(DecodeError::Malformed(
                    "CancelRequest must be exactly 16 bytes (4-byte secret keys only)",
                ));
            }
            let pid = r.i32("CancelRequest process id")?;
            let secret = r.i32("CancelRequest secret key")?;
            Ok(StartupRequest::Cancel { pid, secret })
        }
        version if version >> 16 == 3 => Ok(StartupRequest::Startup {
            version,
            params: parse_params(r.rest())?,
        }),
        other => Err(DecodeError::UnsupportedProtocol(other)),
    }
}

/// Parses `name\0value\0...\0`: pairs ending with an empty name, which must be the last byte.
fn parse_params(bytes: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    const NO_TERMINATOR: &str = "startup parameters must end with an empty name as the last byte";
    let mut r = Reader::new(bytes);
    let mut params = Vec::new();
    loop {
        let name = r.cbytes(NO_TERMINATOR)?;
        if name.is_empty() {
            break;
        }
        let value = r.cbytes("startup parameter has a name but no NUL-terminated value")?;
        params.push((text(name), text(value)));
    }
    r.finish(NO_TERMINATOR)?;
    // An empty user name is no user name (PostgreSQL answers both alike).
    if !params.iter().any(|(k, v)| k == "user" && !v.is_empty()) {
        return Err(DecodeError::MissingUser);
    }
    Ok(params)
}

/// A startup string as text: itself if UTF-8, else with every non-ASCII byte as `\xNN`.
fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => bytes
            .iter()
            .map(|&b| {
                if b.is_ascii() {
                    char::from(b).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect(),
    }
}

/// Appends a protocol 3.0 StartupMessage with `params` (which should include `user`).
pub fn encode_startup(buf: &mut BytesMut, params: &[(&str, &str)]) {
    encode_startup_version(buf, PROTOCOL_VERSION_3, params);
}

/// Appends a StartupMessage asking for protocol `version` (e.g. to test minor-version negotiation).
pub fn encode_startup_version(buf: &mut BytesMut, version: u32, params: &[(&str, &str)]) {
    put_untagged(buf, |b| {
        b.put_u32(version);
        for (name, value) in params {
            put_cstr(b, name.as_bytes());
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    });
}

/// Appends a CancelRequest for backend `pid` with key `secret`.
pub fn encode_cancel_request(buf: &mut BytesMut, pid: i32, secret: i32) {
    put_untagged(buf, |b| {
        b.put_u32(CANCEL_REQUEST_CODE);
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// Appends an SSLRequest.
pub fn encode_ssl_request(buf: &mut BytesMut) {
    put_untagged(buf, |b| b.put_u32(SSL_REQUEST_CODE));
}

/// Appends a GSSENCRequest.
pub fn encode_gssenc_request(buf: &mut BytesMut) {
    put_untagged(buf, |b| b.put_u32(GSSENC_REQUEST_CODE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(bytes: &[u8]) -> Result<Option<StartupRequest>, DecodeError> {
        decode_startup(&mut BytesMut::from(bytes))
    }

    fn startup(params: &[(&str, &str)]) -> StartupRequest {
        StartupRequest::Startup {
            version: PROTOCOL_VERSION_3,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn ssl_gss_cancel_exact_bytes() {
        let mut b = BytesMut::new();
        encode_ssl_request(&mut b);
        assert_eq!(&b[..], b"\0\0\0\x08\x04\xd2\x16\x2f");
        assert_eq!(decode(&b), Ok(Some(StartupRequest::Ssl)));

        let mut b = BytesMut::new();
        encode_gssenc_request(&mut b);
        assert_eq!(&b[..], b"\0\0\0\x08\x04\xd2\x16\x30");
        assert_eq!(decode(&b), Ok(Some(StartupRequest::GssEnc)));

        let mut b = BytesMut::new();
        encode_cancel_request(&mut b, 42, -7);
        assert_eq!(
            &b[..],
            b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x2a\xff\xff\xff\xf9"
        );
        assert_eq!(
            decode(&b),
            Ok(Some(StartupRequest::Cancel {
                pid: 42,
                secret: -7
            }))
        );
    }

    #[test]
    fn startup_exact_bytes_and_round_trip() {
        let mut b = BytesMut::new();
        encode_startup(&mut b, &[("user", "bob"), ("database", "bank")]);
        assert_eq!(&b[..], b"\0\0\0\x20\0\x03\0\0user\0bob\0database\0bank\0\0");
        let req = decode(&b).unwrap().unwrap();
        assert_eq!(req, startup(&[("user", "bob"), ("database", "bank")]));
        assert_eq!(req.param("database"), Some("bank"));
        assert_eq!(req.param("options"), None);
        assert_eq!(StartupRequest::Ssl.param("user"), None);
    }

    #[test]
    fn minor_versions_are_reported_others_refused() {
        let mut b = BytesMut::new();
        encode_startup_version(&mut b, PROTOCOL_VERSION_3 | 2, &[("user", "u"), ("", "")]);
        // The stray empty pair writes an early terminator: still valid only if it is last, and
        // here it is followed by another NUL.
        assert!(matches!(decode(&b), Err(DecodeError::Malformed(_))));

        let mut b = BytesMut::new();
        encode_startup_version(&mut b, PROTOCOL_VERSION_3 | 2, &[("user", "u")]);
        assert_eq!(
            decode(&b).unwrap().unwrap(),
            StartupRequest::Startup {
                version: 0x0003_0002,
                params: vec![("user".into(), "u".into())]
            }
        );

        let mut b = BytesMut::new();
        encode_startup_version(&mut b, 2 << 16, &[("user", "u")]);
        assert_eq!(
            decode(&b),
            Err(DecodeError::UnsupportedProtocol(0x0002_0000))
        );
        assert_eq!(
            DecodeError::UnsupportedProtocol(0x0002_0000).to_string(),
            "unsupported frontend protocol 2.0 (code 131072); only protocol 3.x is supported"
        );
    }

    #[test]
    fn malformed_packets() {
        // Missing final terminator.
        assert_eq!(
            decode(b"\0\0\0\x11\0\x03\0\0user\0bob\0"),
            Err(DecodeError::Malformed(
                "startup parameters must end with an empty name as the last byte"
            ))
        );
        // Name without a value.
        assert!(matches!(
            decode(b"\0\0\0\x0d\0\x03\0\0user\0"),
            Err(DecodeError::Malformed(_))
        ));
        // Bytes after the terminator.
        assert!(matches!(
            decode(b"\0\0\0\x13\0\x03\0\0user\0bob\0\0x"),
            Err(DecodeError::Malformed(_))
        ));
        // No user.
        let mut b = BytesMut::new();
        encode_startup(&mut b, &[("database", "bank")]);
        assert_eq!(decode(&b), Err(DecodeError::MissingUser));
        // Not UTF-8 (a LATIN1 client): kept, escaped.
        assert_eq!(
            decode(b"\0\0\0\x12\0\x03\0\0user\0b\xffb\0\0"),
            Ok(Some(startup(&[("user", "b\\xffb")])))
        );
        // Wrong fixed sizes.
        assert!(matches!(
            decode(b"\0\0\0\x0c\x04\xd2\x16\x2f\0\0\0\0"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"\0\0\0\x0c\x04\xd2\x16\x2e\0\0\0\0"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn lengths_are_bounded_before_the_body_arrives() {
        assert_eq!(decode(b"\0\0\0"), Ok(None));
        assert_eq!(decode(b"\0\0\0\x08\x04\xd2"), Ok(None));
        assert_eq!(decode(b"\0\0\0\x07"), Err(DecodeError::BadLength(7)));
        assert_eq!(
            decode(b"\xff\xff\xff\xf0"),
            Err(DecodeError::BadLength(-16))
        );
        assert_eq!(
            decode(b"\x7f\xff\xff\xff"),
            Err(DecodeError::TooLong {
                len: i32::MAX as usize,
                max: MAX_STARTUP_LEN
            })
        );
        assert_eq!(
            decode(b"\0\0\x27\x15"),
            Err(DecodeError::TooLong {
                len: 10_005,
                max: MAX_STARTUP_LEN
            })
        );
        // 10,000 bytes after the length field, as PostgreSQL allows.
        assert_eq!(decode(b"\0\0\x27\x14"), Ok(None));
        assert_eq!(decode(b"\xff\xff\xff\xff"), Err(DecodeError::BadLength(-1)));
        assert_eq!(
            decode(b"\x80\0\0\0"),
            Err(DecodeError::BadLength(i64::from(i32::MIN)))
        );
    }

    #[test]
    fn truncated_packets() {
        // A CancelRequest whose length covers only the process id.
        assert!(matches!(
            decode(b"\0\0\0\x0c\x04\xd2\x16\x2e\0\0\0\x2a"),
            Err(DecodeError::Malformed(_))
        ));
        // A user name whose last character ("é", C3 A9) is cut after its first byte, in a
        // packet whose length leaves out the final terminator.
        assert!(matches!(
            decode(b"\0\0\0\x12\0\x03\0\0user\0jos\xc3\0\0"),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            decode(b"\0\0\0\x13\0\x03\0\0user\0jos\xc3\0\0"),
            Ok(Some(startup(&[("user", "jos\\xc3")])))
        );
    }

    #[test]
    fn errors_leave_buffer_untouched() {
        let mut b = BytesMut::from(&b"\0\0\0\x0d\0\x03\0\0user\0"[..]);
        assert!(decode_startup(&mut b).is_err());
        assert_eq!(b.len(), 13);
    }

    fn request() -> impl Strategy<Value = StartupRequest> {
        let name = "[a-z_]{1,12}";
        let value = "[^\u{0}]{0,12}";
        prop_oneof![
            Just(StartupRequest::Ssl),
            Just(StartupRequest::GssEnc),
            (any::<i32>(), any::<i32>())
                .prop_map(|(pid, secret)| StartupRequest::Cancel { pid, secret }),
            (
                0u32..4,
                "[^\u{0}]{1,12}",
                proptest::collection::vec((name, value), 0..5)
            )
                .prop_map(|(minor, user, mut rest)| {
                    rest.insert(0, ("user".to_string(), user));
                    StartupRequest::Startup {
                        version: PROTOCOL_VERSION_3 | minor,
                        params: rest,
                    }
                }),
        ]
    }

    fn encode(b: &mut BytesMut, r: &StartupRequest) {
        match r {
            StartupRequest::Ssl => encode_ssl_request(b),
            StartupRequest::GssEnc => encode_gssenc_request(b),
            StartupRequest::Cancel { pid, secret } => encode_cancel_request(b, *pid, *secret),
            StartupRequest::Startup { version, params } => {
                let p: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                encode_startup_version(b, *version, &p);
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_chunking_yields_same_packets(
            reqs in proptest::collection::vec(request(), 1..6),
            cuts in proptest::collection::vec(1usize..16, 1..32),
        ) {
            let mut stream = BytesMut::new();
            for r in &reqs {
                encode(&mut stream, r);
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut pos = 0;
            let mut cuts = cuts.into_iter().cycle();
            while pos < stream.len() {
                let end = (pos + cuts.next().unwrap_or(1)).min(stream.len());
                buf.extend_from_slice(&stream[pos..end]);
                pos = end;
                while let Some(r) = decode_startup(&mut buf).unwrap() {
                    got.push(r);
                }
            }
            prop_assert!(buf.is_empty());
            prop_assert_eq!(got, reqs);
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = decode_startup(&mut buf) {}
        }

        #[test]
        fn random_bodies_never_panic(code in prop_oneof![Just(PROTOCOL_VERSION_3), any::<u32>()],
                                     body in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut b = BytesMut::new();
            put_untagged(&mut b, |b| { b.put_u32(code); b.put_slice(&body); });
            let _ = decode_startup(&mut b);
        }
    }
}
