//! Encoders of server messages, used when the proxy speaks as a server to its clients.
//!
//! Invariants: each function appends exactly one complete message (tag, length, body) to the
//! caller's buffer and never panics; strings are cut at a NUL, which the protocol cannot carry;
//! counts beyond the protocol's Int16 are saturated and the items written match the count.

use bytes::{BufMut, BytesMut};

use super::{auth_code, TEXT_OID};
use crate::tags::backend as tag;
use crate::wire::{count_i16, len_i32, put_cstr, put_message};

fn put_auth(buf: &mut BytesMut, code: i32, extra: impl FnOnce(&mut BytesMut)) {
    put_message(buf, tag::AUTHENTICATION, |b| {
        b.put_i32(code);
        extra(b);
    });
}

/// AuthenticationOk.
pub fn authentication_ok(buf: &mut BytesMut) {
    put_auth(buf, auth_code::OK, |_| {});
}

/// AuthenticationCleartextPassword.
pub fn authentication_cleartext(buf: &mut BytesMut) {
    put_auth(buf, auth_code::CLEARTEXT_PASSWORD, |_| {});
}

/// AuthenticationMD5Password with `salt`.
pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    put_auth(buf, auth_code::MD5_PASSWORD, |b| b.put_slice(&salt));
}

/// AuthenticationSASL offering `mechanisms` (e.g. `["SCRAM-SHA-256"]`).
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    put_auth(buf, auth_code::SASL, |b| {
        for m in mechanisms {
            put_cstr(b, m.as_bytes());
        }
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue carrying a server-first message.
pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    put_auth(buf, auth_code::SASL_CONTINUE, |b| b.put_slice(data));
}

/// AuthenticationSASLFinal carrying a server-final message.
pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    put_auth(buf, auth_code::SASL_FINAL, |b| b.put_slice(data));
}

/// ParameterStatus `name` = `value`.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    put_message(buf, tag::PARAMETER_STATUS, |b| {
        put_cstr(b, name.as_bytes());
        put_cstr(b, value.as_bytes());
    });
}

/// BackendKeyData: the key a client must quote in a CancelRequest.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    put_message(buf, tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

/// ReadyForQuery with transaction `status`: [`IDLE`](super::IDLE),
/// [`IN_TRANSACTION`](super::IN_TRANSACTION) or
/// [`IN_FAILED_TRANSACTION`](super::IN_FAILED_TRANSACTION).
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    put_message(buf, tag::READY_FOR_QUERY, |b| b.put_u8(status));
}

/// CommandComplete with completion `tag` (e.g. `"SELECT 1"`).
pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    put_message(buf, tag::COMMAND_COMPLETE, |b| put_cstr(b, tag.as_bytes()));
}

/// EmptyQueryResponse.
pub fn empty_query_response(buf: &mut BytesMut) {
    put_message(buf, tag::EMPTY_QUERY, |_| {});
}

/// ParseComplete (e.g. to answer a Parse the proxy satisfied without the server).
pub fn parse_complete(buf: &mut BytesMut) {
    put_message(buf, tag::PARSE_COMPLETE, |_| {});
}

/// BindComplete.
pub fn bind_complete(buf: &mut BytesMut) {
    put_message(buf, tag::BIND_COMPLETE, |_| {});
}

/// CloseComplete.
pub fn close_complete(buf: &mut BytesMut) {
    put_message(buf, tag::CLOSE_COMPLETE, |_| {});
}

/// NoData.
pub fn no_data(buf: &mut BytesMut) {
    put_message(buf, tag::NO_DATA, |_| {});
}

/// NegotiateProtocolVersion: the newest minor version supported and the `_pq_.*` startup options
/// that were not recognised.
pub fn negotiate_protocol_version(buf: &mut BytesMut, newest_minor: u32, unrecognized: &[&str]) {
    put_message(buf, tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_u32(newest_minor);
        b.put_i32(len_i32(unrecognized.len()));
        for option in unrecognized {
            put_cstr(b, option.as_bytes());
        }
    });
}

/// The fields the proxy writes in an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    /// `"ERROR"`, `"FATAL"` (connection closes after it), or for notices `"WARNING"`, `"NOTICE"`...
    pub severity: &'a str,
    /// SQLSTATE, five characters (e.g. `"53300"`).
    pub code: &'a str,
    /// Primary human-readable message.
    pub message: &'a str,
    /// Optional secondary message with details.
    pub detail: Option<&'a str>,
    /// Optional suggestion of what to do.
    pub hint: Option<&'a str>,
}

impl<'a> ErrorFields<'a> {
    /// An `ERROR` (the session continues).
    pub fn error(code: &'a str, message: &'a str) -> Self {
        ErrorFields {
            severity: "ERROR",
            code,
            message,
            detail: None,
            hint: None,
        }
    }

    /// A `FATAL` error (the connection is closed after it).
    pub fn fatal(code: &'a str, message: &'a str) -> Self {
        ErrorFields {
            severity: "FATAL",
            ..Self::error(code, message)
        }
    }

    /// Adds a detail field.
    pub fn with_detail(self, detail: &'a str) -> Self {
        ErrorFields {
            detail: Some(detail),
            ..self
        }
    }

    /// Adds a hint field.
    pub fn with_hint(self, hint: &'a str) -> Self {
        ErrorFields {
            hint: Some(hint),
            ..self
        }
    }
}

fn put_fields(b: &mut BytesMut, e: &ErrorFields<'_>) {
    // V (non-localised severity, PostgreSQL 9.6+) equals S since we do not localise.
    let fields = [
        (b'S', Some(e.severity)),
        (b'V', Some(e.severity)),
        (b'C', Some(e.code)),
        (b'M', Some(e.message)),
        (b'D', e.detail),
        (b'H', e.hint),
    ];
    for (kind, value) in fields {
        if let Some(value) = value {
            b.put_u8(kind);
            put_cstr(b, value.as_bytes());
        }
    }
    b.put_u8(0);
}

/// ErrorResponse with fields S, V, C, M, then D and H when present.
pub fn error_response(buf: &mut BytesMut, e: &ErrorFields<'_>) {
    put_message(buf, tag::ERROR_RESPONSE, |b| put_fields(b, e));
}

/// NotificationResponse from process `pid`; `rest` is the channel and payload as the server
/// sent them (two NUL-terminated strings).
pub fn notification(buf: &mut BytesMut, pid: i32, rest: &[u8]) {
    put_message(buf, tag::NOTIFICATION, |b| {
        b.put_i32(pid);
        b.put_slice(rest);
    });
}

/// NoticeResponse, laid out as [`error_response`].
pub fn notice_response(buf: &mut BytesMut, e: &ErrorFields<'_>) {
    put_message(buf, tag::NOTICE_RESPONSE, |b| put_fields(b, e));
}

/// RowDescription of text columns (oid 25, text format), no source table. At most 32767 columns
/// (the protocol's Int16 count) are written.
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    let n = count_i16(columns.len());
    put_message(buf, tag::ROW_DESCRIPTION, |b| {
        b.put_i16(n);
        for name in columns.iter().take(n as usize) {
            put_cstr(b, name.as_bytes());
            b.put_u32(0); // table oid
            b.put_i16(0); // column attribute number
            b.put_u32(TEXT_OID);
            b.put_i16(-1); // type size: variable
            b.put_i32(-1); // type modifier: none
            b.put_i16(0); // format: text
        }
    });
}

/// DataRow of text values (`None` is SQL NULL). At most 32767 values are written.
pub fn data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    let n = count_i16(values.len());
    put_message(buf, tag::DATA_ROW, |b| {
        b.put_i16(n);
        for value in values.iter().take(n as usize) {
            match value {
                Some(v) => {
                    b.put_i32(len_i32(v.len()));
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::IDLE;

    fn one(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b);
        b
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(&one(|b| ready_for_query(b, IDLE))[..], b"Z\0\0\0\x05I");
        assert_eq!(&one(authentication_ok)[..], b"R\0\0\0\x08\0\0\0\0");
        assert_eq!(&one(authentication_cleartext)[..], b"R\0\0\0\x08\0\0\0\x03");
        assert_eq!(
            &one(|b| authentication_md5(b, *b"abcd"))[..],
            b"R\0\0\0\x0c\0\0\0\x05abcd"
        );
        assert_eq!(
            &one(|b| authentication_sasl(b, &["SCRAM-SHA-256"]))[..],
            b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0"
        );
        assert_eq!(
            &one(|b| authentication_sasl_continue(b, b"r=x"))[..],
            b"R\0\0\0\x0b\0\0\0\x0br=x"
        );
        assert_eq!(
            &one(|b| authentication_sasl_final(b, b"v=x"))[..],
            b"R\0\0\0\x0b\0\0\0\x0cv=x"
        );
        assert_eq!(
            &one(|b| parameter_status(b, "TimeZone", "UTC"))[..],
            b"S\0\0\0\x11TimeZone\0UTC\0"
        );
        assert_eq!(
            &one(|b| backend_key_data(b, 1, -1))[..],
            b"K\0\0\0\x0c\0\0\0\x01\xff\xff\xff\xff"
        );
        assert_eq!(
            &one(|b| command_complete(b, "SELECT 1"))[..],
            b"C\0\0\0\x0dSELECT 1\0"
        );
        assert_eq!(&one(empty_query_response)[..], b"I\0\0\0\x04");
        assert_eq!(&one(parse_complete)[..], b"1\0\0\0\x04");
        assert_eq!(&one(bind_complete)[..], b"2\0\0\0\x04");
        assert_eq!(&one(close_complete)[..], b"3\0\0\0\x04");
        assert_eq!(&one(no_data)[..], b"n\0\0\0\x04");
        assert_eq!(
            &one(|b| negotiate_protocol_version(b, 0, &["_pq_.x"]))[..],
            b"v\0\0\0\x13\0\0\0\0\0\0\0\x01_pq_.x\0"
        );
        assert_eq!(
            &one(|b| error_response(b, &ErrorFields::fatal("53300", "full").with_hint("wait")))[..],
            b"E\0\0\0\x26SFATAL\0VFATAL\0C53300\0Mfull\0Hwait\0\0"
        );
        assert_eq!(
            &one(|b| notice_response(b, &ErrorFields::error("01000", "n")))[..],
            b"N\0\0\0\x1dSERROR\0VERROR\0C01000\0Mn\0\0"
        );
        assert_eq!(
            &one(|b| row_description(b, &["a"]))[..],
            b"T\0\0\0\x1a\0\x01a\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0"
        );
        assert_eq!(
            &one(|b| data_row(b, &[Some("1"), None]))[..],
            b"D\0\0\0\x0f\0\x02\0\0\0\x011\xff\xff\xff\xff"
        );
    }

    #[test]
    fn nul_in_strings_cannot_break_framing() {
        let b = one(|b| command_complete(b, "a\0b"));
        assert_eq!(&b[..], b"C\0\0\0\x06a\0");
    }
}
