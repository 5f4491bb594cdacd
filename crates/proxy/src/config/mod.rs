//! Validated runtime configuration.
//!
//! The file is parsed into [`raw`] structs (unknown keys refused), then [`Config::from_raw`] checks
//! every cross-reference and unit and produces these types. Invariants once a `Config` exists:
//! every database names an existing backend of the same protocol as its front door, every pool
//! fits inside its backend's budget, every duration is parsed, names are unique.

pub mod authquery;
pub mod fleet;
pub mod front;
pub mod guard;
pub mod limits;
pub mod observe;
pub mod raw;
pub mod server_tls;
pub mod target;

pub use front::{ClientAuth, FullAuth, MysqlAuth, MysqlFront, PostgresFront, SessionStatePolicy};
pub use limits::{Limits, LoginLimits};

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use raw::{RawConfig, RawDatabase, RawLimits, RawSize};

/// A configuration error, naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Postgres,
    Mysql,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// One server connection per client for the whole session; reset before reuse.
    Session,
    /// One server connection per transaction.
    Transaction,
}

#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub protocol: Protocol,
    pub hosts: Vec<String>,
    /// poolguard's budget on this server: all pools on this backend together never exceed it.
    pub max_connections: usize,
    pub connect_timeout: Duration,
    /// Health checks and circuit breakers for the hosts.
    pub guard: guard::HostGuard,
    /// `server_tls` and its files, built into a rustls configuration.
    pub server_tls: crate::tls::connect::ServerTls,
    /// MySQL: the server's RSA key for caching_sha2's full path without TLS; `None`: asked
    /// from the server when needed.
    pub server_rsa_key: Option<std::sync::Arc<poolguard_mysql::full_auth::ServerPublicKey>>,
}

#[derive(Debug, Clone)]
pub struct Database {
    pub name: String,
    pub backend: String,
    pub protocol: Protocol,
    pub server_database: String,
    pub pool_mode: PoolMode,
    pub pool_size: usize,
    pub max_overflow: usize,
    pub limits: Limits,
    /// The backend's write host, or its standbys (`target`, `standby_fallback`).
    pub target: target::Target,
    /// How users missing from `[[users]]` are looked up in the server (`auth_user`,
    /// `auth_query`); `None`: they are refused.
    pub auth: Option<authquery::AuthQuery>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// Plain password, or what the server stores (SCRAM-SHA-256$..., md5...): client auth
    /// checks against it, server logins pass the client's proof through (`pg::credential`).
    pub password: String,
}

impl User {
    /// Its password is a password, not what a server stores instead (a SCRAM verifier or an
    /// md5 hash), so it logs in whatever method the server asks for.
    pub fn has_plain_password(&self) -> bool {
        !self.password.starts_with("SCRAM-SHA-256$")
            && !poolguard_pg::md5auth::is_stored_md5(&self.password)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub admin_listen: Option<SocketAddr>,
    pub postgres: Option<PostgresFront>,
    pub mysql_listen: Option<SocketAddr>,
    /// The `[mysql]` table in full (`mysql_listen` is its address).
    pub mysql: Option<MysqlFront>,
    pub backends: Vec<Backend>,
    pub databases: Vec<Database>,
    pub users: Vec<User>,
    /// The `[limits]` table itself: global values such as the overall client cap.
    pub limits: Limits,
    /// `[limits]` keys on clients not yet logged in (global only).
    pub logins: LoginLimits,
    /// `[admin] users`: who may use the PostgreSQL admin console.
    pub admin_users: Vec<String>,
    /// `[admin] stats_users`: who may use its SHOW commands only.
    pub stats_users: Vec<String>,
    /// Who may use the admin HTTP side (tokens read from their files or the environment).
    pub admin_access: poolguard_admin::Access,
    /// `[admin] tls_*`: HTTPS on the admin listener.
    pub admin_tls: Option<crate::tls::accept::ClientTls>,
    /// `[admin] redact_statements`: literals replaced in statement text shown by the admin side.
    pub redact_statements: bool,
    /// `[[alerts]]` rules.
    pub alerts: Vec<poolguard_admin::AlertRule>,
    /// `[[rate_limits]]` rules.
    pub rate_limits: Vec<guard::RateLimit>,
    /// `[fleet]`: budgets shared through etcd with other instances (none: this process's own).
    pub fleet: Option<poolguard_fleet::FleetConfig>,
    /// `[general] upgrade_socket`: where a new binary asks this one to hand over (see `upgrade`).
    pub upgrade_socket: Option<std::path::PathBuf>,
}

impl Database {
    /// Its `server_database` is a real database (not the fallback entry's `*`): what checks
    /// and polls may log in to.
    pub fn names_a_server_database(&self) -> bool {
        self.server_database != FALLBACK_DATABASE
    }
}

/// A `[[users]]` entry's password from exactly one of `password`, `password_file` (read now, so a
/// reload reads it again; one trailing newline dropped) or `password_env`.
fn user_password(i: usize, u: &raw::RawUser) -> Result<String, ConfigError> {
    let key = |k: &str| format!("users[{i}].{k}");
    match (&u.password, &u.password_file, &u.password_env) {
        (Some(p), None, None) => Ok(p.clone()),
        (None, Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(key("password_file"), format!("cannot read {path:?}: {e}")))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
        }
        (None, None, Some(var)) => std::env::var(var).map_err(|_| {
            invalid(
                key("password_env"),
                format!("the environment variable {var:?} is not set (or not UTF-8)"),
            )
        }),
        (None, None, None) => Err(invalid(
            key("password"),
            "is required (or password_file, or password_env)",
        )),
        _ => Err(invalid(
            key("password"),
            "give exactly one of password, password_file and password_env",
        )),
    }
}

/// The `[[databases]]` name that serves every database a door's other entries do not name.
pub const FALLBACK_DATABASE: &str = "*";

/// A duration as operators write it: "5s", "30m", "1h 30m"; "0" or "0s" means off.
pub fn parse_duration(key: &str, text: &str) -> Result<Option<Duration>, ConfigError> {
    let t = text.trim();
    if t == "0" {
        return Ok(None);
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        invalid(
            key,
            format!("bad duration {text:?} ({e}); write it with a unit, like \"5s\" or \"30m\""),
        )
    })?;
    Ok(if d.is_zero() { None } else { Some(d) })
}

pub(crate) fn required_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(key, text)?.ok_or_else(|| invalid(key, "must be greater than zero"))
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| invalid(key, format!("{text:?} is not an ip:port address")))
}

/// A size: bytes as an integer, or "64MiB", "16M", "1G", "512KiB", "1024" as a string.
pub fn parse_size(key: &str, raw: &RawSize) -> Result<usize, ConfigError> {
    let text = match raw {
        RawSize::Bytes(n) => return usize::try_from(*n).map_err(|_| invalid(key, "too large")),
        RawSize::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(invalid(
                key,
                format!("bad size {text:?}; write bytes, or a number with K, M or G (\"64MiB\")"),
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| invalid(key, format!("bad size {text:?}")))
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::parse(&text)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        Config::from_raw(raw)
    }

    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let limits = Limits::from_raw("limits", &raw.limits)?;
        let logins = LoginLimits::from_raw(&raw.limits)?;
        let admin_listen = raw
            .admin
            .as_ref()
            .map(|a| parse_addr("admin.listen", &a.listen))
            .transpose()?;
        let postgres = raw
            .postgres
            .as_ref()
            .map(front::postgres_front)
            .transpose()?;
        let mysql = raw.mysql.as_ref().map(front::mysql_front).transpose()?;
        let mysql_listen = mysql.as_ref().map(|m| m.listen);
        if postgres.is_none() && mysql_listen.is_none() {
            return Err(invalid(
                "postgres / mysql",
                "no front door: add a [postgres] or [mysql] table with a listen address",
            ));
        }

        let mut backends = Vec::new();
        let mut seen = HashSet::new();
        for (i, b) in raw.backends.iter().enumerate() {
            let key = format!("backends[{i}]");
            if !seen.insert(b.name.clone()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("backend {:?} is defined twice", b.name),
                ));
            }
            let protocol = match b.protocol.as_str() {
                "postgres" | "postgresql" => Protocol::Postgres,
                "mysql" | "mariadb" => Protocol::Mysql,
                other => {
                    return Err(invalid(
                        format!("{key}.protocol"),
                        format!("{other:?} is not \"postgres\" or \"mysql\""),
                    ))
                }
            };
            if b.hosts.is_empty() {
                return Err(invalid(
                    format!("{key}.hosts"),
                    "needs at least one host:port",
                ));
            }
            for h in &b.hosts {
                // An absolute path is a Unix socket (`tls::socket`).
                if !crate::tls::socket::is_unix_host(h)
                    && h.rsplit_once(':')
                        .and_then(|(_, p)| p.parse::<u16>().ok())
                        .is_none()
                {
                    return Err(invalid(
                        format!("{key}.hosts"),
                        format!("{h:?} is not host:port or a Unix socket's path"),
                    ));
                }
            }
            if b.max_connections == 0 {
                return Err(invalid(
                    format!("{key}.max_connections"),
                    "must be at least 1",
                ));
            }
            let connect_timeout = match &b.connect_timeout {
                Some(t) => required_duration(&format!("{key}.connect_timeout"), t)?,
                None => Duration::from_secs(5),
            };
            backends.push(Backend {
                name: b.name.clone(),
                protocol,
                hosts: b.hosts.clone(),
                max_connections: b.max_connections,
                connect_timeout,
                guard: guard::HostGuard::from_raw(&key, b)?,
                server_tls: server_tls::from_raw(&key, b)?,
                server_rsa_key: front::server_rsa_key(
                    &key,
                    b.server_rsa_public_key_file.as_deref(),
                    protocol == Protocol::Mysql,
                )?,
            });
        }

        let mut databases = Vec::new();
        let mut seen = HashSet::new();
        for (i, d) in raw.databases.iter().enumerate() {
            databases.push(Self::validate_database(
                i,
                d,
                &raw.limits,
                &backends,
                &mut seen,
            )?);
        }
        for front in [Protocol::Postgres, Protocol::Mysql] {
            let enabled = match front {
                Protocol::Postgres => postgres.is_some(),
                Protocol::Mysql => mysql_listen.is_some(),
            };
            if let Some(d) = databases.iter().find(|d| d.protocol == front && !enabled) {
                return Err(invalid(
                    format!("databases.{}", d.name),
                    format!("uses a {front} backend but there is no [{front}] front door"),
                ));
            }
        }

        let mut users = Vec::new();
        let mut seen = HashSet::new();
        for (i, u) in raw.users.iter().enumerate() {
            if u.name.is_empty() {
                return Err(invalid(format!("users[{i}].name"), "must not be empty"));
            }
            if !seen.insert(u.name.clone()) {
                return Err(invalid(
                    format!("users[{i}].name"),
                    format!("user {:?} is defined twice", u.name),
                ));
            }
            users.push(User {
                name: u.name.clone(),
                password: user_password(i, u)?,
            });
        }
        let pg_databases: Vec<String> = databases
            .iter()
            .filter(|d| d.protocol == Protocol::Postgres && d.name != FALLBACK_DATABASE)
            .map(|d| d.name.clone())
            .collect();
        let pg_databases: Vec<&str> = pg_databases.iter().map(String::as_str).collect();
        for (i, (d, raw_db)) in databases.iter_mut().zip(&raw.databases).enumerate() {
            d.auth = authquery::for_database(i, raw_db, d.protocol, &raw, &users, &pg_databases)?;
        }
        let (admin_users, alerts) = observe::validate(&raw, &users)?;
        let admin = observe::admin(&raw, &users, admin_listen)?;
        let rate_limits = raw
            .rate_limits
            .iter()
            .enumerate()
            .map(|(i, r)| guard::RateLimit::from_raw(&format!("rate_limits[{i}]"), r))
            .collect::<Result<_, _>>()?;
        let fleet = raw.fleet.as_ref().map(fleet::from_raw).transpose()?;
        let upgrade_socket = raw
            .general
            .as_ref()
            .and_then(|g| g.upgrade_socket.as_deref())
            .map(|p| match p.trim() {
                "" => Err(invalid("general.upgrade_socket", "must not be empty")),
                p => Ok(std::path::PathBuf::from(p)),
            })
            .transpose()?;
        Ok(Config {
            fleet,
            upgrade_socket,
            admin_users,
            stats_users: admin.stats_users,
            admin_access: admin.access,
            admin_tls: admin.tls,
            redact_statements: admin.redact_statements,
            alerts,
            rate_limits,
            admin_listen,
            postgres,
            mysql_listen,
            mysql,
            backends,
            databases,
            users,
            limits,
            logins,
        })
    }

    fn validate_database(
        i: usize,
        d: &RawDatabase,
        defaults: &RawLimits,
        backends: &[Backend],
        seen: &mut HashSet<(String, Protocol)>,
    ) -> Result<Database, ConfigError> {
        let key = format!("databases[{i}]");
        let backend = backends
            .iter()
            .find(|b| b.name == d.backend)
            .ok_or_else(|| {
                invalid(
                    format!("{key}.backend"),
                    format!(
                    "database {:?} refers to backend {:?}, which is not defined in [[backends]]",
                    d.name, d.backend
                ),
                )
            })?;
        if !seen.insert((d.name.clone(), backend.protocol)) {
            return Err(invalid(
                format!("{key}.name"),
                format!(
                    "database {:?} is defined twice for {}",
                    d.name, backend.protocol
                ),
            ));
        }
        let pool_mode = match d.pool_mode.as_deref().unwrap_or("transaction") {
            "transaction" => PoolMode::Transaction,
            "session" => PoolMode::Session,
            other => {
                return Err(invalid(
                    format!("{key}.pool_mode"),
                    format!("{other:?} is not \"session\" or \"transaction\""),
                ))
            }
        };
        let pool_size = d.pool_size.unwrap_or(10);
        let max_overflow = d.max_overflow.unwrap_or(0);
        if pool_size == 0 {
            return Err(invalid(format!("{key}.pool_size"), "must be at least 1"));
        }
        if pool_size + max_overflow > backend.max_connections {
            return Err(invalid(
                format!("{key}.pool_size"),
                format!(
                    "pool_size {pool_size} + max_overflow {max_overflow} = {} exceeds backend {:?}'s max_connections budget of {}",
                    pool_size + max_overflow,
                    backend.name,
                    backend.max_connections
                ),
            ));
        }
        Ok(Database {
            name: d.name.clone(),
            backend: backend.name.clone(),
            protocol: backend.protocol,
            server_database: d.server_database.clone().unwrap_or_else(|| d.name.clone()),
            pool_mode,
            pool_size,
            max_overflow,
            limits: Limits::from_raw(&key, &d.limits_over(defaults))?,
            target: target::Target::from_raw(
                &key,
                d.target.as_deref(),
                d.standby_fallback,
                backend,
            )?,
            auth: None, // set once the users are known
        })
    }

    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The user poolguard's own connections (`check`, server polls, health checks) log in as:
    /// the first `[[users]]` entry with a plain password, which answers whatever the server
    /// asks (a stored verifier logs in only by passthrough, after a client did), else the
    /// first entry.
    pub fn service_user(&self) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.has_plain_password())
            .or(self.users.first())
    }

    /// The entry serving database `name` on a door: its own `[[databases]]` entry, else the
    /// door's fallback entry (`name = "*"`, like PgBouncer's): the same settings, for a
    /// database of the asked name on the fallback's backend (its `server_database`, when set
    /// to something other than `*`, names the one server database every such client gets).
    /// Each name served through the fallback gets pools of its own.
    ///
    /// On the MySQL door, where a client may name no database (as the server allows), an empty
    /// name (or the fallback's own `*`, the name its pools go by) gets the fallback entry with
    /// no server database unless it names one: its clients log in without a default schema.
    pub fn database(&self, protocol: Protocol, name: &str) -> Option<Cow<'_, Database>> {
        let on_door = |d: &&Database| d.protocol == protocol;
        if protocol == Protocol::Mysql && (name.is_empty() || name == FALLBACK_DATABASE) {
            let mut d = self
                .databases
                .iter()
                .filter(on_door)
                .find(|d| d.name == FALLBACK_DATABASE)?
                .clone();
            if d.server_database == FALLBACK_DATABASE {
                d.server_database = String::new();
            }
            return Some(Cow::Owned(d));
        }
        if let Some(d) = self
            .databases
            .iter()
            .filter(on_door)
            .find(|d| d.name == name)
        {
            return Some(Cow::Borrowed(d));
        }
        if name.is_empty() || name == FALLBACK_DATABASE {
            return None;
        }
        let fallback = self
            .databases
            .iter()
            .filter(on_door)
            .find(|d| d.name == FALLBACK_DATABASE)?;
        let mut d = fallback.clone();
        d.name = name.to_owned();
        if d.server_database == FALLBACK_DATABASE {
            d.server_database = name.to_owned();
        }
        Some(Cow::Owned(d))
    }

    /// The configuration `poolguard run` uses without `--config`: a PostgreSQL front door on
    /// 127.0.0.1:6432 for the local server on 127.0.0.1:5432, database `postgres`, user `postgres`
    /// whose password comes from `POOLGUARD_PASSWORD` (default "postgres").
    pub fn builtin_default(password: &str) -> Config {
        let text = format!(
            r#"
[admin]
listen = "127.0.0.1:9930"

[postgres]
listen = "127.0.0.1:6432"

[[backends]]
name = "local"
protocol = "postgres"
hosts = ["127.0.0.1:5432"]
max_connections = 20

[[databases]]
name = "postgres"
backend = "local"
pool_size = 10
max_overflow = 5

[[users]]
name = "postgres"
password = {password:?}
"#
        );
        match Config::parse(&text) {
            Ok(c) => c,
            // The text above is fixed apart from a quoted password; a failure is a bug here.
            Err(e) => unreachable!("built-in default config is invalid: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod reference {
    //! Every key the configuration file accepts is in the reference (docs/configuration.md), or
    //! in the operations guide for the health-check and breaker keys it describes: this fails
    //! when a key exists in the code and not in the docs.

    const SOURCES: &[&str] = &[include_str!("raw.rs"), include_str!("observe.rs")];
    const DOCS: &[&str] = &[
        include_str!("../../../../docs/configuration.md"),
        include_str!("../../../../docs/operations.md"),
    ];

    /// The keys (serde field names, renames applied) of every `Raw*` struct in `source`.
    fn keys(source: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut in_raw = false;
        let mut rename: Option<String> = None;
        for line in source.lines().map(str::trim) {
            if line.starts_with("pub struct Raw") {
                in_raw = true;
                continue;
            }
            if in_raw && line == "}" {
                in_raw = false;
                continue;
            }
            if !in_raw {
                continue;
            }
            if let Some(r) = line.strip_prefix("#[serde(rename = \"") {
                rename = r.split('"').next().map(str::to_owned);
                continue;
            }
            if let Some(field) = line.strip_prefix("pub ") {
                if let Some((name, _)) = field.split_once(':') {
                    out.push(rename.take().unwrap_or_else(|| name.trim().to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn every_config_key_is_documented() {
        let keys: Vec<String> = SOURCES.iter().flat_map(|s| keys(s)).collect();
        assert!(keys.len() > 50, "the key scan found only {keys:?}");
        // Tables and arrays of tables are sections, not keys.
        let sections = [
            "general",
            "admin",
            "postgres",
            "mysql",
            "backends",
            "databases",
            "users",
            "limits",
            "alerts",
            "rate_limits",
            "fleet",
        ];
        let missing: Vec<&String> = keys
            .iter()
            .filter(|k| !sections.contains(&k.as_str()))
            .filter(|k| {
                let dotted = format!(".{k}`");
                let bare = format!("`{k}`");
                !DOCS
                    .iter()
                    .any(|d| d.contains(&dotted) || d.contains(&bare))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "config keys missing from docs/configuration.md: {missing:?}"
        );
    }
}
