//! The one error type of the crate. Every variant names what was attempted (the command line, the
//! file, the server) and carries what a person needs to fix it: exit status, stderr, or the tail
//! of the server log.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a sandbox could not be started, queried or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A server or client binary is missing; the message says where we looked.
    #[error("{what} not found ({detail}); install it or point the override variable at it")]
    BinaryNotFound { what: &'static str, detail: String },

    /// A file-system or process-spawning operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// A command ran and exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    /// A command did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout { command: String, timeout: Duration },

    /// The server did not come up; the log tail usually says why.
    #[error("{server} did not start: {reason}\n--- last lines of {} ---\n{log_tail}", log.display())]
    StartFailed {
        server: &'static str,
        reason: String,
        log: PathBuf,
        log_tail: String,
    },

    /// We are root and found no account to drop privileges to.
    #[error(
        "running as root but no unprivileged account ({tried}) exists in /etc/passwd; \
         {server} refuses to run as root"
    )]
    NoUnprivilegedAccount { server: &'static str, tried: String },

    /// A builder argument cannot be used (bad auth method, name with a NUL byte, ...).
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    /// A command succeeded but printed something we could not interpret.
    #[error("unexpected output from `{command}`: {output:?}")]
    UnexpectedOutput { command: String, output: String },
}

/// Adapter for `map_err`: wraps an `io::Error` with what we were doing.
pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}
