//! Messages a client (frontend) sends: body decoders, used when the proxy reads its clients, and
//! encoders, used when it talks to servers itself (authentication, re-preparing statements,
//! resets).
//!
//! Invariants: decoders take a frame's body (see [`crate::framing`]), borrow from it rather than
//! copy, check every bound, and reject trailing bytes (except Bind, whose tail is deliberately left
//! unread); encoders append one complete message and never panic.
//!
//! Strings a client sends after startup (SQL text, statement and portal names) are in the
//! client's `client_encoding`, which need not be UTF-8 (LATIN1, KOI8R, SJIS, ...): they are
//! decoded as bytes and never checked against any encoding. Only the authentication messages,
//! whose fields the protocol defines as ASCII (SASL mechanism names), are read as `str`.

use bytes::{BufMut, BytesMut};

use crate::tags::frontend as tag;
use crate::wire::{count_u16, len_i32, put_cstr, put_message, Reader};
use crate::DecodeError;

/// Close/Describe target: a prepared statement.
pub const STATEMENT: u8 = b'S';
/// Close/Describe target: a portal.
pub const PORTAL: u8 = b'P';

// ---------------------------------------------------------------------------------------------
// Decoders

/// Decodes a PasswordMessage body (cleartext password or md5 response): the payload without its
/// trailing NUL. Like PostgreSQL, refuses a payload with an embedded NUL.
pub fn parse_password(body: &[u8]) -> Result<&[u8], DecodeError> {
    match body.split_last() {
        Some((0, payload)) if !payload.contains(&0) => Ok(payload),
        Some((0, _)) => Err(DecodeError::Malformed("password contains a NUL byte")),
        _ => Err(DecodeError::Malformed(
            "password message is not NUL-terminated",
        )),
    }
}

/// Decodes a SASLInitialResponse body: (mechanism, initial data). A data length of -1 means no
/// data (`None`).
pub fn parse_sasl_initial_response(body: &[u8]) -> Result<(&str, Option<&[u8]>), DecodeError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr("SASL mechanism name is not NUL-terminated")?;
    let len = r.i32("SASLInitialResponse data length")?;
    let data = match len {
        -1 => None,
        len => {
            let len = usize::try_from(len)
                .map_err(|_| DecodeError::Malformed("SASL data length below -1"))?;
            Some(r.bytes(len, "SASLInitialResponse data")?)
        }
    };
    r.finish("SASLInitialResponse data longer than its length field")?;
    Ok((mechanism, data))
}

/// Decodes a Query body: the SQL text, in the client's encoding.
pub fn parse_query(body: &[u8]) -> Result<&[u8], DecodeError> {
    let mut r = Reader::new(body);
    let sql = r.cbytes("query string is not NUL-terminated")?;
    r.finish("trailing bytes after the query string")?;
    Ok(sql)
}

/// A decoded Parse message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    /// Statement name; empty for the unnamed statement.
    pub name: &'a [u8],
    /// SQL text, in the client's encoding.
    pub query: &'a [u8],
    /// Parameter type oids (0: unspecified).
    pub param_types: Vec<u32>,
}

/// Decodes a Parse body.
pub fn parse_parse(body: &[u8]) -> Result<Parse<'_>, DecodeError> {
    let mut r = Reader::new(body);
    let name = r.cbytes("Parse statement name is not NUL-terminated")?;
    let query = r.cbytes("Parse query is not NUL-terminated")?;
    // Unsigned, as PostgreSQL reads it: up to 65,535 parameters.
    let n = usize::from(r.u16("Parse parameter count")?);
    // Check the bytes are there before allocating for them.
    if n.checked_mul(4) != Some(r.remaining()) {
        return Err(DecodeError::Malformed(
            "Parse parameter types do not match their count",
        ));
    }
    let mut param_types = Vec::with_capacity(n);
    for _ in 0..n {
        param_types.push(r.u32("Parse parameter type")?);
    }
    Ok(Parse {
        name,
        query,
        param_types,
    })
}

/// The names at the head of a Bind message; the rest of the body is left unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindHead<'a> {
    /// Destination portal; empty for the unnamed portal.
    pub portal: &'a [u8],
    /// Source prepared statement; empty for the unnamed statement.
    pub statement: &'a [u8],
}

/// Decodes the portal and statement names of a Bind body.
pub fn parse_bind_head(body: &[u8]) -> Result<BindHead<'_>, DecodeError> {
    split_bind(body).map(|(head, _)| head)
}

/// Decodes the names of a Bind body and returns the untouched remainder (formats, parameters,
/// result formats), e.g. to re-emit the Bind under another statement name with [`bind_with_rest`].
pub fn split_bind(body: &[u8]) -> Result<(BindHead<'_>, &[u8]), DecodeError> {
    let mut r = Reader::new(body);
    let portal = r.cbytes("Bind portal name is not NUL-terminated")?;
    let statement = r.cbytes("Bind statement name is not NUL-terminated")?;
    Ok((BindHead { portal, statement }, r.rest()))
}

/// Decodes a Close or Describe body: (kind, name) with kind [`STATEMENT`] or [`PORTAL`].
pub fn parse_close_or_describe(body: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    let mut r = Reader::new(body);
    let kind = r.u8("Close/Describe target kind")?;
    if kind != STATEMENT && kind != PORTAL {
        return Err(DecodeError::Malformed(
            "Close/Describe target kind is not 'S' or 'P'",
        ));
    }
    let name = r.cbytes("Close/Describe name is not NUL-terminated")?;
    r.finish("trailing bytes after Close/Describe")?;
    Ok((kind, name))
}

/// Decodes an Execute body: (portal, maximum rows; 0 means no limit).
pub fn parse_execute(body: &[u8]) -> Result<(&[u8], i32), DecodeError> {
    let mut r = Reader::new(body);
    let portal = r.cbytes("Execute portal name is not NUL-terminated")?;
    let max_rows = r.i32("Execute row limit")?;
    r.finish("trailing bytes after Execute")?;
    Ok((portal, max_rows))
}

// ---------------------------------------------------------------------------------------------
// Encoders

/// Query with `sql` (bytes in the connection's client encoding).
pub fn query(buf: &mut BytesMut, sql: impl AsRef<[u8]>) {
    put_message(buf, tag::QUERY, |b| put_cstr(b, sql.as_ref()));
}

/// PasswordMessage carrying `payload` (cleartext password or md5 response); adds the NUL.
pub fn password_message(buf: &mut BytesMut, payload: &[u8]) {
    put_message(buf, tag::PASSWORD, |b| put_cstr(b, payload));
}

/// SASLInitialResponse choosing `mechanism`, with initial `data` (for SCRAM: client-first).
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    put_message(buf, tag::PASSWORD, |b| {
        put_cstr(b, mechanism.as_bytes());
        b.put_i32(len_i32(data.len()));
        b.put_slice(data);
    });
}

/// SASLResponse carrying `data` (for SCRAM: client-final). Its body is the data itself.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    put_message(buf, tag::PASSWORD, |b| b.put_slice(data));
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    put_message(buf, tag::TERMINATE, |_| {});
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    put_message(buf, tag::SYNC, |_| {});
}

/// Flush.
pub fn flush(buf: &mut BytesMut) {
    put_message(buf, tag::FLUSH, |_| {});
}

/// Parse creating statement `name` (empty: unnamed) from `query`. At most 65,535 parameter
/// types (the count PostgreSQL reads, unsigned) are written.
pub fn parse_message(
    buf: &mut BytesMut,
    name: impl AsRef<[u8]>,
    query: impl AsRef<[u8]>,
    param_types: &[u32],
) {
    let n = count_u16(param_types.len());
    put_message(buf, tag::PARSE, |b| {
        put_cstr(b, name.as_ref());
        put_cstr(b, query.as_ref());
        b.put_u16(n);
        for oid in param_types.iter().take(usize::from(n)) {
            b.put_u32(*oid);
        }
    });
}

/// Bind with the given names and a body tail as returned by [`split_bind`].
pub fn bind_with_rest(
    buf: &mut BytesMut,
    portal: impl AsRef<[u8]>,
    statement: impl AsRef<[u8]>,
    rest: &[u8],
) {
    put_message(buf, tag::BIND, |b| {
        put_cstr(b, portal.as_ref());
        put_cstr(b, statement.as_ref());
        b.put_slice(rest);
    });
}

/// Execute `portal`, returning at most `max_rows` rows (0: all).
pub fn execute(buf: &mut BytesMut, portal: impl AsRef<[u8]>, max_rows: i32) {
    put_message(buf, tag::EXECUTE, |b| {
        put_cstr(b, portal.as_ref());
        b.put_i32(max_rows);
    });
}

/// Close the statement ([`STATEMENT`]) or portal ([`PORTAL`]) `name`.
pub fn close(buf: &mut BytesMut, kind: u8, name: impl AsRef<[u8]>) {
    put_message(buf, tag::CLOSE, |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_ref());
    });
}

/// Describe the statement ([`STATEMENT`]) or portal ([`PORTAL`]) `name`.
pub fn describe(buf: &mut BytesMut, kind: u8, name: impl AsRef<[u8]>) {
    put_message(buf, tag::DESCRIBE, |b| {
        b.put_u8(kind);
        put_cstr(b, name.as_ref());
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{decode_frame, DEFAULT_MAX_MESSAGE_LEN};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn one(f: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut b = BytesMut::new();
        f(&mut b);
        b
    }

    fn frame(bytes: &BytesMut) -> (u8, Bytes) {
        let mut b = bytes.clone();
        let f = decode_frame(&mut b, DEFAULT_MAX_MESSAGE_LEN)
            .unwrap()
            .unwrap();
        assert!(b.is_empty());
        (f.tag, f.body)
    }

    #[test]
    fn exact_bytes() {
        assert_eq!(&one(|b| query(b, "SELECT 1"))[..], b"Q\0\0\0\x0dSELECT 1\0");
        assert_eq!(&one(|b| password_message(b, b"pw"))[..], b"p\0\0\0\x07pw\0");
        assert_eq!(
            &one(|b| sasl_initial_response(b, "SCRAM-SHA-256", b"n,,"))[..],
            b"p\0\0\0\x19SCRAM-SHA-256\0\0\0\0\x03n,,"
        );
        assert_eq!(
            &one(|b| sasl_response(b, b"c=biws"))[..],
            b"p\0\0\0\x0ac=biws"
        );
        assert_eq!(&one(terminate)[..], b"X\0\0\0\x04");
        assert_eq!(&one(sync)[..], b"S\0\0\0\x04");
        assert_eq!(&one(flush)[..], b"H\0\0\0\x04");
        assert_eq!(
            &one(|b| parse_message(b, "s1", "SELECT $1", &[23]))[..],
            b"P\0\0\0\x17s1\0SELECT $1\0\0\x01\0\0\0\x17"
        );
        assert_eq!(&one(|b| close(b, STATEMENT, "s1"))[..], b"C\0\0\0\x08Ss1\0");
        assert_eq!(&one(|b| describe(b, PORTAL, ""))[..], b"D\0\0\0\x06P\0");
        assert_eq!(&one(|b| execute(b, "", 0))[..], b"E\0\0\0\x09\0\0\0\0\0");
        assert_eq!(
            &one(|b| bind_with_rest(b, "", "s1", b"\0\0\0\0\0\0"))[..],
            b"B\0\0\0\x0e\0s1\0\0\0\0\0\0\0"
        );
    }

    #[test]
    fn round_trips() {
        let (t, body) = frame(&one(|b| query(b, "SELECT 'é'")));
        assert_eq!(t, tag::QUERY);
        assert_eq!(parse_query(&body), Ok("SELECT 'é'".as_bytes()));

        let (t, body) = frame(&one(|b| password_message(b, b"md5abc")));
        assert_eq!(t, tag::PASSWORD);
        assert_eq!(parse_password(&body), Ok(&b"md5abc"[..]));

        let (_, body) = frame(&one(|b| {
            sasl_initial_response(b, "SCRAM-SHA-256", b"n,,n=,r=x")
        }));
        assert_eq!(
            parse_sasl_initial_response(&body),
            Ok(("SCRAM-SHA-256", Some(&b"n,,n=,r=x"[..])))
        );

        let (t, body) = frame(&one(|b| parse_message(b, "s1", "SELECT $1, $2", &[23, 0])));
        assert_eq!(t, tag::PARSE);
        assert_eq!(
            parse_parse(&body),
            Ok(Parse {
                name: &b"s1"[..],
                query: &b"SELECT $1, $2"[..],
                param_types: vec![23, 0]
            })
        );

        let (t, body) = frame(&one(|b| bind_with_rest(b, "p", "s1", b"\0\0\0\0\0\0")));
        assert_eq!(t, tag::BIND);
        assert_eq!(
            parse_bind_head(&body),
            Ok(BindHead {
                portal: &b"p"[..],
                statement: &b"s1"[..]
            })
        );
        let (head, rest) = split_bind(&body).unwrap();
        let again = one(|b| bind_with_rest(b, head.portal, head.statement, rest));
        assert_eq!(frame(&again).1, body);

        for (encode, want) in [
            (
                (|b, k, n| close(b, k, n)) as fn(&mut BytesMut, u8, &str),
                tag::CLOSE,
            ),
            (|b, k, n| describe(b, k, n), tag::DESCRIBE),
        ] {
            for kind in [STATEMENT, PORTAL] {
                let (t, body) = frame(&one(|b| encode(b, kind, "n")));
                assert_eq!(t, want);
                assert_eq!(parse_close_or_describe(&body), Ok((kind, &b"n"[..])));
            }
        }

        let (t, body) = frame(&one(|b| execute(b, "p", 10)));
        assert_eq!(t, tag::EXECUTE);
        assert_eq!(parse_execute(&body), Ok((&b"p"[..], 10)));

        for (f, want) in [
            (terminate as fn(&mut BytesMut), tag::TERMINATE),
            (sync, tag::SYNC),
            (flush, tag::FLUSH),
        ] {
            let (t, body) = frame(&one(f));
            assert_eq!((t, body.len()), (want, 0));
        }
    }

    #[test]
    fn malformed_bodies() {
        assert!(parse_password(b"").is_err());
        assert!(parse_password(b"pw").is_err());
        assert!(parse_password(b"p\0w\0").is_err());
        assert_eq!(parse_password(b"\0"), Ok(&b""[..]));

        assert_eq!(
            parse_sasl_initial_response(b"SCRAM-SHA-256\0\xff\xff\xff\xff"),
            Ok(("SCRAM-SHA-256", None))
        );
        assert!(parse_sasl_initial_response(b"M\0\xff\xff\xff\xffx").is_err());
        assert!(parse_sasl_initial_response(b"M\0\xff\xff\xff\xfe").is_err());
        assert!(parse_sasl_initial_response(b"M\0\0\0\0\x05abc").is_err());
        assert!(parse_sasl_initial_response(b"M\0\0\0\0\x01ab").is_err());
        assert!(parse_sasl_initial_response(b"M\0\0\0").is_err());
        assert!(parse_sasl_initial_response(b"M").is_err());

        assert!(parse_query(b"SELECT 1").is_err());
        assert!(parse_query(b"SELECT 1\0x").is_err());
        // Not UTF-8 (LATIN1 "é", a cut UTF-8 sequence): carried as the bytes they are.
        assert_eq!(parse_query(b"\xe9\0"), Ok(&b"\xe9"[..]));
        assert_eq!(parse_query(b"\xc3\0"), Ok(&b"\xc3"[..]));

        assert!(parse_parse(b"s\0q\0\xff\xff").is_err());
        assert!(parse_parse(b"s\0q\0\0\x02\0\0\0\x17").is_err());
        assert!(parse_parse(b"s\0q\0\0\x01\0\0\0\x17\0").is_err());
        assert!(parse_parse(b"s\0q\0\x7f\xff").is_err());
        assert!(parse_parse(b"s\0q").is_err());

        assert!(parse_bind_head(b"p\0s").is_err());
        assert!(parse_close_or_describe(b"X\0").is_err());
        assert!(parse_close_or_describe(b"S").is_err());
        assert!(parse_close_or_describe(b"Sn\0x").is_err());
        assert!(parse_execute(b"\0\0\0").is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = parse_password(&body);
            let _ = parse_sasl_initial_response(&body);
            let _ = parse_query(&body);
            let _ = parse_parse(&body);
            let _ = parse_bind_head(&body);
            let _ = parse_close_or_describe(&body);
            let _ = parse_execute(&body);
        }

        #[test]
        fn parse_round_trips(name in "[^\u{0}]{0,8}", sql in "[^\u{0}]{0,32}",
                             types in proptest::collection::vec(any::<u32>(), 0..8)) {
            let (_, body) = frame(&one(|b| parse_message(b, &name, &sql, &types)));
            let p = parse_parse(&body).unwrap();
            prop_assert_eq!((p.name, p.query, p.param_types), (name.as_bytes(), sql.as_bytes(), types));
        }

        #[test]
        fn any_bytes_round_trip(name in proptest::collection::vec(1u8..=255, 0..8),
                                sql in proptest::collection::vec(1u8..=255, 0..32)) {
            let (_, body) = frame(&one(|b| parse_message(b, &name, &sql, &[])));
            let p = parse_parse(&body).unwrap();
            prop_assert_eq!((p.name, p.query), (&name[..], &sql[..]));
            let (_, body) = frame(&one(|b| query(b, &sql)));
            prop_assert_eq!(parse_query(&body).unwrap(), &sql[..]);
            let (_, body) = frame(&one(|b| bind_with_rest(b, &name, &name, b"")));
            let (head, _) = split_bind(&body).unwrap();
            prop_assert_eq!((head.portal, head.statement), (&name[..], &name[..]));
        }
    }
}
