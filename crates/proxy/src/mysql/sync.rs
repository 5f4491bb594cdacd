//! Session state that follows a client from server to server in transaction mode.
//!
//! A [`SessionState`] describes a session: the client's view (what its session must look like
//! when its next command runs) or a server connection's actual state. Before a client's command
//! runs on a server, [`plan`] computes what to send so the server matches: COM_RESET_CONNECTION
//! when the server carries settings the client does not have, then the character set, the
//! replayable `SET`s, autocommit, the multi-statements option, the default schema and
//! LAST_INSERT_ID() (only when the command reads it).
//!
//! Invariant: the plan never changes anything the client did not ask for; state that cannot be
//! replayed (user variables, temporary tables, locks, unknown session variables) pins the
//! client instead (see [`super::sql`]), so it never reaches this module.

use std::sync::Arc;

/// A replayable session setting: the variable it sets and the statement that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// Lowercase variable name ("sql_mode", "names", "session transaction").
    pub key: String,
    /// The statement that sets it, e.g. `SET SESSION sql_mode = 'ANSI'`.
    pub stmt: String,
}

impl Setting {
    /// Whether it sets the character set the server reads the client's text in (SET NAMES,
    /// SET CHARACTER SET, `character_set_client`, ...).
    pub fn is_charset(&self) -> bool {
        self.key == "names" || self.key.starts_with("character")
    }

    /// Whether it may set a character set whose multibyte characters hold ASCII bytes (big5,
    /// cp932, gbk, gb18030, sjis): anything but the plain name of a character set known not
    /// to (or one of its collations) counts, so a collation id, a hex or split string,
    /// `DEFAULT` or an expression do.
    pub fn may_hide_ascii(&self) -> bool {
        const SAFE: [&str; 33] = [
            "utf8mb4", "utf8mb3", "utf8", "latin1", "latin2", "latin5", "latin7", "ascii",
            "binary", "ujis", "euckr", "eucjpms", "gb2312", "cp1250", "cp1251", "cp1256", "cp1257",
            "cp850", "cp852", "cp866", "koi8r", "koi8u", "greek", "hebrew", "armscii8", "geostd8",
            "keybcs2", "macce", "macroman", "swe7", "tis620", "dec8", "hp8",
        ];
        const WORDS: [&str; 9] = [
            "set",
            "session",
            "local",
            "names",
            "character",
            "charset",
            "collate",
            "character_set_client",
            "character_set_connection",
        ];
        if !self.is_charset() {
            return false;
        }
        let text = self.stmt.to_ascii_lowercase();
        text.split(|c: char| c.is_ascii_whitespace() || c == ',' || c == '=')
            .map(|w| w.trim_matches(|c| c == '\'' || c == '"' || c == '`'))
            .filter(|w| !w.is_empty())
            .any(|w| {
                let w = w
                    .strip_prefix("@@session.")
                    .or_else(|| w.strip_prefix("@@"))
                    .unwrap_or(w);
                let named = |s: &&str| {
                    w == *s || w.strip_prefix(*s).is_some_and(|rest| rest.starts_with('_'))
                };
                !(WORDS.contains(&w) || w == "character_set_results" || SAFE.iter().any(named))
            })
    }
}

/// Settings in the order they were made; a later setting of the same key replaces the earlier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(Vec<Setting>);

/// Bound on distinct settings a client may accumulate (each is replayed on every server change).
pub const MAX_SETTINGS: usize = 64;

impl Settings {
    /// Records settings; returns false (recording nothing) if the bound would be exceeded.
    pub fn apply(&mut self, items: &[Setting]) -> bool {
        let mut next = self.0.clone();
        for item in items {
            next.retain(|s| s.key != item.key);
            next.push(item.clone());
        }
        if next.len() > MAX_SETTINGS {
            return false;
        }
        self.0 = next;
        true
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether one of them may set such a character set ([`Setting::may_hide_ascii`]).
    pub fn may_hide_ascii(&self) -> bool {
        self.0.iter().any(Setting::may_hide_ascii)
    }

    /// The settings after a common prefix with `other`, if `self` starts with all of `other`.
    fn rest_after<'a>(&'a self, other: &Settings) -> Option<&'a [Setting]> {
        self.0.strip_prefix(other.0.as_slice())
    }
}

/// Collation id meaning "not known" (after COM_RESET_CONNECTION the server uses its globals).
pub const UNKNOWN_CHARSET: u16 = 0;

/// One session's state, as far as poolguard follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Default schema; `None` when none was selected.
    /// Shared: most clients of a pool keep its database's name.
    pub schema: Option<Arc<str>>,
    pub autocommit: bool,
    /// Collation id the connection was set to (handshake, or poolguard's own SET).
    pub charset: u16,
    pub settings: Settings,
    pub multi_statements: bool,
    /// What LAST_INSERT_ID() returns in this session.
    pub last_insert_id: u64,
}

impl SessionState {
    pub fn new(schema: Option<Arc<str>>, charset: u16, multi_statements: bool) -> Self {
        SessionState {
            schema,
            autocommit: true,
            charset,
            settings: Settings::default(),
            multi_statements,
            last_insert_id: 0,
        }
    }

    /// What COM_RESET_CONNECTION leaves (MariaDB keeps the schema and the multi-statements
    /// option and falls back to the global character set).
    pub fn after_reset(&mut self) {
        self.autocommit = true;
        self.charset = UNKNOWN_CHARSET;
        self.settings.clear();
        self.last_insert_id = 0;
    }
}

/// What to send a server before a client's command (see the module docs); empty when in sync.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub reset: bool,
    /// Statements to run (one COM_QUERY each, or joined when multi-statements are on).
    pub statements: Vec<String>,
    /// COM_SET_OPTION: Some(true) turns multi-statements on.
    pub multi_statements: Option<bool>,
    pub init_db: Option<Arc<str>>,
    pub last_insert_id: Option<u64>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        *self == Plan::default()
    }
}

/// Computes what brings `server` in line with `client`. `reads_insert_id`: the command calls
/// LAST_INSERT_ID() (or reads @@identity), so its value must be the client's.
pub fn plan(client: &SessionState, server: &SessionState, reads_insert_id: bool) -> Plan {
    let mut p = Plan::default();
    let rest = client.settings.rest_after(&server.settings);
    let mut server_charset = server.charset;
    let mut server_autocommit = server.autocommit;
    let rest = match rest {
        Some(rest) => rest,
        None => {
            p.reset = true;
            server_charset = UNKNOWN_CHARSET;
            server_autocommit = true;
            &client.settings.0[..]
        }
    };
    let reset_changes_charset = p.reset || server_charset != client.charset;
    if reset_changes_charset && client.charset != UNKNOWN_CHARSET {
        if let Some((charset, collation)) = poolguard_mysql::collations::names(client.charset) {
            // As the handshake leaves it: results (and column definitions) in the collation.
            p.statements
                .push(format!("SET NAMES {charset} COLLATE {collation}"));
        } else {
            // Character set variables take only a charset's primary collation id, collation
            // variables any id: set the collation, then copy its character set (a second
            // statement, since one SET evaluates every expression before assigning).
            p.statements
                .push(format!("SET collation_connection = {}", client.charset));
            p.statements.push(
                "SET character_set_client = @@character_set_connection, character_set_results = @@character_set_connection".into(),
            );
        }
    }
    // After the charset: SET NAMES and friends in the settings must win over it.
    if reset_changes_charset && !p.reset && !client.settings.is_empty() {
        // The charset statement just overwrote whatever NAMES the server had: replay all.
        p.statements
            .extend(client.settings.0.iter().map(|s| s.stmt.clone()));
    } else {
        p.statements.extend(rest.iter().map(|s| s.stmt.clone()));
    }
    if server_autocommit != client.autocommit {
        p.statements
            .push(format!("SET autocommit = {}", u8::from(client.autocommit)));
    }
    if server.multi_statements != client.multi_statements {
        p.multi_statements = Some(client.multi_statements);
    }
    if let Some(schema) = &client.schema {
        if server.schema.as_ref() != Some(schema) {
            p.init_db = Some(schema.clone());
        }
    }
    let server_insert_id = if p.reset { 0 } else { server.last_insert_id };
    if reads_insert_id && server_insert_id != client.last_insert_id {
        p.last_insert_id = Some(client.last_insert_id);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHARSET_FROM_COLLATION: &str = "SET character_set_client = @@character_set_connection, character_set_results = @@character_set_connection";

    fn set(key: &str, value: &str) -> Setting {
        Setting {
            key: key.into(),
            stmt: format!("SET {key} = {value}"),
        }
    }

    fn state() -> SessionState {
        SessionState::new(Some("bank".into()), 45, true)
    }

    #[test]
    fn in_sync_means_nothing_to_do() {
        assert!(plan(&state(), &state(), true).is_empty());
    }

    #[test]
    fn extra_settings_on_the_server_force_a_reset_then_a_full_replay() {
        let mut client = state();
        client.settings.apply(&[set("time_zone", "'+00:00'")]);
        let mut server = state();
        server.settings.apply(&[set("sql_mode", "'ANSI'")]);
        let p = plan(&client, &server, false);
        assert!(p.reset);
        assert_eq!(
            p.statements,
            vec![
                "SET NAMES utf8mb4 COLLATE utf8mb4_general_ci",
                "SET time_zone = '+00:00'"
            ]
        );
    }

    #[test]
    fn missing_settings_autocommit_schema_and_insert_id_are_replayed() {
        let mut client = state();
        client.settings.apply(&[set("sql_mode", "'ANSI'")]);
        client.autocommit = false;
        client.schema = Some("other".into());
        client.last_insert_id = 42;
        client.multi_statements = false;
        let p = plan(&client, &state(), true);
        assert!(!p.reset);
        assert_eq!(
            p.statements,
            vec!["SET sql_mode = 'ANSI'", "SET autocommit = 0"]
        );
        assert_eq!(p.init_db.as_deref(), Some("other"));
        assert_eq!(p.last_insert_id, Some(42));
        assert_eq!(p.multi_statements, Some(false));
        assert_eq!(plan(&client, &state(), false).last_insert_id, None);
    }

    #[test]
    fn later_settings_replace_earlier_ones_and_are_bounded() {
        let mut s = Settings::default();
        assert!(s.apply(&[set("a", "1"), set("b", "1")]));
        assert!(s.apply(&[set("a", "2")]));
        assert_eq!(s.0, vec![set("b", "1"), set("a", "2")]);
        let many: Vec<Setting> = (0..MAX_SETTINGS + 1)
            .map(|i| set(&format!("v{i}"), "1"))
            .collect();
        assert!(!s.apply(&many));
        assert_eq!(s.0.len(), 2);
    }

    #[test]
    fn a_different_charset_is_set_by_name_or_else_by_collation_id() {
        let mut client = state();
        client.charset = 224;
        let p = plan(&client, &state(), false);
        // By name: results in the collation itself, as after a handshake with it.
        assert_eq!(
            p.statements,
            vec!["SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci"]
        );
        client.charset = 255; // not listed (MySQL 8's utf8mb4_0900_ai_ci)
        let p = plan(&client, &state(), false);
        assert_eq!(
            p.statements,
            vec!["SET collation_connection = 255", CHARSET_FROM_COLLATION]
        );
    }

    #[test]
    fn only_a_plain_safe_character_set_name_is_known_not_to_hide_ascii() {
        let charset = |stmt: &str| Setting {
            key: "names".into(),
            stmt: stmt.into(),
        };
        for stmt in [
            "SET NAMES utf8mb4",
            "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_unicode_ci'",
            "SET character_set_client = latin1",
            "SET @@session.character_set_client = utf8",
        ] {
            assert!(!charset(stmt).may_hide_ascii(), "{stmt}");
        }
        for stmt in [
            "SET NAMES gbk",
            "SET character_set_client = 28",
            "SET character_set_client = 'g' 'bk'",
            "SET character_set_client = 0x67626b",
            "SET NAMES DEFAULT",
            "SET character_set_client = @cs",
        ] {
            assert!(charset(stmt).may_hide_ascii(), "{stmt}");
        }
    }
}
