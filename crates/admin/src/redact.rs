//! Statement text with its literals replaced, for everything the admin side shows
//! (`/api/leases`, `/api/holders`, events, the console's SHOW LEAKS / HOLDERS, leak log lines):
//! `UPDATE users SET password = 'hunter2' WHERE id = 42` is shown as
//! `UPDATE users SET password = ? WHERE id = ?`. Passwords and personal data travel as literals;
//! the statement's shape is what an operator needs to find the code that leaks.
//!
//! Replaced, each by one `?`: single-quoted strings (with `''` inside, and `E'...'` with
//! backslash escapes; also MySQL's backslash escapes, since a backslash never ends a string
//! early there), dollar-quoted strings (`$tag$...$tag$`), numbers standing on their own (not
//! parts of identifiers or `$1` parameters), and hex/bit strings (`X'..'`, `B'..'`). Kept:
//! keywords, identifiers, quoted identifiers (`"..."`, `` `...` ``) and parameters. Comments
//! are dropped whole, since they may hold anything.
//! Works on `char`s, so no multi-byte text is ever cut; an unterminated literal hides the rest.

/// `sql` with literals replaced by `?` and comments removed.
pub fn redact(sql: &str) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let at = |k: usize| chars.get(k).copied();
    while let Some(c) = at(i) {
        let prev = if i == 0 { None } else { at(i - 1) };
        let word_before = prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '$');
        match c {
            '\'' => {
                i = skip_string(&chars, i + 1, true);
                out.push('?');
            }
            'E' | 'e' | 'X' | 'x' | 'B' | 'b' | 'N' | 'n'
                if !word_before && at(i + 1) == Some('\'') =>
            {
                i = skip_string(&chars, i + 2, true);
                out.push('?');
            }
            '"' | '`' => {
                let end = chars
                    .iter()
                    .skip(i + 1)
                    .position(|&x| x == c)
                    .map_or(chars.len(), |p| i + 1 + p + 1);
                out.extend(chars.get(i..end).unwrap_or_default());
                i = end;
            }
            '$' if !word_before => match dollar_tag(&chars, i) {
                Some(tag_len) => {
                    let tag = chars.get(i..i + tag_len).unwrap_or_default();
                    let mut j = i + tag_len;
                    i = loop {
                        if j >= chars.len() {
                            break chars.len();
                        }
                        if chars.get(j..j + tag_len) == Some(tag) {
                            break j + tag_len;
                        }
                        j += 1;
                    };
                    out.push('?');
                }
                None => {
                    out.push(c);
                    i += 1;
                    // `$1`: a parameter, kept with its digits.
                    while let Some(d) = at(i).filter(char::is_ascii_digit) {
                        out.push(d);
                        i += 1;
                    }
                }
            },
            '-' if at(i + 1) == Some('-') => {
                while at(i).is_some_and(|x| x != '\n') {
                    i += 1;
                }
            }
            '#' if !word_before => {
                // MySQL's line comment.
                while at(i).is_some_and(|x| x != '\n') {
                    i += 1;
                }
            }
            '/' if at(i + 1) == Some('*') => {
                let mut j = i + 2;
                while j < chars.len() && !(at(j) == Some('*') && at(j + 1) == Some('/')) {
                    j += 1;
                }
                i = (j + 2).min(chars.len());
                out.push(' ');
            }
            d if d.is_ascii_digit() && !word_before => {
                while at(i).is_some_and(|x| x.is_ascii_alphanumeric() || x == '.' || x == '_') {
                    i += 1;
                }
                out.push('?');
            }
            '.' if !word_before && at(i + 1).is_some_and(|x| x.is_ascii_digit()) => {
                i += 1;
                while at(i).is_some_and(|x| x.is_ascii_alphanumeric() || x == '_') {
                    i += 1;
                }
                out.push('?');
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    out
}

/// Past the string whose body starts at `i` (after its opening quote): `''` is a quote inside,
/// and with `backslash` a backslash escapes the next character.
fn skip_string(chars: &[char], mut i: usize, backslash: bool) -> usize {
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' if backslash => i += 2,
            '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
            '\'' => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

/// The length of a dollar-quote tag (`$$`, `$tag$`) starting at `i`, if one does.
fn dollar_tag(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while let Some(&c) = chars.get(j) {
        if c == '$' {
            return Some(j - i + 1);
        }
        if !(c.is_alphanumeric() || c == '_') || (j == i + 1 && c.is_ascii_digit()) {
            return None;
        }
        j += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn literals_go_shapes_stay() {
        let cases = [
            (
                "UPDATE users SET password = 'hunter2' WHERE id = 42",
                "UPDATE users SET password = ? WHERE id = ?",
            ),
            (
                "SELECT 'it''s', E'a\\'b', 3.14, .5, 1e10",
                "SELECT ?, ?, ?, ?, ?",
            ),
            (
                "SELECT $1, $2::int FROM t2 WHERE c_3 = 7",
                "SELECT $1, $2::int FROM t2 WHERE c_3 = ?",
            ),
            ("SELECT $$secret$$, $x$ a $ b $x$", "SELECT ?, ?"),
            (
                r#"SELECT "col 1", `c2` FROM "t" WHERE x = X'ff'"#,
                r#"SELECT "col 1", `c2` FROM "t" WHERE x = ?"#,
            ),
            (
                "SELECT 1 -- card 4111\n, 2 /* pin 1234 */",
                "SELECT ? \n, ?  ",
            ),
            (
                "INSERT INTO t VALUES ('é€', 'ok')",
                "INSERT INTO t VALUES (?, ?)",
            ),
            ("SELECT 'never ends", "SELECT ?"),
            // A backslash escapes (MySQL, E'' strings): where it does not (a standard
            // PostgreSQL string) more is hidden, never less.
            ("SELECT 'a\\' , 'b'", "SELECT ??"),
        ];
        for (sql, want) in cases {
            assert_eq!(redact(sql), want, "{sql}");
        }
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for s in [
            "'",
            "$",
            "$$",
            "$a",
            "E",
            "e'",
            "/*",
            "--",
            "\"",
            "`",
            "9",
            ".",
            "é'é",
            "$é$x$é$",
        ] {
            let _ = redact(s);
        }
    }
}
