//! `auth_user` / `auth_query` (PgBouncer's names): how the PostgreSQL door looks up a user
//! that `[[users]]` does not list, validated per database.
//!
//! Invariants once built: every PostgreSQL database with a lookup names an `auth_user` that
//! is a `[[users]]` entry (its pool runs the query), the query is not empty, and no MySQL
//! database has one (the MySQL door does not look users up).

use std::time::Duration;

use super::raw::{RawConfig, RawDatabase};
use super::{invalid, parse_duration, ConfigError, Protocol, User};

/// PgBouncer's default `auth_query`: the role's stored password (SCRAM verifier or md5 hash),
/// NULL once `VALID UNTIL` has passed, nothing for a role that may not log in. Reading
/// `pg_authid` needs a superuser; see docs/security.md for a function other roles may run.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname = $1 AND rolcanlogin";

/// Default of `[postgres] auth_query_cache`: long enough that a storm of connecting clients
/// costs the server one lookup per user, short enough that a password changed on the server
/// counts at once for the operator who changed it.
pub const DEFAULT_AUTH_QUERY_CACHE: Duration = Duration::from_secs(5);

/// A database's user lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthQuery {
    /// The `[[users]]` entry the query runs as.
    pub user: String,
    /// SQL with one parameter, `$1` (the user name), answering one row whose second column is
    /// the password, verifier or md5 hash (NULL: no login).
    pub query: String,
    /// How long an answer is reused; `None`: not at all.
    pub cache: Option<Duration>,
    /// `auth_dbname`: the `[[databases]]` entry whose server database the lookup runs in;
    /// `None`: the client's own.
    pub database: Option<String>,
}

/// The lookup of database `i` (`d`), its own keys over the door's; `None` without
/// `auth_user`.
pub(super) fn for_database(
    i: usize,
    d: &RawDatabase,
    protocol: Protocol,
    raw: &RawConfig,
    users: &[User],
    pg_databases: &[&str],
) -> Result<Option<AuthQuery>, ConfigError> {
    let key = |k: &str| format!("databases[{i}].{k}");
    if protocol == Protocol::Mysql {
        if d.auth_user.is_some() || d.auth_query.is_some() || d.auth_dbname.is_some() {
            return Err(invalid(
                key("auth_user"),
                "only PostgreSQL databases look users up (the MySQL door does not)",
            ));
        }
        return Ok(None);
    }
    let door = raw.postgres.as_ref();
    let (user, user_key) = match (&d.auth_user, door.and_then(|p| p.auth_user.as_ref())) {
        (Some(u), _) => (u, key("auth_user")),
        (None, Some(u)) => (u, "postgres.auth_user".to_owned()),
        (None, None) => {
            if d.auth_query.is_some() || d.auth_dbname.is_some() {
                return Err(invalid(
                    key("auth_query"),
                    "needs auth_user (here or in [postgres]): the user the query runs as",
                ));
            }
            return Ok(None);
        }
    };
    match users.iter().find(|u| &u.name == user) {
        None => {
            return Err(invalid(
                user_key,
                format!("{user:?} is not a [[users]] entry: the lookup logs in with its password"),
            ))
        }
        // A verifier logs in only by passthrough, after a client logged in as that user:
        // lookups would wait for a login they are meant to make possible.
        Some(u) if u.password.starts_with("SCRAM-SHA-256$") => {
            return Err(invalid(
                user_key,
                format!("{user:?} has only a SCRAM verifier in [[users]]: the lookup needs its password (or, against an md5 server, its md5 hash)"),
            ))
        }
        Some(_) => {}
    }
    let query = d
        .auth_query
        .as_deref()
        .or(door.and_then(|p| p.auth_query.as_deref()))
        .unwrap_or(DEFAULT_AUTH_QUERY);
    if query.trim().is_empty() {
        return Err(invalid(key("auth_query"), "must not be empty"));
    }
    let cache = match door.and_then(|p| p.auth_query_cache.as_deref()) {
        Some(t) => parse_duration("postgres.auth_query_cache", t)?,
        None => Some(DEFAULT_AUTH_QUERY_CACHE),
    };
    let (database, database_key) = match (&d.auth_dbname, door.and_then(|p| p.auth_dbname.as_ref()))
    {
        (Some(n), _) => (Some(n), key("auth_dbname")),
        (None, Some(n)) => (Some(n), "postgres.auth_dbname".to_owned()),
        (None, None) => (None, String::new()),
    };
    match database {
        Some(n) if !pg_databases.contains(&n.as_str()) => {
            return Err(invalid(
                database_key,
                format!("{n:?} is not a PostgreSQL [[databases]] entry (other than \"*\")"),
            ))
        }
        // Without it, every name a client makes up would get a pool of its own for the
        // lookup, before anyone authenticated.
        None if d.name == super::FALLBACK_DATABASE => {
            return Err(invalid(
                key("auth_dbname"),
                "the fallback entry \"*\" looks users up only with auth_dbname (here or in [postgres]): the database every lookup runs in",
            ))
        }
        _ => {}
    }
    Ok(Some(AuthQuery {
        user: user.clone(),
        query: query.to_owned(),
        cache,
        database: database.cloned(),
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn config(front: &str, db: &str) -> Result<Config, String> {
        Config::parse(&format!(
            r#"
[postgres]
listen = "127.0.0.1:6432"
{front}
[[backends]]
name = "pg"
protocol = "postgres"
hosts = ["127.0.0.1:5432"]
max_connections = 10
[[databases]]
name = "bank"
backend = "pg"
{db}
[[databases]]
name = "other"
backend = "pg"
[[users]]
name = "lookup"
password = "x"
"#
        ))
        .map_err(|e| e.to_string())
    }

    #[test]
    fn door_default_and_database_override() {
        let c = config(
            "auth_user = \"lookup\"\nauth_query_cache = \"2s\"",
            "auth_query = \"SELECT * FROM f($1)\"",
        )
        .unwrap();
        let bank = c.databases.iter().find(|d| d.name == "bank").unwrap();
        let auth = bank.auth.as_ref().unwrap();
        assert_eq!(auth.user, "lookup");
        assert_eq!(auth.query, "SELECT * FROM f($1)");
        assert_eq!(auth.cache, Some(std::time::Duration::from_secs(2)));
        let other = c.databases.iter().find(|d| d.name == "other").unwrap();
        assert_eq!(
            other.auth.as_ref().unwrap().query,
            super::DEFAULT_AUTH_QUERY
        );

        let c = config("", "auth_user = \"lookup\"").unwrap();
        assert!(c
            .databases
            .iter()
            .find(|d| d.name == "other")
            .unwrap()
            .auth
            .is_none());
        let bank = c.databases.iter().find(|d| d.name == "bank").unwrap();
        assert_eq!(
            bank.auth.as_ref().unwrap().cache,
            Some(super::DEFAULT_AUTH_QUERY_CACHE)
        );
    }

    #[test]
    fn service_logins_prefer_a_plain_password() {
        let verifier = poolguard_pg::scram::ScramVerifier::from_password("v", b"salt", 8);
        let md5 = poolguard_pg::md5auth::stored_md5("hash", "m");
        let users = format!(
            "[[users]]\nname = \"verifier\"\npassword = \"{verifier}\"\n\
             [[users]]\nname = \"hash\"\npassword = \"{md5}\"\n\
             [[users]]\nname = \"plain\"\npassword = \"p\"\n"
        );
        let c =
            Config::parse(&format!("[postgres]\nlisten = \"127.0.0.1:6432\"\n{users}")).unwrap();
        assert_eq!(c.service_user().unwrap().name, "plain");
        assert!(!c.user("verifier").unwrap().has_plain_password());
        assert!(!c.user("hash").unwrap().has_plain_password());
    }

    #[test]
    fn lookups_in_one_database_and_the_fallback_entry() {
        let c = config("auth_user = \"lookup\"\nauth_dbname = \"other\"", "").unwrap();
        let bank = c.databases.iter().find(|d| d.name == "bank").unwrap();
        assert_eq!(
            bank.auth.as_ref().unwrap().database.as_deref(),
            Some("other")
        );
        let e = config("auth_user = \"lookup\"\nauth_dbname = \"nowhere\"", "").unwrap_err();
        assert!(
            e.contains("postgres.auth_dbname") && e.contains("nowhere"),
            "{e}"
        );
        let fallback = |front: &str| {
            Config::parse(&format!(
                "[postgres]\nlisten = \"127.0.0.1:6432\"\n{front}\n\
                 [[backends]]\nname = \"pg\"\nprotocol = \"postgres\"\n\
                 hosts = [\"127.0.0.1:5432\"]\nmax_connections = 10\n\
                 [[databases]]\nname = \"*\"\nbackend = \"pg\"\n\
                 [[databases]]\nname = \"postgres\"\nbackend = \"pg\"\n\
                 [[users]]\nname = \"lookup\"\npassword = \"x\"\n"
            ))
            .map_err(|e| e.to_string())
        };
        let e = fallback("auth_user = \"lookup\"").unwrap_err();
        assert!(e.contains("databases[0].auth_dbname"), "{e}");
        let c = fallback("auth_user = \"lookup\"\nauth_dbname = \"postgres\"").unwrap();
        let any = c
            .database(crate::config::Protocol::Postgres, "made_up")
            .unwrap();
        assert_eq!(
            any.auth.as_ref().unwrap().database.as_deref(),
            Some("postgres")
        );
    }

    #[test]
    fn refusals_name_the_key() {
        let e = config("auth_user = \"nobody\"", "").unwrap_err();
        assert!(
            e.contains("postgres.auth_user") && e.contains("nobody"),
            "{e}"
        );
        let verifier = poolguard_pg::scram::ScramVerifier::from_password("v", b"salt", 8);
        let e = config(
            &format!("auth_user = \"v\"\n[[users]]\nname = \"v\"\npassword = \"{verifier}\""),
            "",
        )
        .unwrap_err();
        assert!(e.contains("only a SCRAM verifier"), "{e}");
        let e = config("", "auth_query = \"SELECT 1\"").unwrap_err();
        assert!(e.contains("databases[0].auth_query"), "{e}");
        let e = config("", "auth_user = \"lookup\"\nauth_query = \" \"").unwrap_err();
        assert!(e.contains("must not be empty"), "{e}");
        let e = config("auth_user = \"lookup\"\nauth_query_cache = \"soon\"", "").unwrap_err();
        assert!(e.contains("postgres.auth_query_cache"), "{e}");
    }
}
