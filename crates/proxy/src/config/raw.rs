//! The configuration file as written: serde structs that mirror the TOML, unknown keys denied.
//!
//! Nothing here is validated beyond syntax; [`super::Config::from_raw`] turns these into runtime
//! types and names the offending key when something is wrong. Durations stay strings here
//! ("5s", "30m") so the error can quote what the operator wrote.

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub general: Option<RawGeneral>,
    pub admin: Option<RawAdmin>,
    pub postgres: Option<RawPostgres>,
    pub mysql: Option<RawMysql>,
    #[serde(default)]
    pub backends: Vec<RawBackend>,
    #[serde(default)]
    pub databases: Vec<RawDatabase>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub alerts: Vec<super::observe::RawAlert>,
    #[serde(default)]
    pub rate_limits: Vec<RawRateLimit>,
    pub fleet: Option<RawFleet>,
}

/// `[fleet]`: several instances share each backend's `max_connections` through etcd.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    /// etcd client endpoints, `host:port` or `http://host:port`.
    pub etcd_endpoints: Vec<String>,
    /// This instance's name, unique in the fleet.
    pub instance: String,
    /// The lease's TTL (default "5s").
    pub lease_ttl: Option<String>,
    /// Follow Patroni's leader key `/service/<scope>/leader`.
    pub patroni_scope: Option<String>,
    /// The fleet's keys live under `/poolguard/<name>/` (default "default").
    pub name: Option<String>,
}

/// `[general]`: process-wide settings.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGeneral {
    /// Unix socket a new poolguard binary connects to in order to take over (binary upgrade).
    pub upgrade_socket: Option<String>,
}

/// One `[[rate_limits]]` rule: rates per user, per database or per client address.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    /// "address", "user" or "database": what each bucket is kept per.
    pub per: String,
    /// New client connections per second (refused beyond it).
    pub connections_per_second: Option<f64>,
    /// Transactions (server assignments) per second (held, then refused beyond it).
    pub transactions_per_second: Option<f64>,
    /// How many may come at once before the rate applies (default: one second's worth).
    pub burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    /// Users (from `[[users]]`) allowed on the PostgreSQL admin console (PgBouncer's
    /// `admin_users`; that name is accepted too).
    #[serde(alias = "admin_users")]
    pub users: Option<Vec<String>>,
    /// Users allowed the console's SHOW commands only (PgBouncer's `stats_users`).
    pub stats_users: Option<Vec<String>>,
    /// A file holding the token that may read and change state over HTTP.
    pub admin_token_file: Option<String>,
    /// A file holding the token that may only read over HTTP.
    pub read_token_file: Option<String>,
    /// Host names the HTTP side answers to besides loopback and its own address.
    pub allowed_hosts: Option<Vec<String>>,
    /// Statement text in `/api` and the console with literals replaced (default true).
    pub redact_statements: Option<bool>,
    /// HTTPS on the admin listener: certificate and key (PEM).
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    /// HTTPS clients must present a certificate signed by this CA.
    pub tls_client_ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    pub listen: String,
    /// "scram-sha-256" (default) or "md5": what poolguard asks clients for.
    pub auth_method: Option<String>,
    /// Session-state commands in transaction mode: "reset" (default), "pin" or "error".
    pub session_state: Option<String>,
    /// Per server connection bound on poolguard's prepared statements.
    pub max_prepared_statements: Option<usize>,
    /// Parameters besides the reported ones to carry between servers (e.g. "search_path").
    pub track_extra_parameters: Option<Vec<String>>,
    /// Largest client message accepted: bytes, or a string with a unit ("64MiB").
    pub max_message_size: Option<RawSize>,
    /// Per client bound on named prepared statements (transaction mode).
    pub max_client_prepared_statements: Option<usize>,
    /// Certificate chain (PEM) poolguard presents to clients asking for TLS.
    pub tls_cert_file: Option<String>,
    /// Its private key (PEM).
    pub tls_key_file: Option<String>,
    /// "disable", "allow" (default with a certificate) or "require".
    pub client_tls: Option<String>,
    /// CA (PEM) client certificates must be signed by; needs client_tls = "require".
    pub tls_client_ca_file: Option<String>,
    /// A `[[users]]` entry poolguard logs in as to look up users it does not know.
    pub auth_user: Option<String>,
    /// The lookup: one row (name, password or verifier) for `$1`, the user name.
    pub auth_query: Option<String>,
    /// How long a lookup's answer is reused ("5s"; "0s": every login asks).
    pub auth_query_cache: Option<String>,
    /// The `[[databases]]` entry lookups run in (default: the client's database).
    pub auth_dbname: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMysql {
    pub listen: String,
    /// "mysql_native_password" (default) or "caching_sha2_password": what poolguard asks clients for.
    pub auth_method: Option<String>,
    /// Relay `LOAD DATA LOCAL INFILE` file transfers (default false: refused with an error).
    pub allow_local_infile: Option<bool>,
    /// Largest client packet accepted: bytes, or a string with a unit ("64MiB", "16M").
    pub max_allowed_packet: Option<RawSize>,
    /// Per server connection bound on poolguard's prepared statements.
    pub max_prepared_statements: Option<usize>,
    /// Certificate chain (PEM) poolguard presents to clients asking for TLS.
    pub tls_cert_file: Option<String>,
    /// Its private key (PEM).
    pub tls_key_file: Option<String>,
    /// "disable", "allow" (default with a certificate) or "require".
    pub client_tls: Option<String>,
    /// CA (PEM) client certificates must be signed by; needs client_tls = "require".
    pub tls_client_ca_file: Option<String>,
    /// caching_sha2_password: "when_needed" (default), "first_login" or "always".
    pub caching_sha2_full_auth: Option<String>,
    /// PEM RSA private key for caching_sha2's RSA path (default: one generated in memory).
    pub rsa_private_key_file: Option<String>,
}

/// A size in bytes, written as an integer or as a string with a unit.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub name: String,
    pub protocol: String,
    pub hosts: Vec<String>,
    pub max_connections: usize,
    pub connect_timeout: Option<String>,
    /// See `super::guard::HostGuard` for these.
    pub health_check_interval: Option<String>,
    pub health_check_timeout: Option<String>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown: Option<String>,
    pub breaker_max_cooldown: Option<String>,
    /// See `crate::tls::connect` for these.
    pub server_tls: Option<String>,
    pub server_tls_ca_file: Option<String>,
    pub server_tls_cert_file: Option<String>,
    pub server_tls_key_file: Option<String>,
    /// MySQL: the server's RSA public key (PEM) for caching_sha2's full path without TLS.
    pub server_rsa_public_key_file: Option<String>,
}

/// Keys a `[[databases]]` entry may override from `[limits]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub acquire_timeout: Option<String>,
    pub max_lifetime: Option<String>,
    pub lifetime_jitter: Option<f64>,
    pub idle_timeout: Option<String>,
    pub idle_in_transaction_timeout: Option<String>,
    pub client_idle_timeout: Option<String>,
    pub query_timeout: Option<String>,
    pub max_client_connections: Option<usize>,
    pub leak_threshold: Option<String>,
    pub max_waiters: Option<usize>,
    pub fair_share: Option<f64>,
    pub fair_share_by: Option<String>,
    pub fair_share_mode: Option<String>,
    // Global only (not in `RawDatabase`): logins are counted before anyone knows the database.
    pub client_login_timeout: Option<String>,
    pub max_logins_in_progress: Option<usize>,
    pub max_logins_per_address: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    pub name: String,
    pub backend: String,
    pub server_database: Option<String>,
    pub pool_mode: Option<String>,
    pub pool_size: Option<usize>,
    pub max_overflow: Option<usize>,
    pub target: Option<String>,
    pub standby_fallback: Option<bool>,
    /// Overrides `[postgres] auth_user` / `auth_query` / `auth_dbname` for this database.
    pub auth_user: Option<String>,
    pub auth_query: Option<String>,
    pub auth_dbname: Option<String>,
    // serde cannot combine `flatten` with `deny_unknown_fields`, so the overridable limits are
    // spelled out here and gathered by `limits()`.
    pub acquire_timeout: Option<String>,
    pub max_lifetime: Option<String>,
    pub lifetime_jitter: Option<f64>,
    pub idle_timeout: Option<String>,
    pub idle_in_transaction_timeout: Option<String>,
    pub client_idle_timeout: Option<String>,
    pub query_timeout: Option<String>,
    pub max_client_connections: Option<usize>,
    pub leak_threshold: Option<String>,
    pub max_waiters: Option<usize>,
    pub fair_share: Option<f64>,
    pub fair_share_by: Option<String>,
    pub fair_share_mode: Option<String>,
}

impl RawDatabase {
    /// This entry's overrides, each falling back to the `[limits]` value when absent.
    pub fn limits_over(&self, defaults: &RawLimits) -> RawLimits {
        RawLimits {
            acquire_timeout: self
                .acquire_timeout
                .clone()
                .or(defaults.acquire_timeout.clone()),
            max_lifetime: self.max_lifetime.clone().or(defaults.max_lifetime.clone()),
            lifetime_jitter: self.lifetime_jitter.or(defaults.lifetime_jitter),
            idle_timeout: self.idle_timeout.clone().or(defaults.idle_timeout.clone()),
            idle_in_transaction_timeout: self
                .idle_in_transaction_timeout
                .clone()
                .or(defaults.idle_in_transaction_timeout.clone()),
            client_idle_timeout: self
                .client_idle_timeout
                .clone()
                .or(defaults.client_idle_timeout.clone()),
            query_timeout: self
                .query_timeout
                .clone()
                .or(defaults.query_timeout.clone()),
            max_client_connections: self
                .max_client_connections
                .or(defaults.max_client_connections),
            leak_threshold: self
                .leak_threshold
                .clone()
                .or(defaults.leak_threshold.clone()),
            max_waiters: self.max_waiters.or(defaults.max_waiters),
            fair_share: self.fair_share.or(defaults.fair_share),
            fair_share_by: self
                .fair_share_by
                .clone()
                .or(defaults.fair_share_by.clone()),
            fair_share_mode: self
                .fair_share_mode
                .clone()
                .or(defaults.fair_share_mode.clone()),
            // Global keys: a database entry cannot set them, and `Limits` does not read them.
            client_login_timeout: None,
            max_logins_in_progress: None,
            max_logins_per_address: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    /// The password itself (or a stored SCRAM verifier / md5 hash for client authentication).
    pub password: Option<String>,
    /// A file holding it (read at start and on every reload; a trailing newline is dropped).
    pub password_file: Option<String>,
    /// An environment variable holding it.
    pub password_env: Option<String>,
}
