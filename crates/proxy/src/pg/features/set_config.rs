//! `set_config(name, value, is_local)`: a SET made by a function call, which a statement's
//! leading keywords do not show (`SELECT set_config('search_path', 'x', false)`). With
//! `is_local` a constant true the setting ends with the transaction and needs nothing; anything
//! else (false, a parameter, an expression) may set it for the session, so the call is
//! reported as session state. A call inside a string or comment is skipped by the same lexing
//! as the statement split; a false report costs a pin or a reset, never a leak.

use super::{is_ident_byte, skip_quote_or_comment, Lexing};

const NAME: &[u8] = b"set_config";

/// Whether `sql` calls `set_config` in a way that may outlive the transaction.
pub(super) fn sets_session(sql: &[u8], lexing: Lexing) -> bool {
    let mut i = 0usize;
    while let Some(&c) = sql.get(i) {
        if let Some(after) = skip_quote_or_comment(sql, i, lexing) {
            // `"set_config"`: a quoted name is matched as written.
            let quoted =
                c == b'"' && sql.get(i.saturating_add(1)..after.saturating_sub(1)) == Some(NAME);
            if quoted && calls_session(sql, after, lexing) {
                return true;
            }
            i = after;
            continue;
        }
        let starts_word = !i
            .checked_sub(1)
            .and_then(|p| sql.get(p))
            .is_some_and(|&p| is_ident_byte(p));
        if starts_word
            && (c == b's' || c == b'S')
            && sql
                .get(i..)
                .and_then(|s| s.get(..NAME.len()))
                .is_some_and(|w| w.eq_ignore_ascii_case(NAME))
        {
            let end = i.saturating_add(NAME.len());
            if calls_session(sql, end, lexing) {
                return true;
            }
            i = end;
            continue;
        }
        i = i.saturating_add(lexing.encoding.char_len(sql, i));
    }
    false
}

/// Whether the name ending at `end` is called, with a third argument not a constant true.
fn calls_session(sql: &[u8], end: usize, lexing: Lexing) -> bool {
    call_arguments(sql, end)
        .is_some_and(|args| !third_argument(sql, args, lexing).is_some_and(is_true))
}

/// Where the arguments start, if the name ending at `end` is called: whitespace, then `(`.
fn call_arguments(sql: &[u8], end: usize) -> Option<usize> {
    if sql.get(end).is_some_and(|&c| is_ident_byte(c)) {
        return None; // set_config_x
    }
    let mut i = end;
    while sql.get(i).is_some_and(u8::is_ascii_whitespace) {
        i = i.saturating_add(1);
    }
    (sql.get(i) == Some(&b'(')).then(|| i.saturating_add(1))
}

/// The third argument of the call whose arguments start at `from`, trimmed (`None` when the
/// call has fewer, or never closes).
fn third_argument(sql: &[u8], from: usize, lexing: Lexing) -> Option<&[u8]> {
    let (mut i, mut depth, mut index, mut start) = (from, 0usize, 0usize, from);
    while let Some(&c) = sql.get(i) {
        if let Some(after) = skip_quote_or_comment(sql, i, lexing) {
            i = after;
            continue;
        }
        match c {
            b'(' | b'[' => depth = depth.saturating_add(1),
            b')' | b']' if depth > 0 => depth = depth.saturating_sub(1),
            b',' | b')' if depth == 0 => {
                if index == 2 {
                    return sql.get(start..i).map(<[u8]>::trim_ascii);
                }
                if c == b')' {
                    return None;
                }
                index = index.saturating_add(1);
                start = i.saturating_add(1);
            }
            _ => {}
        }
        i = i.saturating_add(lexing.encoding.char_len(sql, i));
    }
    None
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
            "select 'set_config(''a'', ''b'', false)'",
            "select 1 -- set_config('a', 'b', false)",
            "select my_set_config('a', 'b', false)",
            "select set_configs('a', 'b', false)",
            "select \"SET_CONFIG\"('a', 'b', false)",
            "select $$ set_config('a', 'b', false) $$",
        ] {
            assert!(!session(sql), "{sql}");
        }
    }
}
