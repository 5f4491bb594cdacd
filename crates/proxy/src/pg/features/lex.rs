//! The lexical layer of [`super::scan`]: how a client's encoding lays out its characters,
//! and how SQL text is split into statements and stepped over strings, quoted identifiers,
//! comments and dollar quotes as PostgreSQL's lexer does. Bytes in, positions out: nothing
//! here slices text at an arbitrary offset.

use super::{is_ident_byte, Lexing};

/// How the client's encoding lays out multibyte characters, as far as the scan cares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Encoding {
    /// Every byte of a multibyte character is >= 0x80 (UTF-8, the EUC family, LATIN*, KOI8*,
    /// WIN*, ...): ASCII bytes are always ASCII characters.
    #[default]
    AsciiSafe,
    /// Shift JIS (SJIS, SHIFT_JIS_2004): lead bytes 0x81-0x9F and 0xE0-0xFC start a two-byte
    /// character whose second byte may be ASCII.
    Sjis,
    /// BIG5, GBK, UHC, JOHAB: any byte >= 0x80 starts a two-byte character.
    TwoByte,
    /// GB18030: two bytes, or four when the second is an ASCII digit.
    Gb18030,
}

impl Encoding {
    /// The layout of a `client_encoding` value (PostgreSQL's names and aliases, any case).
    pub fn of(client_encoding: &str) -> Encoding {
        // Normalised into a stack buffer: this runs for every statement scanned, and no name
        // below is longer than 12 characters (a longer value is none of them).
        let mut buf = [0u8; 16];
        let mut n = 0;
        for b in client_encoding.bytes().filter(u8::is_ascii_alphanumeric) {
            let Some(slot) = buf.get_mut(n) else {
                return Encoding::AsciiSafe;
            };
            *slot = b.to_ascii_uppercase();
            n = n.saturating_add(1);
        }
        match buf.get(..n).unwrap_or_default() {
            b"SJIS" | b"SHIFTJIS" | b"SHIFTJIS2004" | b"MSKANJI" | b"WIN932" | b"WINDOWS932" => {
                Encoding::Sjis
            }
            b"BIG5" | b"WIN950" | b"WINDOWS950" | b"GBK" | b"WIN936" | b"WINDOWS936" | b"UHC"
            | b"WIN949" | b"WINDOWS949" | b"JOHAB" => Encoding::TwoByte,
            b"GB18030" => Encoding::Gb18030,
            _ => Encoding::AsciiSafe,
        }
    }

    /// Length of the character starting at `b[i]` (at least 1, never past the end).
    pub(super) fn char_len(self, b: &[u8], i: usize) -> usize {
        let Some(&lead) = b.get(i) else {
            return 1;
        };
        let want: usize = match self {
            _ if lead < 0x80 => 1,
            Encoding::AsciiSafe => 1,
            Encoding::Sjis if (0x81..=0x9f).contains(&lead) || (0xe0..=0xfc).contains(&lead) => 2,
            Encoding::Sjis => 1,
            Encoding::TwoByte => 2,
            Encoding::Gb18030 => match b.get(i.saturating_add(1)) {
                Some(d) if d.is_ascii_digit() => 4,
                _ => 2,
            },
        };
        want.min(b.len().saturating_sub(i)).max(1)
    }
}

/// The statements of a SQL string, split on `;` outside quotes, dollar quotes and comments,
/// each trimmed and without leading comments.
pub(super) fn statements(sql: &[u8], lexing: Lexing) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let (mut i, mut start) = (0usize, 0usize);
    let mut behind = Behind::default();
    while let Some(&c) = sql.get(i) {
        let next = i.saturating_add(1);
        i = match skip_quote_or_comment(sql, i, lexing, behind) {
            Some(after) => {
                behind = Behind::default();
                after
            }
            None if c == b';' => {
                out.push(sql.get(start..i).unwrap_or_default());
                start = next;
                behind.step(sql, i, 1);
                next
            }
            None => {
                let n = lexing.encoding.char_len(sql, i);
                behind.step(sql, i, n);
                i.saturating_add(n)
            }
        };
    }
    out.push(sql.get(start..).unwrap_or_default());
    out.into_iter()
        .map(|s| strip_leading_comments(s.trim_ascii(), lexing.encoding))
        .filter(|s| !s.is_empty())
        .collect()
}

/// If a string, quoted identifier, comment or dollar quote starts at `i`, the index after it
/// (or the end of the text, when it never closes).
pub(super) fn skip_quote_or_comment(
    sql: &[u8],
    i: usize,
    lexing: Lexing,
    behind: Behind,
) -> Option<usize> {
    let at = |k: usize| sql.get(k).copied();
    let next = i.saturating_add(1);
    Some(match at(i)? {
        b'\'' => {
            // E'...': backslash escapes (and in every string when standard_conforming_strings
            // is off). The E counts only when it starts a token.
            let e_string = matches!(behind.last, b'E' | b'e') && !is_ident_byte(behind.before);
            let escapes = e_string || !lexing.standard_conforming_strings;
            skip_quoted(sql, next, b'\'', escapes, lexing.encoding)
        }
        b'"' => skip_quoted(sql, next, b'"', false, lexing.encoding),
        b'-' if at(next) == Some(b'-') => memchr::memchr(b'\n', sql.get(i..).unwrap_or_default())
            .map_or(sql.len(), |n| i.saturating_add(n)),
        b'/' if at(next) == Some(b'*') => comment_end(sql, i, lexing.encoding),
        // `$` inside an identifier (a$b) is part of it, not a quote.
        b'$' if !is_ident_byte(behind.last) => dollar_quote_end(sql, i, lexing.encoding)?,
        _ => return None,
    })
}

/// The two characters before a position, as [`skip_quote_or_comment`] needs them: a
/// multibyte character counts as an identifier letter whatever its bytes (the server reads
/// the text after converting it from the client's encoding, so a Shift JIS character whose
/// second byte is `E` is a letter there, not an `E`), and the start of the text or the end
/// of a quote or comment as a separator (`0`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Behind {
    pub(super) last: u8,
    before: u8,
}

impl Behind {
    /// Moves past the character of `n` bytes at `i`.
    pub(super) fn step(&mut self, sql: &[u8], i: usize, n: usize) {
        self.before = self.last;
        self.last = match sql.get(i) {
            Some(&c) if n == 1 => c,
            _ => 0x80,
        };
    }
}

/// The index after the quote closing a string opened just before `from` (or the end).
fn skip_quoted(sql: &[u8], from: usize, quote: u8, escapes: bool, enc: Encoding) -> usize {
    let mut i = from;
    while let Some(c) = sql.get(i).copied() {
        if c == quote {
            return i.saturating_add(1);
        }
        let step = enc.char_len(sql, i);
        i = i.saturating_add(step);
        if escapes && c == b'\\' && sql.get(i).is_some() {
            i = i.saturating_add(enc.char_len(sql, i));
        }
    }
    sql.len()
}

/// The index after the block comment starting at `from` (`/*`), which may nest.
fn comment_end(sql: &[u8], from: usize, enc: Encoding) -> usize {
    let mut depth = 0usize;
    let mut i = from;
    while let Some(pair) = sql.get(i..).and_then(|s| s.first_chunk::<2>()) {
        match pair {
            b"/*" => {
                depth = depth.saturating_add(1);
                i = i.saturating_add(2);
            }
            b"*/" => {
                depth = depth.saturating_sub(1);
                i = i.saturating_add(2);
                if depth == 0 {
                    return i;
                }
            }
            _ => i = i.saturating_add(enc.char_len(sql, i)),
        }
    }
    sql.len()
}

/// If a dollar quote (`$$` or `$tag$`) opens at `from`, the index after its closing tag (or
/// the end of the text when it never closes).
fn dollar_quote_end(sql: &[u8], from: usize, enc: Encoding) -> Option<usize> {
    let after = sql.get(from.saturating_add(1)..)?;
    // The tag's letters, a multibyte character whole (its second byte may be ASCII, and is
    // still part of a letter).
    let mut tag_len = 0usize;
    loop {
        let c = *after.get(tag_len)?;
        if c >= 0x80 {
            tag_len = tag_len.saturating_add(enc.char_len(after, tag_len));
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            tag_len = tag_len.saturating_add(1);
        } else {
            break;
        }
    }
    if after.get(tag_len) != Some(&b'$') || after.first().is_some_and(u8::is_ascii_digit) {
        return None; // a parameter ($1) or not a quote
    }
    let tag_end = from.saturating_add(tag_len).saturating_add(2);
    let tag = sql.get(from..tag_end)?;
    let body = sql.get(tag_end..)?;
    Some(match memchr::memmem::find(body, tag) {
        Some(close) => tag_end.saturating_add(close).saturating_add(tag.len()),
        None => sql.len(),
    })
}

fn strip_leading_comments(mut s: &[u8], enc: Encoding) -> &[u8] {
    loop {
        s = s.trim_ascii_start();
        if s.starts_with(b"--") {
            s = memchr::memchr(b'\n', s).map_or(&[][..], |i| s.get(i..).unwrap_or_default());
        } else if s.starts_with(b"/*") {
            s = s.get(comment_end(s, 0, enc)..).unwrap_or_default();
        } else {
            return s;
        }
    }
}
