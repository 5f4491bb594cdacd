//! `set_config(name, value, is_local)`: a SET made by a function call, which a statement's
//! leading keywords do not show (`SELECT set_config('search_path', 'x', false)`). With
//! `is_local` a constant true the setting ends with the transaction and needs nothing; anything
//! else (false, a parameter, an expression) may set it for the session, so the call is
//! reported as session state. Also reported: `pg_settings` (an UPDATE of it is a set_config)
//! and Unicode-escaped identifiers (`U&"..."`, which could spell the name). One pass over the
//! text, with the statement split's lexing (strings, comments, dollar quotes skipped); a false
//! report costs a pin or a reset, never a leak.

use super::{contains_ignore_case, is_ident_byte, is_space, skip_quote_or_comment, Behind, Lexing};

const NAME: &[u8] = b"set_config";

/// An open parenthesis or bracket: a set_config call's argument list, or any other.
struct Open {
    call: bool,
    commas: usize,
    /// Where the current argument starts.
    arg: usize,
}

/// Whether `sql` may set a parameter for the session through set_config.
pub(super) fn sets_session(sql: &[u8], lexing: Lexing) -> bool {
    if contains_ignore_case(sql, b"pg_settings") || contains_ignore_case(sql, b"u&\"") {
        return true;
    }
    // In the two-byte encodings the name anywhere is reported: a backstop, should the lexing
    // here ever pair quotes differently from the server's, which reads the text after
    // converting it.
    if lexing.encoding != super::Encoding::AsciiSafe && contains_ignore_case(sql, NAME) {
        return true;
    }
    let mut stack: Vec<Open> = Vec::new();
    // The name was just read: a `(` next (after spaces or comments) opens its arguments.
    let mut named = false;
    let mut i = 0usize;
    let mut behind = Behind::default();
    while let Some(&c) = sql.get(i) {
        if let Some(after) = skip_quote_or_comment(sql, i, lexing, behind) {
            behind = Behind::default();
            let comment = matches!(
                (c, sql.get(i.saturating_add(1))),
                (b'-', Some(b'-')) | (b'/', Some(b'*'))
            );
            // `"set_config"`: a quoted name is matched as written.
            let quoted_name =
                c == b'"' && sql.get(i.saturating_add(1)..after.saturating_sub(1)) == Some(NAME);
            named = quoted_name || (named && comment);
            i = after;
            continue;
        }
        let step = lexing.encoding.char_len(sql, i);
        let starts_word = !is_ident_byte(behind.last);
        behind.step(sql, i, step);
        if is_space(c) {
            i = i.saturating_add(step);
            continue;
        }
        let word_is_name = starts_word
            && sql
                .get(i..i.saturating_add(NAME.len()))
                .is_some_and(|w| w.eq_ignore_ascii_case(NAME))
            && !sql
                .get(i.saturating_add(NAME.len()))
                .is_some_and(|&n| is_ident_byte(n));
        if word_is_name {
            named = true;
            i = i.saturating_add(NAME.len());
            behind.step(sql, i.saturating_sub(1), 1);
            continue;
        }
        let call = std::mem::take(&mut named);
        match c {
            b'(' | b'[' => stack.push(Open {
                call: call && c == b'(',
                commas: 0,
                arg: i.saturating_add(1),
            }),
            b',' => {
                if let Some(top) = stack.last_mut() {
                    top.commas = top.commas.saturating_add(1);
                    top.arg = i.saturating_add(1);
                }
            }
            b')' | b']' => {
                if let Some(open) = stack.pop() {
                    let local = open.commas == 2
                        && sql
                            .get(open.arg..i)
                            .is_some_and(|a| is_true(a.trim_ascii()));
                    if open.call && !local {
                        return true;
                    }
                }
            }
            _ => {}
        }
        i = i.saturating_add(step);
    }
    // A call never closed: read as session-level.
    stack.iter().any(|o| o.call)
}

/// A constant true as PostgreSQL reads a boolean: `true`, or a quoted `t`, `true`, `y`, `yes`,
/// `on`, `1`, in any case, perhaps cast to boolean.
fn is_true(arg: &[u8]) -> bool {
    let mut v = arg;
    for cast in [&b"::boolean"[..], b"::bool"] {
        if v.len() >= cast.len() {
            let (head, tail) = v.split_at(v.len().saturating_sub(cast.len()));
            if tail.eq_ignore_ascii_case(cast) {
                v = head.trim_ascii_end();
            }
        }
    }
    if v.eq_ignore_ascii_case(b"true") {
        return true;
    }
    let Some(inner) = v.strip_prefix(b"'").and_then(|s| s.strip_suffix(b"'")) else {
        return false;
    };
    let inner = inner.trim_ascii();
    [&b"t"[..], b"true", b"y", b"yes", b"on", b"1"]
        .iter()
        .any(|w| inner.eq_ignore_ascii_case(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(sql: &str) -> bool {
        sets_session(sql.as_bytes(), Lexing::default())
    }

    #[test]
    fn session_level_calls_are_found_and_local_ones_are_not() {
        for sql in [
            "select set_config('default_transaction_read_only', 'on', false)",
            "SELECT pg_catalog.SET_CONFIG('search_path', 'a,b', 'f')",
            "select set_config($1, $2, $3)",
            "select set_config('x.y', (select '1'), not true)",
            "select 1; select \"set_config\" ('a', 'b', false)",
            "select set_config('a', 'b', false), set_config('c', 'd', true)",
            "select set_config('a', 'it''s, fine', false)",
            "select set_config/**/('search_path', 'evil', false)",
            "select set_config -- x\n ('search_path', 'evil', false)",
            "select set_config\u{b}('search_path', 'evil', false)",
            "select U&\"set\\005fconfig\"('search_path', 'evil', false)",
            "UPDATE pg_settings SET setting = 'evil' WHERE name = 'search_path'",
            "select set_config('a', set_config('b', 'c', false), true)",
            // Never closed: read as session-level.
            "select set_config('a', 'b', ",
        ] {
            assert!(session(sql), "{sql}");
        }
        for sql in [
            "select set_config('request.jwt.claims', $1, true)",
            "SELECT set_config('a', f(1, 2), TRUE)",
            "select set_config('a', 'b', 'on'::boolean)",
            "select set_config('a', 'x,y', 't')",
            "select set_config('a', set_config('b', 'c', true), true)",
            "select 'set_config(''a'', ''b'', false)'",
            "select 1 -- set_config('a', 'b', false)",
            "select my_set_config('a', 'b', false)",
            "select set_configs('a', 'b', false)",
            "select \"SET_CONFIG\"('a', 'b', false)",
            "select $$ set_config('a', 'b', false) $$",
            "select set_config, ('a', 'b', false) from t",
        ] {
            assert!(!session(sql), "{sql}");
        }
    }

    /// Nested calls are read in one pass: a deep nesting costs time in proportion to its
    /// length (the first version rescanned each call's arguments, quadratic).
    #[test]
    fn deep_nesting_is_one_pass() {
        let depth = 200_000;
        let mut sql = String::from("select ");
        sql.push_str(&"set_config(".repeat(depth));
        sql.push_str("'a'");
        sql.push_str(&",'b',true)".repeat(depth));
        assert!(!session(&sql));
    }
}
