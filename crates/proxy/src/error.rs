//! The proxy's user-facing errors, their PostgreSQL SQLSTATEs and their MySQL error codes.
//!
//! Every refusal poolguard makes on its own behalf is one of these; each has a distinct SQLSTATE
//! and MySQL code (DESIGN.md's taxonomy, [`ProxyError::sqlstate`] and [`ProxyError::mysql_code`]
//! are the one place they are decided) and a message that says what limit was hit and what to do.
//! Errors that a real server produced travel as [`ProxyError::Server`] (PostgreSQL) or
//! [`ProxyError::MysqlServer`] with the server's own code.

use poolguard_mysql::consts as my;
use poolguard_pg::backend::ErrorNotice;

/// Which side of the proxy an error came from: decides whether the client hears about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
    Proxy,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    PoolExhausted(String),
    #[error("{0}")]
    TooManyClients(String),
    #[error("{0}")]
    BackendUnavailable(String),
    #[error("{0}")]
    IdleInTransaction(String),
    #[error("{0}")]
    ClientIdle(String),
    #[error("{0}")]
    QueryTimeout(String),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    /// Authentication failed, with a message written for the client's protocol.
    #[error("{0}")]
    AuthRefused(String),
    /// A plaintext client on a door with `client_tls = "require"`.
    #[error("{0}")]
    TlsRequired(String),
    #[error("{0}")]
    Protocol(String),
    #[error("database \"{0}\" does not exist in poolguard's configuration")]
    UnknownDatabase(String),
    #[error("{0}")]
    ShuttingDown(String),
    #[error("{0}")]
    FeatureNotSupported(String),
    /// A reload found the configuration invalid; the running one stays in force.
    #[error("{0}")]
    ConfigRejected(String),
    #[error("{}", .0.message)]
    Server(ErrorNotice),
    /// A MySQL client's handshake was malformed or asked for something not offered (pre-auth).
    #[error("{0}")]
    Handshake(String),
    /// A packet larger than the configured `max_allowed_packet`.
    #[error("{0}")]
    PacketTooLarge(String),
    /// A client would hold more prepared statements than poolguard keeps for one client.
    #[error("{0}")]
    StatementLimit(String),
    /// An ERR packet a MySQL server sent, passed on with its own code.
    #[error("{message}")]
    MysqlServer {
        code: u16,
        sqlstate: String,
        message: String,
    },
    #[error("{side:?} connection failed: {source}")]
    Io { side: Side, source: std::io::Error },
    /// poolguard itself failed (a panic contained to one client's task).
    #[error("{0}")]
    Internal(String),
    /// The client's server connection broke under it: during a command (`during_command`, what
    /// MySQL drivers call 2013 "Lost connection ... during query") or between commands (2006
    /// "server has gone away"), the codes drivers already handle.
    #[error("{message}")]
    ServerLost {
        during_command: bool,
        message: String,
    },
}

impl ProxyError {
    /// The SQLSTATE a PostgreSQL client receives for this error.
    pub fn sqlstate(&self) -> &str {
        match self {
            ProxyError::PoolExhausted(_) => "53300",
            ProxyError::TooManyClients(_) => "53400",
            ProxyError::BackendUnavailable(_) => "57P03",
            ProxyError::IdleInTransaction(_) => "25P03",
            ProxyError::ClientIdle(_) => "57P05",
            ProxyError::QueryTimeout(_) => "57014",
            ProxyError::AuthFailed(_) | ProxyError::AuthRefused(_) => "28P01",
            ProxyError::Protocol(_) => "08P01",
            // What PostgreSQL sends when pg_hba.conf has only hostssl lines for the client.
            ProxyError::TlsRequired(_) => "28000",
            ProxyError::UnknownDatabase(_) => "3D000",
            ProxyError::ShuttingDown(_) => "57P01",
            ProxyError::FeatureNotSupported(_) => "0A000",
            ProxyError::ConfigRejected(_) => "F0000",
            ProxyError::Server(n) => &n.code,
            ProxyError::Handshake(_) | ProxyError::PacketTooLarge(_) => "08P01",
            ProxyError::StatementLimit(_) => "54000", // program_limit_exceeded
            ProxyError::MysqlServer { sqlstate, .. } => sqlstate,
            ProxyError::Io { .. } => "08006",
            ProxyError::Internal(_) => "XX000",
            ProxyError::ServerLost { .. } => "08006",
        }
    }

    /// The error code a MySQL client receives for this error. `mariadb` says whether the backend
    /// is MariaDB, which numbers the statement timeout 1969 where MySQL uses 3024.
    pub fn mysql_code(&self, mariadb: bool) -> u16 {
        match self {
            ProxyError::PoolExhausted(_) => my::ER_CON_COUNT_ERROR, // 1040
            ProxyError::TooManyClients(_) => my::ER_TOO_MANY_USER_CONNECTIONS, // 1203
            ProxyError::BackendUnavailable(_) => CR_CONN_HOST_ERROR, // 2003
            ProxyError::IdleInTransaction(_) => my::ER_LOCK_WAIT_TIMEOUT, // 1205
            ProxyError::ClientIdle(_) => my::ER_CLIENT_INTERACTION_TIMEOUT, // 4031
            ProxyError::QueryTimeout(_) if mariadb => my::ER_STATEMENT_TIMEOUT, // 1969
            ProxyError::QueryTimeout(_) => my::ER_QUERY_TIMEOUT,    // 3024
            ProxyError::AuthFailed(_) | ProxyError::AuthRefused(_) => my::ER_ACCESS_DENIED_ERROR, // 1045
            ProxyError::Protocol(_) => my::ER_UNKNOWN_COM_ERROR, // 1047
            ProxyError::UnknownDatabase(_) => my::ER_BAD_DB_ERROR, // 1049
            ProxyError::ShuttingDown(_) => my::ER_SERVER_SHUTDOWN, // 1053
            ProxyError::FeatureNotSupported(_) => ER_NOT_ALLOWED_COMMAND, // 1148
            ProxyError::Server(_) | ProxyError::ConfigRejected(_) | ProxyError::Internal(_) => {
                ER_UNKNOWN_ERROR // 1105
            }
            ProxyError::Handshake(_) => my::ER_HANDSHAKE_ERROR, // 1043
            ProxyError::TlsRequired(_) => ER_SECURE_TRANSPORT_REQUIRED, // 3159
            ProxyError::PacketTooLarge(_) => my::ER_NET_PACKET_TOO_LARGE, // 1153
            ProxyError::StatementLimit(_) => ER_MAX_PREPARED_STMT_COUNT_REACHED, // 1461
            ProxyError::MysqlServer { code, .. } => *code,
            ProxyError::Io { .. } => CR_SERVER_LOST, // 2013
            ProxyError::ServerLost {
                during_command: true,
                ..
            } => CR_SERVER_LOST, // 2013
            ProxyError::ServerLost { .. } => CR_SERVER_GONE_ERROR, // 2006
        }
    }

    /// The SQLSTATE that goes with [`ProxyError::mysql_code`] in an ERR packet.
    pub fn mysql_sqlstate(&self, mariadb: bool) -> &str {
        match self {
            ProxyError::MysqlServer { sqlstate, .. } => sqlstate,
            ProxyError::FeatureNotSupported(_) | ProxyError::StatementLimit(_) => "42000",
            // MariaDB's 1969 ER_STATEMENT_TIMEOUT is 70100; MySQL's 3024 is HY000.
            ProxyError::QueryTimeout(_) if mariadb => "70100",
            ProxyError::QueryTimeout(_) => "HY000",
            ProxyError::BackendUnavailable(_)
            | ProxyError::Io { .. }
            | ProxyError::ServerLost { .. } => "08S01",
            other => my::default_sqlstate(other.mysql_code(mariadb)),
        }
    }

    pub fn client_io(source: std::io::Error) -> Self {
        ProxyError::Io {
            side: Side::Client,
            source,
        }
    }

    pub fn server_io(source: std::io::Error) -> Self {
        ProxyError::Io {
            side: Side::Server,
            source,
        }
    }
}

/// What a client hears when its pool no longer takes transactions.
pub const CLOSED_POOL: &str = "poolguard is shutting down, or a reload removed this database or user: no new transactions are accepted; reconnect (to another poolguard, or after the change)";

/// 1148 "The used command is not allowed with this MySQL version" (LOAD DATA LOCAL refused).
pub const ER_NOT_ALLOWED_COMMAND: u16 = 1148;
/// 1461 "Can't create more than max_prepared_stmt_count statements".
pub const ER_MAX_PREPARED_STMT_COUNT_REACHED: u16 = 1461;
/// 3159 "Connections using insecure transport are prohibited while
/// --require_secure_transport=ON" (MySQL and MariaDB; MariaDB sends it after the password check,
/// poolguard before it).
pub const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// 1105 "Unknown error".
pub const ER_UNKNOWN_ERROR: u16 = 1105;
/// 2003 "Can't connect to MySQL server": client-side code, sent by poolguard when the backend
/// cannot be reached or dropped the connection.
pub const CR_CONN_HOST_ERROR: u16 = 2003;
/// 2013 "Lost connection to MySQL server during query" (never actually sent: the socket is gone).
pub const CR_SERVER_LOST: u16 = 2013;
/// The client library's "server has gone away" (what drivers see between commands).
pub const CR_SERVER_GONE_ERROR: u16 = 2006;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_own_mysql_code() {
        let all = [
            ProxyError::PoolExhausted(String::new()),
            ProxyError::TooManyClients(String::new()),
            ProxyError::BackendUnavailable(String::new()),
            ProxyError::IdleInTransaction(String::new()),
            ProxyError::ClientIdle(String::new()),
            ProxyError::QueryTimeout(String::new()),
            ProxyError::AuthFailed(String::new()),
            ProxyError::TlsRequired(String::new()),
            ProxyError::Protocol(String::new()),
            ProxyError::UnknownDatabase(String::new()),
            ProxyError::ShuttingDown(String::new()),
            ProxyError::FeatureNotSupported(String::new()),
            ProxyError::Handshake(String::new()),
            ProxyError::PacketTooLarge(String::new()),
            ProxyError::StatementLimit(String::new()),
        ];
        let codes: std::collections::HashSet<u16> =
            all.iter().map(|e| e.mysql_code(true)).collect();
        assert_eq!(codes.len(), all.len());
        assert_eq!(
            ProxyError::QueryTimeout(String::new()).mysql_code(true),
            1969
        );
        assert_eq!(
            ProxyError::QueryTimeout(String::new()).mysql_code(false),
            3024
        );
        assert_eq!(
            ProxyError::PoolExhausted(String::new()).mysql_sqlstate(true),
            "08004"
        );
        assert_eq!(
            ProxyError::AuthFailed(String::new()).mysql_sqlstate(true),
            "28000"
        );
    }
}
