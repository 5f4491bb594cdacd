//! Session parameters that follow a client from server to server in transaction mode.
//!
//! The parameters PostgreSQL reports with ParameterStatus (client_encoding, DateStyle, TimeZone,
//! IntervalStyle, standard_conforming_strings, application_name) are tracked from those
//! reports; operator-listed extras (`track_extra_parameters`, e.g. search_path) are tracked from
//! the client's own `SET name = value` / `RESET name`. Before a server runs a client's
//! transaction, [`sync_sql`] gives the SET/RESET statements that make the server match.
//!
//! Names are compared case-insensitively, as PostgreSQL does.

use std::sync::Arc;

/// Parameters PostgreSQL reports to clients and poolguard keeps in step (lower-case).
pub const REPORTED: [&str; 6] = [
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "standard_conforming_strings",
    "application_name",
];

pub fn is_reported(name: &str) -> bool {
    REPORTED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// A parameter's name, lower-case: one of [`REPORTED`] (no allocation), or an operator's extra.
type Name = std::borrow::Cow<'static, str>;

fn name_of(name: &str) -> Name {
    match REPORTED.iter().find(|r| r.eq_ignore_ascii_case(name)) {
        Some(r) => Name::Borrowed(r),
        None => Name::Owned(name.to_ascii_lowercase()),
    }
}

/// A small name -> value map (a handful of entries; a Vec beats a HashMap here). Names are kept
/// lower-case and sorted, so two sets with the same entries compare equal as plain vectors
/// ([`ParamSet::same_entries`]), the common case on every server handover. Values are shared
/// texts: every client logged in from the same server parameters points at the same strings
/// ([`ParamSet::set_shared`]), so an idle client does not carry its own copies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamSet {
    values: Vec<(Name, Arc<str>)>,
    /// Bumped on every change, so a server synced to this set can tell it is still in line.
    version: u64,
}

impl ParamSet {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn set(&mut self, name: &str, value: &str) {
        if self.get(name) != Some(value) {
            self.put(name, Arc::from(value));
        }
    }

    /// As [`ParamSet::set`], keeping a reference to `value` instead of a copy.
    pub fn set_shared(&mut self, name: &str, value: &Arc<str>) {
        if self.get(name) != Some(&**value) {
            self.put(name, value.clone());
        }
    }

    fn put(&mut self, name: &str, value: Arc<str>) {
        self.version = self.version.wrapping_add(1);
        match self
            .values
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            Some(slot) => slot.1 = value,
            None => {
                let name = name_of(name);
                let at = self.values.partition_point(|(n, _)| *n < name);
                self.values.insert(at, (name, value));
            }
        }
    }

    /// The same names with the same values (the versions may differ). Values shared with the
    /// server connection they were read from are the same allocation, so most pairs are told
    /// equal by address before any text is compared.
    pub fn same_entries(&self, other: &ParamSet) -> bool {
        self.values.len() == other.values.len()
            && self
                .values
                .iter()
                .zip(&other.values)
                .all(|((n, v), (m, w))| {
                    (Arc::ptr_eq(v, w) || v == w) && (std::ptr::eq(&**n, &**m) || n == m)
                })
    }

    /// After [`ParamSet::same_entries`] said yes: points this set's values at `other`'s texts
    /// (equal, so nothing a client sees changes), so that the next comparison with a set
    /// sharing them, which is most clients', is told equal by address alone.
    pub fn share_values(&mut self, other: &ParamSet) {
        for ((_, v), (_, w)) in self.values.iter_mut().zip(&other.values) {
            if !Arc::ptr_eq(v, w) && v == w {
                *v = w.clone();
            }
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.version = self.version.wrapping_add(1);
        self.values.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(n, v)| (&**n, &**v))
    }

    /// Drops the extras (not reported by the server), as DISCARD ALL / RESET ALL reset them.
    pub fn retain_reported(&mut self) {
        self.version = self.version.wrapping_add(1);
        self.values.retain(|(n, _)| is_reported(n));
    }
}

/// The value recorded for an extra on a server when it cannot be known (a SET whose statement
/// may fail or be rolled back). No client's value equals it (protocol strings hold no NUL), so
/// [`sync_sql`] sets or resets the parameter for whoever gets the server next.
pub const UNKNOWN: &str = "\0unknown";

/// A string literal for SET: single quotes doubled, no backslash escapes involved.
/// The settings a startup packet's `options` carries, as PostgreSQL reads them: words split on
/// whitespace (a backslash keeps the next character, a space included), then `-c name=value`,
/// `-cname=value` or `--name=value`, with `-` in names read as `_`. Other switches are ignored
/// (PostgreSQL refuses most of them for a client anyway).
pub fn options_settings(options: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(w) = words.next() {
        let setting = if w == "-c" {
            words.next()
        } else if let Some(rest) = w.strip_prefix("--") {
            Some(rest.to_owned())
        } else {
            w.strip_prefix("-c").map(str::to_owned)
        };
        if let Some((name, value)) = setting.as_deref().and_then(|s| s.split_once('=')) {
            out.push((name.replace('-', "_"), value.to_owned()));
        }
    }
    out
}

/// The name PostgreSQL reports for a `client_encoding` a client asked for in any of the
/// spellings it accepts (case and punctuation ignored, as the server cleans names: `'utf-8'`,
/// `Unicode`, `iso-8859-1`, `koi8-r`...), or `None` when it is none poolguard knows (the
/// value then goes to the server as written, which answers for it).
pub fn canonical_encoding(asked: &str) -> Option<&'static str> {
    let clean: String = asked
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const NAMES: &[(&str, &str)] = &[
        ("utf8", "UTF8"),
        ("unicode", "UTF8"),
        ("sqlascii", "SQL_ASCII"),
        ("latin1", "LATIN1"),
        ("iso88591", "LATIN1"),
        ("latin2", "LATIN2"),
        ("iso88592", "LATIN2"),
        ("latin3", "LATIN3"),
        ("iso88593", "LATIN3"),
        ("latin4", "LATIN4"),
        ("iso88594", "LATIN4"),
        ("latin5", "LATIN5"),
        ("iso88599", "LATIN5"),
        ("latin6", "LATIN6"),
        ("iso885910", "LATIN6"),
        ("latin7", "LATIN7"),
        ("iso885913", "LATIN7"),
        ("latin8", "LATIN8"),
        ("iso885914", "LATIN8"),
        ("latin9", "LATIN9"),
        ("iso885915", "LATIN9"),
        ("latin10", "LATIN10"),
        ("iso885916", "LATIN10"),
        ("iso88595", "ISO_8859_5"),
        ("iso88596", "ISO_8859_6"),
        ("iso88597", "ISO_8859_7"),
        ("iso88598", "ISO_8859_8"),
        ("koi8", "KOI8R"),
        ("koi8r", "KOI8R"),
        ("koi8u", "KOI8U"),
        ("win866", "WIN866"),
        ("cp866", "WIN866"),
        ("alt", "WIN866"),
        ("win874", "WIN874"),
        ("windows874", "WIN874"),
        ("win", "WIN1251"),
        ("win1250", "WIN1250"),
        ("windows1250", "WIN1250"),
        ("win1251", "WIN1251"),
        ("windows1251", "WIN1251"),
        ("win1252", "WIN1252"),
        ("windows1252", "WIN1252"),
        ("win1253", "WIN1253"),
        ("windows1253", "WIN1253"),
        ("win1254", "WIN1254"),
        ("windows1254", "WIN1254"),
        ("win1255", "WIN1255"),
        ("windows1255", "WIN1255"),
        ("win1256", "WIN1256"),
        ("windows1256", "WIN1256"),
        ("win1257", "WIN1257"),
        ("windows1257", "WIN1257"),
        ("win1258", "WIN1258"),
        ("windows1258", "WIN1258"),
        ("abc", "WIN1258"),
        ("tcvn", "WIN1258"),
        ("tcvn5712", "WIN1258"),
        ("vscii", "WIN1258"),
        ("eucjp", "EUC_JP"),
        ("euccn", "EUC_CN"),
        ("euckr", "EUC_KR"),
        ("euctw", "EUC_TW"),
        ("eucjis2004", "EUC_JIS_2004"),
        ("sjis", "SJIS"),
        ("shiftjis", "SJIS"),
        ("mskanji", "SJIS"),
        ("windows932", "SJIS"),
        ("shiftjis2004", "SHIFT_JIS_2004"),
        ("big5", "BIG5"),
        ("windows950", "BIG5"),
        ("gbk", "GBK"),
        ("windows936", "GBK"),
        ("cp936", "GBK"),
        ("uhc", "UHC"),
        ("windows949", "UHC"),
        ("gb18030", "GB18030"),
        ("johab", "JOHAB"),
        ("muleinternal", "MULE_INTERNAL"),
    ];
    NAMES
        .iter()
        .find(|(alias, _)| *alias == clean)
        .map(|(_, name)| *name)
}

/// Marks a value that came from the client's startup packet (replayed with `set_config`, not as
/// SET text); a control character no SET text or setting name can start with.
pub const FROM_STARTUP: char = '\u{1}';

/// A startup-packet setting's value as the client's [`ParamSet`] keeps it.
pub fn startup_value(raw: &str) -> String {
    format!("{FROM_STARTUP}{raw}")
}

pub fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// [`sync_sql`] as the simple queries to send, in order. A change of `client_encoding` goes
/// alone and first: a server converts a whole query string from the encoding in force when it
/// arrives, and the statements after it may carry the client's non-ASCII text (an extra's
/// value, in the client's encoding).
pub fn sync_queries(client: &ParamSet, server: &ParamSet) -> Vec<String> {
    // The common case on every handover, answered before any lookup.
    if client.same_entries(server) {
        return Vec::new();
    }
    let sql = sync_sql(client, server);
    let encoding = client
        .get("client_encoding")
        .filter(|want| server.get("client_encoding") != Some(*want))
        .map(|want| format!("SET client_encoding = {};", quote_literal(want)));
    match encoding {
        Some(first) if sql != first => {
            let rest = sql.replacen(&first, "", 1);
            vec![first, rest]
        }
        _ if sql.is_empty() => vec![],
        _ => vec![sql],
    }
}

/// Statements that bring `server` in line with what `client` expects. Reported parameters are
/// set from their reported value (quoted); others from the client's SET text (as written), or,
/// for a value from its startup packet ([`startup_value`]), with `set_config` on the raw
/// string. Settings the server carries and the client does not are RESET. Empty if nothing
/// differs.
pub fn sync_sql(client: &ParamSet, server: &ParamSet) -> String {
    let mut sql = String::new();
    if client.same_entries(server) {
        return sql;
    }
    for (name, want) in client.iter() {
        if server.get(name) == Some(want) {
            continue;
        }
        if is_reported(name) {
            sql.push_str(&format!("SET {name} = {};", quote_literal(want)));
        } else if let Some(raw) = want.strip_prefix(FROM_STARTUP) {
            // set_config takes the raw string, as a startup parameter is (a list setting such
            // as search_path is split the same way).
            sql.push_str(&format!(
                "SELECT pg_catalog.set_config({}, {}, false);",
                quote_literal(name),
                quote_literal(raw)
            ));
        } else {
            sql.push_str(&format!("SET {name} = {want};"));
        }
    }
    for (name, _) in server.iter() {
        if !is_reported(name) && client.get(name).is_none() {
            sql.push_str(&format!("RESET {name};"));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_encodings_are_reported_as_the_server_names_them() {
        for (asked, reported) in [
            ("'utf-8'", "UTF8"),
            ("UTF8", "UTF8"),
            ("unicode", "UTF8"),
            ("iso-8859-1", "LATIN1"),
            ("koi8-r", "KOI8R"),
            ("Shift_JIS", "SJIS"),
            ("win1251", "WIN1251"),
        ] {
            assert_eq!(canonical_encoding(asked), Some(reported), "{asked}");
        }
        assert_eq!(canonical_encoding("klingon"), None);
    }

    #[test]
    fn options_are_read_as_postgres_reads_them() {
        let got = options_settings(
            "-c statement_timeout=5s -cwork_mem=64MB --search-path=a,b -c x=with\\ space -d 1 --bare",
        );
        let want = [
            ("statement_timeout", "5s"),
            ("work_mem", "64MB"),
            ("search_path", "a,b"),
            ("x", "with space"),
        ];
        assert_eq!(
            got,
            want.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
        assert!(options_settings("").is_empty());
        assert!(options_settings("-c").is_empty());
    }

    #[test]
    fn startup_settings_follow_through_set_config() {
        let mut client = ParamSet::default();
        client.set("statement_timeout", &startup_value("5s"));
        client.set("search_path", &startup_value("a,b"));
        let sql = sync_sql(&client, &ParamSet::default());
        assert!(
            sql.contains("SELECT pg_catalog.set_config('statement_timeout', '5s', false);"),
            "{sql}"
        );
        assert!(
            sql.contains("set_config('search_path', 'a,b', false)"),
            "{sql}"
        );
    }

    #[test]
    fn sync_sets_what_differs_and_resets_foreign_extras() {
        let mut client = ParamSet::default();
        client.set("TimeZone", "Europe/Paris");
        client.set("application_name", "o'brien");
        client.set("search_path", "myschema, public");
        let mut server = ParamSet::default();
        server.set("timezone", "UTC");
        server.set("application_name", "o'brien");
        server.set("statement_timeout", "5s");
        assert_eq!(
            sync_sql(&client, &server),
            "SET search_path = myschema, public;SET timezone = 'Europe/Paris';RESET statement_timeout;"
        );
        assert_eq!(sync_sql(&client, &client), "");
    }

    #[test]
    fn an_unknown_server_value_is_always_set_or_reset() {
        let mut server = ParamSet::default();
        server.set("search_path", UNKNOWN);
        let mut wants = ParamSet::default();
        wants.set("search_path", "s1");
        assert_eq!(sync_sql(&wants, &server), "SET search_path = s1;");
        assert_eq!(
            sync_sql(&ParamSet::default(), &server),
            "RESET search_path;"
        );
    }

    #[test]
    fn sets_with_the_same_entries_are_the_same_whatever_the_order_and_case() {
        let mut a = ParamSet::default();
        a.set("TimeZone", "UTC");
        a.set("DateStyle", "ISO, MDY");
        let mut b = ParamSet::default();
        b.set("datestyle", "ISO, MDY");
        b.set("timezone", "UTC");
        assert!(a.same_entries(&b));
        b.set("TIMEZONE", "Europe/Paris");
        assert!(!a.same_entries(&b));
        assert_eq!(sync_sql(&a, &b), "SET timezone = 'UTC';");
        // Equal sets made to share their texts stay equal, now by address.
        b.set("timezone", "UTC");
        let version = b.version();
        b.share_values(&a);
        assert!(a.same_entries(&b) && b.version() == version);
        assert!(a
            .values
            .iter()
            .zip(&b.values)
            .all(|(x, y)| Arc::ptr_eq(&x.1, &y.1)));
    }

    #[test]
    fn a_new_client_encoding_is_set_alone_before_the_rest() {
        let mut client = ParamSet::default();
        client.set("client_encoding", "LATIN1");
        client.set("search_path", "'sch\u{e9}ma'");
        let mut server = ParamSet::default();
        server.set("client_encoding", "UTF8");
        assert_eq!(
            sync_queries(&client, &server),
            vec![
                "SET client_encoding = 'LATIN1';".to_string(),
                "SET search_path = 'sch\u{e9}ma';".to_string()
            ]
        );
        server.set("search_path", "'sch\u{e9}ma'");
        assert_eq!(
            sync_queries(&client, &server),
            vec!["SET client_encoding = 'LATIN1';".to_string()]
        );
        server.set("client_encoding", "LATIN1");
        assert!(sync_queries(&client, &server).is_empty());
        server.set("timezone", "UTC");
        client.set("timezone", "Europe/Paris");
        assert_eq!(
            sync_queries(&client, &server),
            vec!["SET timezone = 'Europe/Paris';".to_string()]
        );
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
    }
}
