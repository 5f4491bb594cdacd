//! Throwaway PostgreSQL and MariaDB servers built from the system's binaries, for integration tests,
//! the demo and benchmarks.
//!
//! Each sandbox owns a fresh temporary directory (data directory, socket, log), listens on a free
//! port on 127.0.0.1 only, and is torn down by `Drop`, which also runs while a failing test unwinds.
//! The API is synchronous (`std::process`), so it works from tests, the CLI and scripts alike.
//!
//! Invariants:
//! - a sandbox never touches the system servers or their default ports (5432, 3306);
//! - several sandboxes can run at once (own directory, own port, own socket);
//! - when running as root, the servers run as an unprivileged account (`postgres`/`mysql`, else
//!   `nobody`), because both servers refuse to run as root; clients run as the caller over TCP.

#![deny(rust_2018_idioms)]
// `unsafe` is needed for exactly two libc calls (geteuid, kill) in `sys.rs`, which allows it there.
#![deny(unsafe_code)]

mod error;
mod mariadb;
mod postgres;
mod sys;

pub use error::SandboxError;
pub use mariadb::{MariaDbBuilder, MariaDbSandbox};
pub use postgres::{PgBuilder, PgSandbox};

/// The PostgreSQL server binaries a sandbox would use: `POOLGUARD_PG_BIN`, else the highest
/// version under /usr/lib/postgresql. For tests whose PostgreSQL another program starts.
pub fn postgres_bin_dir() -> Result<std::path::PathBuf, SandboxError> {
    postgres::find_bin_dir()
}

/// `(uid, gid)` of the account PostgreSQL runs as when we are root (`postgres`, else `nobody`),
/// `None` when we are not root. For tests whose PostgreSQL another program starts (Patroni): run
/// that program as this account and give it its directories.
pub fn postgres_account() -> Result<Option<(u32, u32)>, SandboxError> {
    Ok(sys::server_account("PostgreSQL", "postgres")?.map(|a| (a.uid, a.gid)))
}
