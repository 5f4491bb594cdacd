//! Streaming replication between sandboxes: a hot standby built from a running primary with
//! `pg_basebackup -R`, promotion, and waiting for a standby to catch up.
//!
//! Invariants: a standby is a [`PgSandbox`] like any other (its own temp directory, its own free
//! port on 127.0.0.1, removed on `Drop`) and runs as the same account as its primary. Being a copy
//! of the primary's data, it has the same roles, databases and superuser password. Every sandbox
//! admits replication connections from 127.0.0.1 (its pg_hba has the line and `wal_level` is
//! `replica`), so any running sandbox can serve as a primary.

use std::fs;
use std::time::{Duration, Instant};

use super::{PgSandbox, HOST, SUPERUSER};
use crate::error::{io_err, SandboxError};
use crate::sys;

/// A base backup of a small sandbox takes a second; the bound only catches a wedged primary.
const BASEBACKUP_TIMEOUT: Duration = Duration::from_secs(120);
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);
/// Lines of the primary's `poolguard.conf` that name the primary itself, rewritten for the copy.
const OWN_KEYS: [&str; 2] = ["port", "unix_socket_directories"];

impl PgSandbox {
    /// Builds and starts a hot standby of this (running) server: `pg_basebackup -R -X stream`
    /// into a fresh data dir, then a start on a free port. The standby streams from this server
    /// until [`promote`](Self::promote)d. On error nothing is left behind.
    pub fn standby(&self) -> Result<PgSandbox, SandboxError> {
        let account = self.account.clone();
        let root = sys::sandbox_root("poolguard-pg-standby-", account.as_ref())?;
        let data_dir = root.path().join("data");
        sys::owned_dir(&data_dir, 0o700, account.as_ref())?;
        // From here on `standby` exists, so its Drop cleans up whatever step fails.
        let mut standby = PgSandbox {
            bin_dir: self.bin_dir.clone(),
            account,
            port: 0,
            password: self.password.clone(),
            log_file: data_dir.join("server.log"),
            data_dir,
            root,
            // The base backup copies the primary's settings, TLS included.
            client_sslmode: self.client_sslmode,
        };
        standby.base_backup_from(self)?;
        let body = standby.inherited_conf_body()?;
        standby.first_start(&body)?;
        Ok(standby)
    }

    /// Ends recovery: the standby becomes a primary that accepts writes (`pg_ctl promote -w`,
    /// which returns once promotion is complete).
    pub fn promote(&self) -> Result<(), SandboxError> {
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.args(["promote", "-w", "-s", "-t"])
            .arg(PROMOTE_TIMEOUT.as_secs().to_string())
            .arg("-D")
            .arg(&self.data_dir);
        sys::run_ok(&mut cmd, None, PROMOTE_TIMEOUT + Duration::from_secs(10)).map(drop)
    }

    /// `SELECT pg_is_in_recovery()`: true on a standby, false on a primary.
    pub fn is_in_recovery(&self) -> Result<bool, SandboxError> {
        let sql = "SELECT pg_is_in_recovery()";
        match self.psql("postgres", sql)?.as_str() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => Err(SandboxError::UnexpectedOutput {
                command: format!("psql -c \"{sql}\""),
                output: other.to_owned(),
            }),
        }
    }

    /// Waits until `standby` has replayed everything this server had written when called.
    pub fn wait_replayed_by(
        &self,
        standby: &PgSandbox,
        timeout: Duration,
    ) -> Result<(), SandboxError> {
        // The insert position, not the write position: sandboxes run with synchronous_commit
        // off, so a commit may sit in WAL buffers (the WAL writer flushes it within 200 ms).
        let lsn = self.psql("postgres", "SELECT pg_current_wal_insert_lsn()")?;
        let sql = format!(
            "SELECT coalesce(pg_last_wal_replay_lsn() >= {}::pg_lsn, false)",
            super::quote_literal(&lsn)
        );
        let deadline = Instant::now() + timeout;
        loop {
            if standby.psql("postgres", &sql)? == "t" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::Timeout {
                    command: format!(
                        "waiting for the standby on port {} to replay up to {lsn}",
                        standby.port
                    ),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Copies the primary's data dir over a replication connection; `-R` writes
    /// `standby.signal` and `primary_conninfo` (with the password from the environment).
    fn base_backup_from(&self, primary: &PgSandbox) -> Result<(), SandboxError> {
        let port = primary.port.to_string();
        // Run as the server account so that the copied files belong to it.
        let mut cmd = self.server_cmd("pg_basebackup");
        cmd.args(["-h", HOST, "-p", &port, "-U", SUPERUSER, "-w", "-D"])
            .arg(&self.data_dir)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"])
            .env("PGPASSWORD", &self.password)
            .env("PGSSLMODE", "disable")
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "poolguard-sandbox-standby");
        sys::run_ok(&mut cmd, None, BASEBACKUP_TIMEOUT)?;
        // The copy carries the primary's log and socket lock files: start the standby clean.
        sys::write_owned(&self.log_file, "", 0o600, self.account.as_ref())?;
        let entries = fs::read_dir(&self.data_dir)
            .map_err(io_err(format!("listing {}", self.data_dir.display())))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// The copied `poolguard.conf` without the lines that name the primary's port and socket
    /// directory (`first_start` writes this server's own).
    fn inherited_conf_body(&self) -> Result<String, SandboxError> {
        let path = self.data_dir.join("poolguard.conf");
        let text =
            fs::read_to_string(&path).map_err(io_err(format!("reading {}", path.display())))?;
        Ok(strip_own_keys(&text))
    }
}

fn strip_own_keys(conf: &str) -> String {
    conf.lines()
        .filter(|line| {
            let key = line.split('=').next().unwrap_or_default().trim();
            !OWN_KEYS.contains(&key)
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_are_stripped_and_the_rest_kept() {
        let conf = "port = 5555\nunix_socket_directories = '/x'\n# c\nmax_connections = '20'\n";
        assert_eq!(strip_own_keys(conf), "# c\nmax_connections = '20'\n");
    }
}
