//! SQL that names a prepared statement: `EXECUTE name (...)` and `DEALLOCATE [PREPARE] name`.
//! In transaction mode a client's protocol-level statements live on servers under poolguard's
//! names, and the two namespaces are one on a server, so such text is recognised here (a cheap
//! scan of the first words, bytes in the client's encoding) and answered or rewritten by the
//! session.

use crate::pg::prepared::Statement;

/// `EXECUTE name ...`: the statement name as the server resolves it (an unquoted identifier
/// folded to lower case, a quoted one with `""` undoubled) and the text after it.
pub(super) fn execute_target(sql: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let s = sql.trim_ascii_start();
    let (keyword, rest) = s.split_at_checked(7)?;
    if !keyword.eq_ignore_ascii_case(b"execute") {
        return None;
    }
    let after = rest.trim_ascii_start();
    if after.len() == rest.len() {
        return None; // EXECUTEx...: another word
    }
    if let Some(quoted) = after.strip_prefix(b"\"") {
        let mut name = Vec::new();
        let mut i = 0;
        loop {
            match (quoted.get(i), quoted.get(i.saturating_add(1))) {
                (Some(b'"'), Some(b'"')) => {
                    name.push(b'"');
                    i = i.saturating_add(2);
                }
                (Some(b'"'), _) => {
                    return Some((name, quoted.get(i.saturating_add(1)..)?));
                }
                (Some(&c), _) => {
                    name.push(c);
                    i = i.saturating_add(1);
                }
                (None, _) => return None,
            }
        }
    }
    let end = after
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$' || *c >= 0x80))
        .unwrap_or(after.len());
    let (name, rest) = after.split_at_checked(end)?;
    if name.is_empty() {
        return None;
    }
    Some((name.to_ascii_lowercase(), rest))
}

/// The text of `EXECUTE` naming `stmt` on the server, followed by `rest` (its arguments).
pub(super) fn execute_text(stmt: &Statement, rest: &[u8]) -> Vec<u8> {
    let mut text = b"EXECUTE ".to_vec();
    text.extend_from_slice(stmt.server_name.as_bytes());
    text.extend_from_slice(rest);
    text
}

/// `DEALLOCATE [PREPARE] name` as a whole query: the statement name (bytes in the client's
/// encoding).
pub(super) fn deallocate_target(sql: &[u8]) -> Option<&[u8]> {
    let mut s = sql.trim_ascii();
    // Every Query in transaction mode comes here: most are turned away by their first letter,
    // before the word split below.
    if !s.first()?.eq_ignore_ascii_case(&b'd') {
        return None;
    }
    while let Some(rest) = s.strip_suffix(b";") {
        s = rest.trim_ascii_end();
    }
    let mut words = s.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty());
    if !words.next()?.eq_ignore_ascii_case(b"deallocate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case(b"prepare") {
        name = words.next()?;
    }
    if words.next().is_some() || name.eq_ignore_ascii_case(b"all") {
        return None;
    }
    let name = name.strip_prefix(b"\"").unwrap_or(name);
    Some(name.strip_suffix(b"\"").unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_target_parsing() {
        let t =
            |s: &[u8]| execute_target(s).map(|(n, r)| (String::from_utf8(n).unwrap(), r.to_vec()));
        assert_eq!(t(b"EXECUTE foobar"), Some(("foobar".into(), vec![])));
        assert_eq!(
            t(b"  execute FooBar (1, 'a');"),
            Some(("foobar".into(), b" (1, 'a');".to_vec()))
        );
        assert_eq!(
            t(b"EXECUTE \"Foo\"\"x\"(2)"),
            Some(("Foo\"x".into(), b"(2)".to_vec()))
        );
        assert_eq!(t(b"EXECUTE \"open"), None);
        assert_eq!(t(b"EXECUTED x"), None);
        assert_eq!(t(b"EXECUTE"), None);
        assert_eq!(t(b"SELECT 1"), None);
        assert_eq!(t(b"EXECUTE ("), None);
    }

    #[test]
    fn deallocate_target_parsing() {
        assert_eq!(deallocate_target(b"DEALLOCATE p1"), Some(&b"p1"[..]));
        assert_eq!(
            deallocate_target(b"deallocate prepare \"_pg3_0\";"),
            Some(&b"_pg3_0"[..])
        );
        assert_eq!(deallocate_target(b"DEALLOCATE ALL"), None);
        assert_eq!(deallocate_target(b"SELECT 1"), None);
        assert_eq!(deallocate_target(b""), None);
        assert_eq!(
            deallocate_target(b"  \n\tdeallocate  x ; ;"),
            Some(&b"x"[..])
        );
        assert_eq!(deallocate_target(b"delete from t"), None);
        assert_eq!(
            deallocate_target(b"DEALLOCATE \"caf\xe9\""),
            Some(&b"caf\xe9"[..])
        );
    }
}
