//! `poolguard import-pgbouncer pgbouncer.ini [userlist.txt]`: an equivalent poolguard
//! configuration on stdout, and on stderr every setting that has no equivalent (or a
//! different meaning) so nothing is dropped silently.
//!
//! The mapping (docs/configuration.md: "Coming from PgBouncer"): each `[databases]` line becomes a
//! `[[databases]]` entry on a backend per distinct host and port (`*` becomes the fallback
//! entry); `default_pool_size` / `reserve_pool_size` become `pool_size` / `max_overflow`; the
//! timeouts keep their meaning under poolguard's names; `auth_file` (or the second argument)
//! becomes `[[users]]`. PgBouncer has no server budget: each backend's `max_connections` is
//! `max_db_connections` where set, else the sum of its pools' caps times the users, which the
//! output says so the operator can lower it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The generated configuration and the notes about what did not map.
pub struct Imported {
    pub config: String,
    pub notes: Vec<String>,
}

/// One `[databases]` line.
struct DbLine {
    name: String,
    host: String,
    port: u16,
    dbname: String,
    pool_size: Option<usize>,
    reserve: Option<usize>,
    pool_mode: Option<String>,
}

/// `key = value` pairs per section, in order; `;` and `#` start comments.
fn sections(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with(';') || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_ascii_lowercase();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(current.clone())
                .or_default()
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// `host=... port=... dbname=...` (values may be quoted with `'`).
fn connstr(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while let Some((k, after)) = rest.split_once('=') {
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('\'') {
            match q.split_once('\'') {
                Some((v, t)) => (v, t),
                None => (q, ""),
            }
        } else {
            match after.split_once(char::is_whitespace) {
                Some((v, t)) => (v, t),
                None => (after, ""),
            }
        };
        out.insert(k.trim().to_ascii_lowercase(), v.to_owned());
        rest = tail.trim_start();
    }
    out
}

/// `"user" "password"` lines of a PgBouncer auth file.
fn userlist(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut quoted = l.split('"').skip(1).step_by(2);
            Some((
                quoted.next()?.to_owned(),
                quoted.next().unwrap_or("").to_owned(),
            ))
        })
        .collect()
}

fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// A PgBouncer duration (seconds, or with a unit suffix) as poolguard writes it.
fn duration(v: &str) -> String {
    let v = v.trim();
    if v.chars().all(|c| c.is_ascii_digit() || c == '.') {
        format!("\"{v}s\"")
    } else {
        toml_str(v)
    }
}

/// Translates `ini` (and the users from `users`, the auth file's text, when given).
pub fn import(ini: &str, users: Option<&str>) -> Imported {
    let s = sections(ini);
    let mut notes = Vec::new();
    let empty = Vec::new();
    let pgb: BTreeMap<&str, &str> = s
        .get("pgbouncer")
        .unwrap_or(&empty)
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let get = |k: &str| pgb.get(k).copied();
    let default_mode = get("pool_mode").unwrap_or("session");
    let default_size: usize = get("default_pool_size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let default_reserve: usize = get("reserve_pool_size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    let mut dbs = Vec::new();
    for (name, value) in s.get("databases").unwrap_or(&empty) {
        let c = connstr(value);
        for k in c.keys() {
            if !matches!(
                k.as_str(),
                "host"
                    | "port"
                    | "dbname"
                    | "pool_size"
                    | "reserve_pool"
                    | "reserve_pool_size"
                    | "pool_mode"
            ) {
                notes.push(format!(
                    "[databases] {name}: {k} has no equivalent (ignored)"
                ));
            }
        }
        dbs.push(DbLine {
            name: name.clone(),
            host: c.get("host").cloned().unwrap_or_else(|| "127.0.0.1".into()),
            port: c.get("port").and_then(|p| p.parse().ok()).unwrap_or(5432),
            dbname: c.get("dbname").cloned().unwrap_or_else(|| name.clone()),
            pool_size: c.get("pool_size").and_then(|v| v.parse().ok()),
            reserve: c
                .get("reserve_pool")
                .or_else(|| c.get("reserve_pool_size"))
                .and_then(|v| v.parse().ok()),
            pool_mode: c.get("pool_mode").cloned(),
        });
    }

    let mut user_entries: Vec<(String, String)> = Vec::new();
    if let Some(text) = users {
        user_entries = userlist(text);
    } else if let Some(file) = get("auth_file") {
        notes.push(format!(
            "auth_file = {file}: pass it as the second argument to import its users"
        ));
    }
    for (user, password) in &user_entries {
        if password.starts_with("md5") || password.starts_with("SCRAM-SHA-256$") {
            notes.push(format!(
                "user {user}: a stored hash: poolguard logs in to the server by passthrough, which needs the server to store this same hash or verifier (SCRAM: from the first client login on; md5: when the server asks for md5); set the plain password (or password_file) otherwise"
            ));
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported from a PgBouncer configuration by `poolguard import-pgbouncer`."
    );
    let _ = writeln!(
        out,
        "# Review the notes it printed; `poolguard check --config` before serving.\n"
    );
    let addr = match get("listen_addr") {
        Some("*") | Some("0.0.0.0") => "0.0.0.0",
        Some(a) => a.split(',').next().unwrap_or("127.0.0.1").trim(),
        None => "127.0.0.1",
    };
    let port = get("listen_port").unwrap_or("6432");
    let admin_users: Vec<&str> = get("admin_users")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let stats_users: Vec<&str> = get("stats_users")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let known: Vec<&str> = user_entries.iter().map(|(u, _)| u.as_str()).collect();
    let listed = |list: &[&str]| -> Vec<String> {
        list.iter()
            .filter(|u| known.contains(u))
            .map(|u| toml_str(u))
            .collect()
    };
    if !admin_users.is_empty() || !stats_users.is_empty() {
        let _ = writeln!(out, "[admin]\nlisten = \"127.0.0.1:9930\"");
        let _ = writeln!(out, "users = [{}]", listed(&admin_users).join(", "));
        let _ = writeln!(out, "stats_users = [{}]\n", listed(&stats_users).join(", "));
    }
    let _ = writeln!(out, "[postgres]\nlisten = \"{addr}:{port}\"");
    match get("auth_type") {
        None | Some("md5") => {
            let _ = writeln!(out, "auth_method = \"md5\"");
        }
        Some("scram-sha-256") => {
            let _ = writeln!(out, "auth_method = \"scram-sha-256\"");
        }
        Some(other) => notes.push(format!(
            "auth_type = {other}: poolguard authenticates clients with scram-sha-256 or md5 (scram-sha-256 written)"
        )),
    }
    // The same lookup under the same names; it must be a [[users]] entry here.
    if let Some(user) = get("auth_user") {
        let _ = writeln!(out, "auth_user = {}", toml_str(user));
        if !known.contains(&user) {
            notes.push(format!(
                "auth_user = {user}: add it to [[users]] with its password (the lookup logs in as it)"
            ));
        }
    }
    if let Some(v) = get("auth_query") {
        let _ = writeln!(out, "auth_query = {}", toml_str(v));
    }
    let fallback = dbs.iter().any(|d| d.name == "*");
    let first = dbs.iter().map(|d| d.name.as_str()).find(|n| *n != "*");
    match (get("auth_dbname"), get("auth_user"), first) {
        (Some(v), _, _) => {
            let _ = writeln!(out, "auth_dbname = {}", toml_str(v));
        }
        // poolguard runs a fallback entry's lookups in one named database only.
        (None, Some(_), Some(db)) if fallback => {
            let _ = writeln!(out, "auth_dbname = {}", toml_str(db));
            notes.push(format!(
                "auth_user with a \"*\" database: lookups run in {db} (auth_dbname); the lookup function must exist there"
            ));
        }
        _ => {}
    }
    out.push('\n');

    // Backends: one per host:port.
    let mut backends: BTreeMap<(String, u16), usize> = BTreeMap::new();
    for d in &dbs {
        let cap = d.pool_size.unwrap_or(default_size) + d.reserve.unwrap_or(default_reserve);
        *backends.entry((d.host.clone(), d.port)).or_default() += cap;
    }
    let users_n = user_entries.len().max(1);
    let backend_name = |host: &str, port: u16| {
        format!(
            "{}_{port}",
            host.trim_start_matches('/').replace(['.', ':', '/'], "_")
        )
    };
    // PgBouncer (as libpq) reads a host that starts with '/' as the directory of the server's
    // Unix socket; poolguard names the socket file itself.
    let address = |host: &str, port: u16| match host.starts_with('/') {
        true => format!("{}/.s.PGSQL.{port}", host.trim_end_matches('/')),
        false => format!("{host}:{port}"),
    };
    for ((host, port), caps) in &backends {
        let budget = match get("max_db_connections").and_then(|v| v.parse::<usize>().ok()) {
            Some(m) if m > 0 => m * backends.len().max(1),
            _ => {
                notes.push(format!(
                    "backend {host}:{port}: PgBouncer has no server budget; max_connections set to the pools' caps times the users ({caps} x {users_n}): lower it to what the server can give"
                ));
                caps * users_n
            }
        };
        let _ = writeln!(
            out,
            "[[backends]]\nname = {}\nprotocol = \"postgres\"\nhosts = [{}]\nmax_connections = {budget}\n",
            toml_str(&backend_name(host, *port)),
            toml_str(&address(host, *port))
        );
    }
    for d in &dbs {
        let mode = d.pool_mode.as_deref().unwrap_or(default_mode);
        let mode = match mode {
            "session" | "transaction" => mode,
            other => {
                notes.push(format!(
                    "database {}: pool_mode = {other} has no equivalent (transaction written)",
                    d.name
                ));
                "transaction"
            }
        };
        let _ = writeln!(out, "[[databases]]\nname = {}", toml_str(&d.name));
        let _ = writeln!(
            out,
            "backend = {}",
            toml_str(&backend_name(&d.host, d.port))
        );
        if d.name != "*" || d.dbname != "*" {
            let _ = writeln!(out, "server_database = {}", toml_str(&d.dbname));
        }
        let _ = writeln!(
            out,
            "pool_mode = \"{mode}\"\npool_size = {}\nmax_overflow = {}\n",
            d.pool_size.unwrap_or(default_size),
            d.reserve.unwrap_or(default_reserve)
        );
    }
    for (user, password) in &user_entries {
        let _ = writeln!(
            out,
            "[[users]]\nname = {}\npassword = {}\n",
            toml_str(user),
            toml_str(password)
        );
    }

    // [pgbouncer] settings with an equivalent in [limits]; every other one is noted.
    let mut limits = String::new();
    for (k, v) in s.get("pgbouncer").unwrap_or(&empty) {
        let line = match k.as_str() {
            "server_lifetime" => format!("max_lifetime = {}", duration(v)),
            "server_idle_timeout" => format!("idle_timeout = {}", duration(v)),
            "query_timeout" => format!("query_timeout = {}", duration(v)),
            "query_wait_timeout" => format!("acquire_timeout = {}", duration(v)),
            "client_idle_timeout" => format!("client_idle_timeout = {}", duration(v)),
            "idle_transaction_timeout" => format!("idle_in_transaction_timeout = {}", duration(v)),
            "client_login_timeout" => format!("client_login_timeout = {}", duration(v)),
            "max_client_conn" => format!("max_client_connections = {v}"),
            // Mapped above, or PgBouncer housekeeping with no meaning here.
            "listen_addr" | "listen_port" | "auth_type" | "auth_file" | "auth_user"
            | "auth_query" | "auth_dbname" | "pool_mode" | "default_pool_size"
            | "reserve_pool_size" | "max_db_connections" | "admin_users" | "stats_users"
            | "logfile" | "pidfile" | "unix_socket_dir" => continue,
            other => {
                notes.push(format!(
                    "[pgbouncer] {other} = {v}: no equivalent (ignored)"
                ));
                continue;
            }
        };
        let _ = writeln!(limits, "{line}");
    }
    if !limits.is_empty() {
        let _ = write!(out, "[limits]\n{limits}");
    }
    Imported { config: out, notes }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INI: &str = r#"
[databases]
bank = host=127.0.0.1 port=5433 dbname=bankdb pool_size=7
* = host=127.0.0.1 port=5433

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6543
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
auth_user = app
auth_query = SELECT usename, passwd FROM pgbouncer.user_lookup($1)
pool_mode = transaction
default_pool_size = 5
reserve_pool_size = 2
server_lifetime = 1800
query_wait_timeout = 30
admin_users = app
server_reset_query = DISCARD ALL
"#;

    #[test]
    fn a_socket_directory_host_becomes_the_socket_path() {
        let ini = "[databases]\nbank = host=/var/run/postgresql port=5433\n[pgbouncer]\n";
        let imported = import(ini, Some("\"app\" \"app-secret\"\n"));
        assert!(
            imported
                .config
                .contains("hosts = [\"/var/run/postgresql/.s.PGSQL.5433\"]"),
            "{}",
            imported.config
        );
        poolguard_proxy::config::Config::parse(&imported.config)
            .unwrap_or_else(|e| panic!("{e}\n{}", imported.config));
    }

    #[test]
    fn imports_an_equivalent_configuration_and_names_what_does_not_map() {
        let imported = import(INI, Some("\"app\" \"app-secret\"\n\"ops\" \"md5abc\"\n"));
        let config = poolguard_proxy::config::Config::parse(&imported.config)
            .unwrap_or_else(|e| panic!("{e}\n{}", imported.config));
        let bank = config
            .database(poolguard_proxy::config::Protocol::Postgres, "bank")
            .unwrap();
        assert_eq!((bank.pool_size, bank.max_overflow), (7, 2));
        assert_eq!(bank.server_database, "bankdb");
        let auth = bank.auth.as_ref().expect("auth_user carried over");
        assert_eq!(auth.user, "app");
        assert_eq!(
            auth.database.as_deref(),
            Some("bank"),
            "the fallback's lookups"
        );
        assert_eq!(
            auth.query,
            "SELECT usename, passwd FROM pgbouncer.user_lookup($1)"
        );
        assert_eq!(
            bank.limits.acquire_timeout,
            std::time::Duration::from_secs(30)
        );
        let other = config
            .database(poolguard_proxy::config::Protocol::Postgres, "reports")
            .unwrap();
        assert_eq!(other.server_database, "reports", "the fallback entry");
        assert_eq!(config.admin_users, ["app"]);
        assert_eq!(config.users.len(), 2);
        let notes = imported.notes.join("\n");
        assert!(notes.contains("server_reset_query"), "{notes}");
        assert!(notes.contains("user ops"), "{notes}");
        assert!(notes.contains("no server budget"), "{notes}");
    }
}
