//! The proxy's user-facing errors and their PostgreSQL SQLSTATEs.
//!
//! Every refusal poolguard makes on its own behalf is one of these; each has a distinct SQLSTATE
//! (DESIGN.md's taxonomy) and a message that says what limit was hit and what to do. Errors that a
//! real server produced travel as [`ProxyError::Server`] with the server's own code.

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
    #[error("{0}")]
    Protocol(String),
    #[error("database \"{0}\" does not exist in poolguard's configuration")]
    UnknownDatabase(String),
    #[error("{0}")]
    ShuttingDown(String),
    #[error("{0}")]
    FeatureNotSupported(String),
    #[error("{}", .0.message)]
    Server(ErrorNotice),
    #[error("{side:?} connection failed: {source}")]
    Io { side: Side, source: std::io::Error },
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
            ProxyError::AuthFailed(_) => "28P01",
            ProxyError::Protocol(_) => "08P01",
            ProxyError::UnknownDatabase(_) => "3D000",
            ProxyError::ShuttingDown(_) => "57P01",
            ProxyError::FeatureNotSupported(_) => "0A000",
            ProxyError::Server(n) => &n.code,
            ProxyError::Io { .. } => "08006",
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
