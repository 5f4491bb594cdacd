//! Decoders of server message bodies, used when the proxy reads real servers.
//!
//! Invariants: input is the body of one frame (see [`crate::framing`]); every read is
//! bounds-checked, trailing bytes are rejected, and allocation is proportional to bytes actually
//! present.

use bytes::Bytes;

use super::{auth_code, ErrorFields, IDLE, IN_FAILED_TRANSACTION, IN_TRANSACTION};
use crate::wire::Reader;
use crate::DecodeError;

/// An authentication request (or result) from a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear.
    CleartextPassword,
    /// Send the md5 response computed with `salt`.
    Md5Password {
        /// The 4-byte salt.
        salt: [u8; 4],
    },
    /// Start a SASL exchange with one of these mechanisms.
    Sasl {
        /// Mechanism names, in the server's order of preference.
        mechanisms: Vec<String>,
    },
    /// SASL challenge (for SCRAM: server-first).
    SaslContinue(Bytes),
    /// SASL outcome data (for SCRAM: server-final).
    SaslFinal(Bytes),
    /// A method this crate does not implement (Kerberos, GSS, SSPI, or unknown), by code.
    Unsupported(u32),
}

/// Decodes the body of an `R` message.
pub fn parse_authentication(body: &Bytes) -> Result<Authentication, DecodeError> {
    let mut r = Reader::new(body);
    let code = r.i32("authentication request code")?;
    let auth = match code {
        auth_code::OK => Authentication::Ok,
        auth_code::CLEARTEXT_PASSWORD => Authentication::CleartextPassword,
        auth_code::MD5_PASSWORD => {
            let salt = r.array("AuthenticationMD5Password salt")?;
            Authentication::Md5Password { salt }
        }
        auth_code::SASL => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr("AuthenticationSASL mechanism list is not NUL-terminated")?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m.to_owned());
            }
            if mechanisms.is_empty() {
                return Err(DecodeError::Malformed(
                    "AuthenticationSASL offers no mechanism",
                ));
            }
            Authentication::Sasl { mechanisms }
        }
        auth_code::SASL_CONTINUE => return Ok(Authentication::SaslContinue(body.slice(4..))),
        auth_code::SASL_FINAL => return Ok(Authentication::SaslFinal(body.slice(4..))),
        other => return Ok(Authentication::Unsupported(other as u32)),
    };
    r.finish("trailing bytes after an authentication request")?;
    Ok(auth)
}

/// Decodes a ParameterStatus body: (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Result<(&str, &str), DecodeError> {
    let mut r = Reader::new(body);
    let name = r.cstr("ParameterStatus name is not NUL-terminated")?;
    let value = r.cstr("ParameterStatus value is not NUL-terminated")?;
    r.finish("trailing bytes after ParameterStatus")?;
    Ok((name, value))
}

/// Decodes a BackendKeyData body: (process id, secret key). Protocol 3.2's longer keys are refused.
pub fn parse_backend_key_data(body: &[u8]) -> Result<(i32, i32), DecodeError> {
    let mut r = Reader::new(body);
    let pid = r.i32("BackendKeyData process id")?;
    let secret = r.i32("BackendKeyData secret key")?;
    r.finish("BackendKeyData secret key longer than 4 bytes")?;
    Ok((pid, secret))
}

/// Decodes a ReadyForQuery body: `b'I'`, `b'T'` or `b'E'`.
pub fn parse_ready_for_query(body: &[u8]) -> Result<u8, DecodeError> {
    match body {
        [s @ (IDLE | IN_TRANSACTION | IN_FAILED_TRANSACTION)] => Ok(*s),
        [_] => Err(DecodeError::Malformed(
            "ReadyForQuery status is not 'I', 'T' or 'E'",
        )),
        _ => Err(DecodeError::Malformed("ReadyForQuery body must be 1 byte")),
    }
}

/// Decodes a CommandComplete body: the completion tag.
pub fn parse_command_complete(body: &[u8]) -> Result<&str, DecodeError> {
    let mut r = Reader::new(body);
    let tag = r.cstr("CommandComplete tag is not NUL-terminated")?;
    r.finish("trailing bytes after CommandComplete")?;
    Ok(tag)
}

/// The fields of an ErrorResponse or NoticeResponse a pooler cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorNotice {
    /// Non-localised severity (`V`) when sent, else the possibly localised `S`.
    pub severity: String,
    /// SQLSTATE (`C`).
    pub code: String,
    /// Primary message (`M`).
    pub message: String,
    /// Detail (`D`).
    pub detail: Option<String>,
    /// Hint (`H`).
    pub hint: Option<String>,
}

impl ErrorNotice {
    /// Borrowed fields, e.g. to relay this error with [`error_response`](super::error_response).
    pub fn fields(&self) -> ErrorFields<'_> {
        ErrorFields {
            severity: &self.severity,
            code: &self.code,
            message: &self.message,
            detail: self.detail.as_deref(),
            hint: self.hint.as_deref(),
        }
    }

    /// True for `FATAL` and `PANIC`: the server closes the connection after sending it.
    pub fn is_fatal(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }
}

/// Decodes an ErrorResponse or NoticeResponse body. Texts are in the connection's client_encoding,
/// so they are decoded lossily rather than refused when not UTF-8. S (or V), C and M are required;
/// unknown field types are skipped.
pub fn parse_error_notice(body: &[u8]) -> Result<ErrorNotice, DecodeError> {
    let mut r = Reader::new(body);
    let (mut s, mut v, mut c, mut m, mut d, mut h) = (None, None, None, None, None, None);
    loop {
        let kind = r.u8("error field type or terminator")?;
        if kind == 0 {
            break;
        }
        let value = r.cbytes("error field value is not NUL-terminated")?;
        let slot = match kind {
            b'S' => &mut s,
            b'V' => &mut v,
            b'C' => &mut c,
            b'M' => &mut m,
            b'D' => &mut d,
            b'H' => &mut h,
            _ => continue,
        };
        *slot = Some(String::from_utf8_lossy(value).into_owned());
    }
    r.finish("trailing bytes after error fields")?;
    Ok(ErrorNotice {
        severity: v
            .or(s)
            .ok_or(DecodeError::Malformed("error has no severity field"))?,
        code: c.ok_or(DecodeError::Malformed("error has no SQLSTATE field"))?,
        message: m.ok_or(DecodeError::Malformed("error has no message field"))?,
        detail: d,
        hint: h,
    })
}

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    /// Column name.
    pub name: &'a str,
    /// Oid of the source table, or 0.
    pub table_oid: u32,
    /// Attribute number in the source table, or 0.
    pub column_id: i16,
    /// Oid of the column's type.
    pub type_oid: u32,
    /// Type size (negative: variable).
    pub type_size: i16,
    /// Type modifier.
    pub type_modifier: i32,
    /// Format code: 0 text, 1 binary.
    pub format: i16,
}

/// Decodes a RowDescription body (e.g. a health check's result shape).
pub fn parse_row_description(body: &[u8]) -> Result<Vec<Column<'_>>, DecodeError> {
    let mut r = Reader::new(body);
    let n = r.i16("RowDescription column count")?;
    let n = usize::try_from(n).map_err(|_| DecodeError::Malformed("negative column count"))?;
    let mut columns = Vec::new();
    for _ in 0..n {
        columns.push(Column {
            name: r.cstr("RowDescription column name is not NUL-terminated")?,
            table_oid: r.u32("RowDescription table oid")?,
            column_id: r.i16("RowDescription column number")?,
            type_oid: r.u32("RowDescription type oid")?,
            type_size: r.i16("RowDescription type size")?,
            type_modifier: r.i32("RowDescription type modifier")?,
            format: r.i16("RowDescription format code")?,
        });
    }
    r.finish("trailing bytes after RowDescription")?;
    Ok(columns)
}

/// Decodes a DataRow body: raw values, `None` for NULL.
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, DecodeError> {
    let mut r = Reader::new(body);
    let n = r.i16("DataRow value count")?;
    let n = usize::try_from(n).map_err(|_| DecodeError::Malformed("negative value count"))?;
    let mut values = Vec::new();
    for _ in 0..n {
        let len = r.i32("DataRow value length")?;
        values.push(match len {
            -1 => None,
            len => {
                let len = usize::try_from(len)
                    .map_err(|_| DecodeError::Malformed("DataRow value length below -1"))?;
                Some(r.bytes(len, "DataRow value")?)
            }
        });
    }
    r.finish("trailing bytes after DataRow")?;
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::*;
    use crate::framing::{decode_frame, DEFAULT_MAX_MESSAGE_LEN};
    use crate::tags::backend as tag;
    use bytes::BytesMut;
    use proptest::prelude::*;

    fn one(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b);
        b
    }

    /// Splits the single frame `bytes` holds, checking nothing is left over.
    fn frame(bytes: &BytesMut) -> (u8, Bytes) {
        let mut b = bytes.clone();
        let f = decode_frame(&mut b, DEFAULT_MAX_MESSAGE_LEN)
            .unwrap()
            .unwrap();
        assert!(b.is_empty());
        (f.tag, f.body)
    }
    #[test]
    fn authentication_round_trips() {
        let cases: Vec<(BytesMut, Authentication)> = vec![
            (one(authentication_ok), Authentication::Ok),
            (
                one(authentication_cleartext),
                Authentication::CleartextPassword,
            ),
            (
                one(|b| authentication_md5(b, [1, 2, 3, 4])),
                Authentication::Md5Password { salt: [1, 2, 3, 4] },
            ),
            (
                one(|b| authentication_sasl(b, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])),
                Authentication::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
                },
            ),
            (
                one(|b| authentication_sasl_continue(b, b"r=abc,s=xyz,i=4096")),
                Authentication::SaslContinue(Bytes::from_static(b"r=abc,s=xyz,i=4096")),
            ),
            (
                one(|b| authentication_sasl_final(b, b"v=sig")),
                Authentication::SaslFinal(Bytes::from_static(b"v=sig")),
            ),
        ];
        for (bytes, want) in cases {
            let (t, body) = frame(&bytes);
            assert_eq!(t, tag::AUTHENTICATION);
            assert_eq!(parse_authentication(&body), Ok(want));
        }
        let gss = Bytes::from_static(b"\0\0\0\x07");
        assert_eq!(
            parse_authentication(&gss),
            Ok(Authentication::Unsupported(7))
        );
    }

    #[test]
    fn authentication_malformed() {
        let p = |b: &'static [u8]| parse_authentication(&Bytes::from_static(b));
        assert!(matches!(p(b"\0\0"), Err(DecodeError::TooShort { .. })));
        assert!(matches!(
            p(b"\0\0\0\x05ab"),
            Err(DecodeError::TooShort { .. })
        ));
        assert!(matches!(
            p(b"\0\0\0\x05abcde"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(p(b"\0\0\0\0x"), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            p(b"\0\0\0\x0aSCRAM"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(p(b"\0\0\0\x0a\0"), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            p(b"\0\0\0\x0aA\0"),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn simple_round_trips() {
        let (t, body) = frame(&one(|b| parameter_status(b, "client_encoding", "UTF8")));
        assert_eq!(t, tag::PARAMETER_STATUS);
        assert_eq!(
            parse_parameter_status(&body),
            Ok(("client_encoding", "UTF8"))
        );

        let (t, body) = frame(&one(|b| backend_key_data(b, 1234, i32::MIN)));
        assert_eq!(t, tag::BACKEND_KEY_DATA);
        assert_eq!(parse_backend_key_data(&body), Ok((1234, i32::MIN)));

        for status in [IDLE, IN_TRANSACTION, IN_FAILED_TRANSACTION] {
            let (t, body) = frame(&one(|b| ready_for_query(b, status)));
            assert_eq!(t, tag::READY_FOR_QUERY);
            assert_eq!(parse_ready_for_query(&body), Ok(status));
        }

        let (t, body) = frame(&one(|b| command_complete(b, "INSERT 0 1")));
        assert_eq!(t, tag::COMMAND_COMPLETE);
        assert_eq!(parse_command_complete(&body), Ok("INSERT 0 1"));

        let (t, body) = frame(&one(empty_query_response));
        assert_eq!((t, body.len()), (tag::EMPTY_QUERY, 0));
    }

    #[test]
    fn simple_decoders_reject_bad_bodies() {
        assert!(parse_ready_for_query(b"X").is_err());
        assert!(parse_ready_for_query(b"").is_err());
        assert!(parse_ready_for_query(b"II").is_err());
        assert!(parse_backend_key_data(b"\0\0\0\x01\0\0").is_err());
        assert!(parse_backend_key_data(&[0; 12]).is_err());
        assert!(parse_parameter_status(b"a\0b").is_err());
        assert!(parse_parameter_status(b"a\0b\0c").is_err());
        assert!(parse_command_complete(b"SELECT").is_err());
        assert_eq!(parse_command_complete(b"\xff\0"), Err(DecodeError::Utf8));
        // "€" (E2 82 AC) cut after two of its bytes.
        assert_eq!(
            parse_parameter_status(b"TimeZone\0\xe2\x82\0"),
            Err(DecodeError::Utf8)
        );
        // Truncated fixed-size fields.
        assert!(matches!(
            parse_backend_key_data(b"\0\0\0\x01\0\0"),
            Err(DecodeError::TooShort {
                needed: 4,
                available: 2,
                ..
            })
        ));
        assert!(matches!(
            parse_authentication(&Bytes::from_static(b"\0\0\0\x05\x01\x02\x03")),
            Err(DecodeError::TooShort {
                needed: 4,
                available: 3,
                ..
            })
        ));
        // A DataRow value length of 0xFFFFFFFE (-2) and i32::MAX with no bytes behind it.
        assert_eq!(
            parse_data_row(b"\0\x01\xff\xff\xff\xfe"),
            Err(DecodeError::Malformed("DataRow value length below -1"))
        );
        assert!(matches!(
            parse_data_row(b"\0\x01\x7f\xff\xff\xffab"),
            Err(DecodeError::TooShort {
                needed: 0x7fff_ffff,
                available: 2,
                ..
            })
        ));
    }

    #[test]
    fn error_round_trip() {
        let e = ErrorFields::fatal("53300", "pool full")
            .with_detail("10 of 10 in use")
            .with_hint("retry later");
        for (encode, want_tag) in [
            (
                error_response as fn(&mut BytesMut, &ErrorFields<'_>),
                tag::ERROR_RESPONSE,
            ),
            (notice_response, tag::NOTICE_RESPONSE),
        ] {
            let (t, body) = frame(&one(|b| encode(b, &e)));
            assert_eq!(t, want_tag);
            let parsed = parse_error_notice(&body).unwrap();
            assert_eq!(parsed.fields(), e);
            assert!(parsed.is_fatal());
        }
    }

    #[test]
    fn error_decoding_prefers_v_and_skips_unknown_fields() {
        let body = b"SFEHLER\0VERROR\0C42P01\0Mno such table\0P15\0Ffile.c\0\0";
        let e = parse_error_notice(body).unwrap();
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "42P01");
        assert_eq!(e.message, "no such table");
        assert_eq!((e.detail, e.hint), (None, None));
        // Pre-9.6 servers send no V.
        assert_eq!(
            parse_error_notice(b"SERROR\0C1\0Mm\0\0").unwrap().severity,
            "ERROR"
        );
        // Non-UTF-8 text (another client_encoding) is kept, lossily.
        assert_eq!(
            parse_error_notice(b"SERROR\0C1\0M\xe9\0\0")
                .unwrap()
                .message,
            "\u{fffd}"
        );
    }

    #[test]
    fn error_decoding_rejects_malformed() {
        for body in [
            &b""[..],
            b"SERROR\0C1\0Mm\0",
            b"SERROR\0C1\0Mm",
            b"SERROR\0C1\0Mm\0\0x",
            b"C1\0Mm\0\0",
            b"SERROR\0Mm\0\0",
            b"SERROR\0C1\0\0",
        ] {
            assert!(parse_error_notice(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn rows_round_trip() {
        let (t, body) = frame(&one(|b| row_description(b, &["pool", "cl_active"])));
        assert_eq!(t, tag::ROW_DESCRIPTION);
        let cols = parse_row_description(&body).unwrap();
        assert_eq!(
            cols.iter().map(|c| c.name).collect::<Vec<_>>(),
            ["pool", "cl_active"]
        );
        assert!(cols
            .iter()
            .all(|c| c.type_oid == TEXT_OID && c.format == 0 && c.type_size == -1));

        let (t, body) = frame(&one(|b| data_row(b, &[Some("bank"), None, Some("")])));
        assert_eq!(t, tag::DATA_ROW);
        assert_eq!(
            parse_data_row(&body),
            Ok(vec![Some(&b"bank"[..]), None, Some(&b""[..])])
        );
        assert!(parse_data_row(b"\0\x01\xff\xff\xff\xfe").is_err());
        assert!(parse_data_row(b"\0\x01\x7f\xff\xff\xff").is_err());
        assert!(parse_data_row(b"\xff\xff").is_err());
        assert!(parse_row_description(b"\x7f\xff").is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..96),
            code in 0i32..14,
        ) {
            let _ = parse_authentication(&Bytes::from(body.clone()));
            let mut with_code = code.to_be_bytes().to_vec();
            with_code.extend_from_slice(&body);
            let _ = parse_authentication(&Bytes::from(with_code));
            let _ = parse_parameter_status(&body);
            let _ = parse_backend_key_data(&body);
            let _ = parse_ready_for_query(&body);
            let _ = parse_command_complete(&body);
            let _ = parse_error_notice(&body);
            let _ = parse_row_description(&body);
            let _ = parse_data_row(&body);
        }

        #[test]
        fn data_rows_round_trip(
            values in proptest::collection::vec(proptest::option::of(".{0,8}"), 0..8),
        ) {
            let refs: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
            let (_, body) = frame(&one(|b| data_row(b, &refs)));
            let parsed = parse_data_row(&body).unwrap();
            let want: Vec<Option<&[u8]>> = refs.iter().map(|v| v.map(str::as_bytes)).collect();
            prop_assert_eq!(parsed, want);
        }
    }
}
