//! The front doors' tables, `[postgres]` and `[mysql]`, validated.
//!
//! Invariants once built: the listen address parses, every enumerated value is known, and every
//! size and count is within the range the door can honour (a client message or packet limit
//! between 1 KiB and 1 GiB, statement caps at least 1).

use std::net::SocketAddr;
use std::sync::Arc;

use poolguard_mysql::full_auth::{RsaKeyPair, ServerPublicKey};

use super::raw::{RawMysql, RawPostgres};
use super::{invalid, parse_addr, parse_size, ConfigError};
use crate::pg::negotiate::POSTGRES_ALPN;
use crate::tls::accept::{ClientTls, TlsKeys};

/// Loads a door's TLS keys (the files are read here, so a bad file fails the config).
macro_rules! client_tls {
    ($door:expr, $raw:expr, $alpn:expr) => {
        ClientTls::load(
            $door,
            &TlsKeys {
                cert_file: $raw.tls_cert_file.as_deref(),
                key_file: $raw.tls_key_file.as_deref(),
                mode: $raw.client_tls.as_deref(),
                client_ca_file: $raw.tls_client_ca_file.as_deref(),
            },
            $alpn,
        )
        .map_err(|e| invalid(e.key, e.problem))
    };
}

/// Default of `[postgres] max_client_prepared_statements`: far above what drivers keep (psycopg
/// and the JDBC driver cache a few hundred at most), low enough that a client looping on
/// uniquely named Parse messages cannot grow poolguard's memory without bound.
pub const DEFAULT_MAX_CLIENT_PREPARED_STATEMENTS: usize = 10_000;

/// How a PostgreSQL client proves who it is to poolguard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    ScramSha256,
    Md5,
}

/// What transaction mode does when a client changes session state (SET, temp tables, PREPARE...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatePolicy {
    /// The default: every session-level SET / RESET (and SET SESSION CHARACTERISTICS) follows
    /// the client to whichever server its next transaction runs on; state that cannot move
    /// (temporary tables, LISTEN, session advisory locks, WITH HOLD cursors, SQL PREPARE, LOAD,
    /// RESET ALL) pins the client to its server, counted and logged.
    Follow,
    /// Reset the server (DISCARD ALL) before it serves anyone else; the client's change does not
    /// outlive its transaction.
    Reset,
    /// Keep the server for this client until it disconnects (session mode for that client).
    Pin,
    /// Refuse the statement with SQLSTATE 0A000 before it reaches the server.
    Error,
}

#[derive(Debug, Clone)]
pub struct PostgresFront {
    pub listen: SocketAddr,
    pub auth: ClientAuth,
    pub session_state: SessionStatePolicy,
    /// Per server connection: poolguard's statements kept prepared there (LRU beyond).
    pub max_prepared_statements: usize,
    pub track_extra_parameters: Vec<String>,
    /// Largest length a client message's header may announce; a bigger one is refused at the
    /// header (08P01) and the connection closed, before any of its body is read.
    pub max_message_size: usize,
    /// Per client: named prepared statements it may hold at once (transaction mode tracks each
    /// one); a Parse beyond it is refused with 54000.
    pub max_client_prepared_statements: usize,
    /// `client_tls` and its certificate, loaded (see [`crate::tls::accept`]).
    pub tls: ClientTls,
}

/// How a MySQL client proves who it is to poolguard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MysqlAuth {
    /// `mysql_native_password` (SHA1 challenge-response).
    NativePassword,
    /// `caching_sha2_password`: the fast path, and the full path (cleartext over TLS, RSA
    /// without) when [`FullAuth`] says so.
    CachingSha2,
}

/// `[mysql] caching_sha2_full_auth`: when a caching_sha2 client is asked for its full password
/// (AuthMoreData 0x04) instead of being checked on its scramble. poolguard knows the plain
/// password, so the fast path alone proves as much; the full path is for users stored as a
/// native `*HEX` hash (which cannot check a SHA-256 scramble) and for behaving like a MySQL 8
/// server whose cache is cold (see `crate::mysql::sha2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullAuth {
    /// Only for users whose password is configured as a native hash.
    WhenNeeded,
    /// Like MySQL 8: until a user completes one full authentication (since start, or since
    /// its password changed), then the fast path.
    FirstLogin,
    /// Every login (a cache that never warms).
    Always,
}

/// The `[mysql]` front door.
#[derive(Debug, Clone)]
pub struct MysqlFront {
    pub listen: SocketAddr,
    pub auth: MysqlAuth,
    /// Relay LOAD DATA LOCAL INFILE transfers; refused with an error when false.
    pub allow_local_infile: bool,
    /// Largest logical packet a client may send (ER_NET_PACKET_TOO_LARGE beyond it).
    pub max_allowed_packet: usize,
    pub max_prepared_statements: usize,
    /// `client_tls` and its certificate, loaded (see [`crate::tls::accept`]).
    pub tls: ClientTls,
    pub full_auth: FullAuth,
    /// `rsa_private_key_file`, loaded; `None`: poolguard generates a key pair when a client
    /// first needs one.
    pub rsa_key: Option<Arc<RsaKeyPair>>,
}

/// Validates the `[postgres]` table.
pub(super) fn postgres_front(p: &RawPostgres) -> Result<PostgresFront, ConfigError> {
    let auth = match p.auth_method.as_deref().unwrap_or("scram-sha-256") {
        "scram-sha-256" => ClientAuth::ScramSha256,
        "md5" => ClientAuth::Md5,
        other => {
            return Err(invalid(
                "postgres.auth_method",
                format!("{other:?} is not one of \"scram-sha-256\", \"md5\""),
            ))
        }
    };
    let session_state = match p.session_state.as_deref().unwrap_or("follow") {
        "follow" => SessionStatePolicy::Follow,
        "reset" => SessionStatePolicy::Reset,
        "pin" => SessionStatePolicy::Pin,
        "error" => SessionStatePolicy::Error,
        other => {
            return Err(invalid(
                "postgres.session_state",
                format!("{other:?} is not one of \"follow\", \"reset\", \"pin\", \"error\""),
            ))
        }
    };
    let max_prepared_statements = p.max_prepared_statements.unwrap_or(100);
    if max_prepared_statements == 0 {
        return Err(invalid(
            "postgres.max_prepared_statements",
            "must be at least 1",
        ));
    }
    let max_message_size = match &p.max_message_size {
        Some(s) => parse_size("postgres.max_message_size", s)?,
        None => poolguard_pg::framing::DEFAULT_MAX_MESSAGE_LEN,
    };
    // Below 1 KiB ordinary queries would not fit; above 1 GiB is PostgreSQL's own maximum.
    if !(1024..=1 << 30).contains(&max_message_size) {
        return Err(invalid(
            "postgres.max_message_size",
            "must be between 1KiB and 1GiB",
        ));
    }
    let max_client_prepared_statements = p
        .max_client_prepared_statements
        .unwrap_or(DEFAULT_MAX_CLIENT_PREPARED_STATEMENTS);
    if max_client_prepared_statements == 0 {
        return Err(invalid(
            "postgres.max_client_prepared_statements",
            "must be at least 1",
        ));
    }
    let track_extra_parameters = p.track_extra_parameters.clone().unwrap_or_default();
    if let Some(bad) = track_extra_parameters.iter().find(|n| {
        n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    }) {
        return Err(invalid(
            "postgres.track_extra_parameters",
            format!("{bad:?} is not a parameter name"),
        ));
    }
    Ok(PostgresFront {
        listen: parse_addr("postgres.listen", &p.listen)?,
        auth,
        session_state,
        max_prepared_statements,
        track_extra_parameters,
        max_message_size,
        max_client_prepared_statements,
        tls: client_tls!("postgres", p, Some(POSTGRES_ALPN))?,
    })
}

pub(super) fn mysql_front(m: &RawMysql) -> Result<MysqlFront, ConfigError> {
    let auth = match m.auth_method.as_deref().unwrap_or("mysql_native_password") {
        "mysql_native_password" => MysqlAuth::NativePassword,
        "caching_sha2_password" => MysqlAuth::CachingSha2,
        other => {
            return Err(invalid(
                "mysql.auth_method",
                format!(
                    "{other:?} is not one of \"mysql_native_password\", \"caching_sha2_password\""
                ),
            ))
        }
    };
    let max_allowed_packet = match &m.max_allowed_packet {
        Some(s) => parse_size("mysql.max_allowed_packet", s)?,
        None => 64 << 20,
    };
    // Below 1 KiB no client could even log in; above 1 GiB is MySQL's own hard maximum.
    if !(1024..=1 << 30).contains(&max_allowed_packet) {
        return Err(invalid(
            "mysql.max_allowed_packet",
            "must be between 1KiB and 1GiB",
        ));
    }
    let max_prepared_statements = m.max_prepared_statements.unwrap_or(100);
    if max_prepared_statements == 0 {
        return Err(invalid(
            "mysql.max_prepared_statements",
            "must be at least 1",
        ));
    }
    let full_auth = match m.caching_sha2_full_auth.as_deref().unwrap_or("when_needed") {
        "when_needed" => FullAuth::WhenNeeded,
        "first_login" => FullAuth::FirstLogin,
        "always" => FullAuth::Always,
        other => {
            return Err(invalid(
                "mysql.caching_sha2_full_auth",
                format!("{other:?} is not one of \"when_needed\", \"first_login\", \"always\""),
            ))
        }
    };
    let rsa_key = match &m.rsa_private_key_file {
        Some(path) => {
            let key = "mysql.rsa_private_key_file";
            let pem = std::fs::read_to_string(path)
                .map_err(|e| invalid(key, format!("cannot read {path:?}: {e}")))?;
            let pair =
                RsaKeyPair::from_pem(&pem).map_err(|e| invalid(key, format!("{path:?}: {e}")))?;
            Some(Arc::new(pair))
        }
        None => None,
    };
    Ok(MysqlFront {
        listen: parse_addr("mysql.listen", &m.listen)?,
        auth,
        allow_local_infile: m.allow_local_infile.unwrap_or(false),
        max_allowed_packet,
        max_prepared_statements,
        tls: client_tls!("mysql", m, None)?,
        full_auth,
        rsa_key,
    })
}

/// `backends[].server_rsa_public_key_file`, loaded (MySQL backends only).
pub(super) fn server_rsa_key(
    key: &str,
    path: Option<&str>,
    mysql: bool,
) -> Result<Option<Arc<ServerPublicKey>>, ConfigError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let key = format!("{key}.server_rsa_public_key_file");
    if !mysql {
        return Err(invalid(key, "only MySQL backends use an RSA key"));
    }
    let pem =
        std::fs::read(path).map_err(|e| invalid(&key, format!("cannot read {path:?}: {e}")))?;
    let public =
        ServerPublicKey::from_pem(&pem).map_err(|e| invalid(&key, format!("{path:?}: {e}")))?;
    Ok(Some(Arc::new(public)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres(extra: &str) -> Result<PostgresFront, ConfigError> {
        let raw: RawPostgres =
            toml::from_str(&format!("listen = \"127.0.0.1:6432\"\n{extra}")).unwrap();
        postgres_front(&raw)
    }

    #[test]
    fn postgres_limits_have_defaults_and_ranges() {
        let p = postgres("").unwrap();
        assert_eq!(p.max_message_size, 64 << 20);
        assert_eq!(p.max_client_prepared_statements, 10_000);
        let p =
            postgres("max_message_size = \"1MiB\"\nmax_client_prepared_statements = 5").unwrap();
        assert_eq!(p.max_message_size, 1 << 20);
        assert_eq!(p.max_client_prepared_statements, 5);
        let e = postgres("max_message_size = \"2GiB\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres.max_message_size"), "{e}");
        let e = postgres("max_client_prepared_statements = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres.max_client_prepared_statements"), "{e}");
    }

    fn mysql(extra: &str) -> Result<MysqlFront, ConfigError> {
        let raw: RawMysql =
            toml::from_str(&format!("listen = \"127.0.0.1:6033\"\n{extra}")).unwrap();
        mysql_front(&raw)
    }

    #[test]
    fn caching_sha2_keys() {
        let m = mysql("").unwrap();
        assert_eq!(m.full_auth, FullAuth::WhenNeeded);
        assert!(m.rsa_key.is_none(), "generated when first needed");
        let m = mysql("caching_sha2_full_auth = \"first_login\"").unwrap();
        assert_eq!(m.full_auth, FullAuth::FirstLogin);
        let e = mysql("caching_sha2_full_auth = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mysql.caching_sha2_full_auth"), "{e}");

        let dir = std::env::temp_dir().join(format!("poolguard-sha2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("rsa.key");
        let pair = poolguard_mysql::full_auth::RsaKeyPair::generate().unwrap();
        // A public key is not a private key: the file is refused, naming the key.
        std::fs::write(&good, pair.public_pem()).unwrap();
        let e = mysql(&format!(
            "rsa_private_key_file = {:?}",
            good.display().to_string()
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("mysql.rsa_private_key_file") && e.contains("private key"),
            "{e}"
        );
        let e = mysql("rsa_private_key_file = \"/nonexistent/rsa.key\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");

        // The server key: MySQL backends only, and it must parse.
        let public = dir.join("server.pub");
        std::fs::write(&public, pair.public_pem()).unwrap();
        let path = public.display().to_string();
        let key = server_rsa_key("backends[0]", Some(&path), true).unwrap();
        assert_eq!(key.unwrap().bits(), 2048);
        let e = server_rsa_key("backends[0]", Some(&path), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("backends[0].server_rsa_public_key_file"), "{e}");
        std::fs::write(&public, "not a key").unwrap();
        assert!(server_rsa_key("backends[0]", Some(&path), true).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
