//! A throwaway PostgreSQL server: `initdb` into a fresh temp dir, `pg_ctl start` on a free port of
//! 127.0.0.1, roles and databases created over TCP as the superuser, everything removed on `Drop`.
//!
//! Invariants: the superuser is `postgres` with a generated password and password authentication
//! works over TCP; the data dir, the unix socket and the log (`server.log`) live in one directory
//! that nobody else uses; the postmaster's pid file is the single source of truth for "running".
//! Every sandbox admits replication connections over TCP, so it can be the primary of a hot
//! standby built by [`PgSandbox::standby`] (`replica`).

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{io_err, SandboxError};
use crate::sys::{self, Account};

mod replica;

const SERVER: &str = "PostgreSQL";
const HOST: &str = "127.0.0.1";
const SUPERUSER: &str = "postgres";
/// Overrides the directory holding initdb, pg_ctl, psql, ...
const BIN_ENV: &str = "POOLGUARD_PG_BIN";
const BIN_ROOT: &str = "/usr/lib/postgresql";
const AUTH_METHODS: [&str; 4] = ["scram-sha-256", "md5", "password", "trust"];
/// Start attempts; only a lost race for the port is retried.
const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TAIL_LINES: usize = 40;

/// Configuration of a [`PgSandbox`]; see [`PgSandbox::builder`].
#[derive(Debug, Clone)]
pub struct PgBuilder {
    max_connections: u32,
    superuser_reserved_connections: u32,
    users: Vec<(String, String)>,
    databases: Vec<(String, String)>,
    settings: Vec<(String, String)>,
    auth_method: String,
    /// pg_hba.conf lines placed before the sandbox's own.
    hba_lines: Vec<String>,
    /// Files written into the data dir: (name, contents).
    files: Vec<(String, Vec<u8>)>,
}

impl Default for PgBuilder {
    fn default() -> Self {
        Self {
            max_connections: 100,
            superuser_reserved_connections: 3,
            users: Vec::new(),
            databases: Vec::new(),
            settings: Vec::new(),
            auth_method: "scram-sha-256".to_owned(),
            hba_lines: Vec::new(),
            files: Vec::new(),
        }
    }
}

impl PgBuilder {
    /// `max_connections` (default 100).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// `superuser_reserved_connections` (default 3).
    pub fn superuser_reserved_connections(mut self, n: u32) -> Self {
        self.superuser_reserved_connections = n;
        self
    }

    /// A login role with a password. Stored as SCRAM, or as MD5 when `auth_method("md5")`, so
    /// that the md5 exchange is really what happens on the wire.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// A database owned by `owner` (a role from [`user`](Self::user) or `postgres`); created after
    /// the roles.
    pub fn database(mut self, name: &str, owner: &str) -> Self {
        self.databases.push((name.to_owned(), owner.to_owned()));
        self
    }

    /// An extra `postgresql.conf` line, `key = 'value'` (the value is quoted for you). Applied
    /// after the sandbox's own settings, so it wins.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A pg_hba.conf line placed before the sandbox's own (`local`, `host` for 127.0.0.1 and
    /// replication), so it is matched first: e.g. `hostnossl all all 0.0.0.0/0 reject` makes
    /// the server refuse every TCP connection without TLS.
    pub fn hba_line(mut self, line: &str) -> Self {
        self.hba_lines.push(line.to_owned());
        self
    }

    /// A file written into the data directory before the server starts, owned by the server's
    /// account with mode 0600 (what PostgreSQL demands of `ssl_key_file`). A relative path in a
    /// setting is relative to the data directory, so `setting("ssl_cert_file", name)` finds it.
    pub fn file(mut self, name: &str, contents: &[u8]) -> Self {
        self.files.push((name.to_owned(), contents.to_vec()));
        self
    }

    /// The pg_hba method for TCP and socket connections: `scram-sha-256` (default), `md5`,
    /// `password` or `trust`.
    pub fn auth_method(mut self, m: &str) -> Self {
        m.clone_into(&mut self.auth_method);
        self
    }

    /// Creates, starts and populates the server. On error nothing is left behind.
    pub fn start(self) -> Result<PgSandbox, SandboxError> {
        self.validate()?;
        let bin_dir = find_bin_dir()?;
        let account = sys::server_account(SERVER, SUPERUSER)?;
        let root = sys::sandbox_root("poolguard-pg-", account.as_ref())?;
        let data_dir = root.path().join("data");
        sys::owned_dir(&data_dir, 0o700, account.as_ref())?;
        // From here on `sandbox` exists, so its Drop cleans up whatever step fails.
        let mut sandbox = PgSandbox {
            bin_dir,
            account,
            port: 0,
            password: sys::random_password()?,
            log_file: data_dir.join("server.log"),
            data_dir,
            root,
            client_sslmode: if self.settings.iter().any(|(k, v)| k == "ssl" && v == "on") {
                "prefer"
            } else {
                "disable"
            },
        };
        sandbox.initdb()?;
        for (name, contents) in &self.files {
            sys::write_owned(
                &sandbox.data_dir.join(name),
                contents,
                0o600,
                sandbox.account.as_ref(),
            )?;
        }
        sandbox.write_hba(&self.auth_method, &self.hba_lines)?;
        sandbox.first_start(&self.conf_body())?;
        sandbox.create_roles_and_databases(&self)?;
        Ok(sandbox)
    }

    fn validate(&self) -> Result<(), SandboxError> {
        if !AUTH_METHODS.contains(&self.auth_method.as_str()) {
            return Err(SandboxError::InvalidInput {
                what: "auth method",
                value: self.auth_method.clone(),
                reason: "expected scram-sha-256, md5, password or trust",
            });
        }
        for (name, password) in &self.users {
            sys::check_name("role name", name)?;
            sys::check_name("password", password)?;
        }
        for line in &self.hba_lines {
            if line.contains(['\0', '\n', '\r']) {
                return Err(SandboxError::InvalidInput {
                    what: "pg_hba line",
                    value: line.clone(),
                    reason: "must be one line",
                });
            }
        }
        for (name, _) in &self.files {
            if name.is_empty() || name.contains(['/', '\0']) || name.starts_with('.') {
                return Err(SandboxError::InvalidInput {
                    what: "data file name",
                    value: name.clone(),
                    reason: "expected a plain file name",
                });
            }
        }
        for (name, owner) in &self.databases {
            sys::check_name("database name", name)?;
            sys::check_name("database owner", owner)?;
        }
        for (key, value) in &self.settings {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(SandboxError::InvalidInput {
                    what: "setting name",
                    value: key.clone(),
                    reason: "expected letters, digits, '_' or '.'",
                });
            }
            if value.contains(['\0', '\n', '\r']) {
                return Err(SandboxError::InvalidInput {
                    what: "setting value",
                    value: value.clone(),
                    reason: "must not contain NUL or line breaks",
                });
            }
        }
        Ok(())
    }

    /// `poolguard.conf` minus the `port` line, which changes if a start attempt loses its port.
    fn conf_body(&self) -> String {
        let mut conf = String::from("# Written by poolguard-sandbox; speed over durability.\n");
        let mut line = |key: &str, value: &str| {
            let _ = writeln!(conf, "{key} = {}", quote_literal(value));
        };
        line("listen_addresses", HOST);
        line("max_connections", &self.max_connections.to_string());
        line(
            "superuser_reserved_connections",
            &self.superuser_reserved_connections.to_string(),
        );
        line("fsync", "off");
        line("synchronous_commit", "off");
        line("full_page_writes", "off");
        line("shared_buffers", "32MB");
        line("logging_collector", "off");
        // Any sandbox may serve as a primary for `standby()` (PostgreSQL's default, made explicit).
        line("wal_level", "replica");
        // The hba method alone does not decide the exchange: a SCRAM-stored password makes the
        // server answer `md5` with SCRAM. Store MD5 hashes when md5 is what a test asks for.
        line(
            "password_encryption",
            if self.auth_method == "md5" {
                "md5"
            } else {
                "scram-sha-256"
            },
        );
        for (key, value) in &self.settings {
            line(key, value);
        }
        conf
    }
}

/// A running throwaway PostgreSQL server. Dropping it stops the server and deletes its files.
#[derive(Debug)]
pub struct PgSandbox {
    bin_dir: PathBuf,
    account: Option<Account>,
    port: u16,
    password: String,
    data_dir: PathBuf,
    log_file: PathBuf,
    /// `PGSSLMODE` of the sandbox's own clients: `prefer` when the server has `ssl = on` (its
    /// pg_hba may refuse plain TCP), else `disable`.
    client_sslmode: &'static str,
    // Last: removed only after `Drop::drop` has stopped the server.
    root: TempDir,
}

impl PgSandbox {
    pub fn builder() -> PgBuilder {
        PgBuilder::default()
    }

    /// Always `"127.0.0.1"`: the server listens nowhere else.
    pub fn host(&self) -> &str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `("postgres", generated password)`.
    pub fn superuser(&self) -> (&str, &str) {
        (SUPERUSER, &self.password)
    }

    /// `postgres://user:password@127.0.0.1:port/db`, components percent-encoded.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@{HOST}:{}/{}",
            sys::percent_encode(user),
            sys::percent_encode(password),
            self.port,
            sys::percent_encode(db)
        )
    }

    /// Runs `sql` with psql as the superuser over TCP (`-X -q -At -v ON_ERROR_STOP=1`, script on
    /// stdin, so several statements run one after the other) and returns stdout, trimmed.
    /// psql is killed after 60 s.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, SandboxError> {
        self.psql_as(SUPERUSER, &self.password, db, sql)
    }

    /// Like [`psql`](Self::psql), as any role with its password (a wrong one fails).
    pub fn psql_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, SandboxError> {
        let port = self.port.to_string();
        let mut cmd = self.client_cmd("psql");
        cmd.args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            HOST,
            "-p",
            &port,
        ])
        .args(["-U", user, "-d", db, "-f", "-"])
        .env("PGPASSWORD", password);
        sys::run_ok(&mut cmd, Some(sql), CLIENT_TIMEOUT)
    }

    /// Client backends connected right now, not counting the psql that asks.
    pub fn connection_count(&self) -> Result<u64, SandboxError> {
        let sql = "SELECT count(*) FROM pg_stat_activity \
                   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";
        let out = self.psql("postgres", sql)?;
        out.parse().map_err(|_| SandboxError::UnexpectedOutput {
            command: format!("psql -c \"{sql}\""),
            output: out,
        })
    }

    /// The server's Unix socket (`unix_socket_directories` is the data directory).
    pub fn socket_path(&self) -> PathBuf {
        self.data_dir.join(format!(".s.PGSQL.{}", self.port))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server log (`pg_ctl -l`), inside the data dir.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// Whether the postmaster is alive.
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    /// Clean shutdown (`pg_ctl stop -m fast`). Does nothing if the server is not running.
    pub fn stop(&mut self) -> Result<(), SandboxError> {
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.args(["stop", "-m", "fast", "-w", "-s", "-t"])
            .arg(STOP_TIMEOUT.as_secs().to_string())
            .arg("-D")
            .arg(&self.data_dir);
        sys::run_ok(&mut cmd, None, STOP_TIMEOUT + Duration::from_secs(10)).map(drop)
    }

    /// Starts the same data dir again on the same port, after [`stop`](Self::stop) or
    /// [`kill`](Self::kill) (crash recovery runs then). Does nothing if already running.
    pub fn start_again(&mut self) -> Result<(), SandboxError> {
        if self.postmaster_pid().is_some() {
            return Ok(());
        }
        self.pg_ctl_start()
    }

    /// SIGKILL, like a crash: no shutdown checkpoint, clients see their connections drop.
    pub fn kill(&mut self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        // Backends run in sessions of their own and would only notice the postmaster's death a
        // moment later, still attached to its shared memory (which blocks `start_again`). Kill
        // them in the same instant, as a crash of the machine would. The postmaster is stopped
        // first so it cannot fork a backend we would miss (once dead, its children are orphans
        // we could no longer find by parent).
        if let Ok(pid) = i32::try_from(pid) {
            sys::send_signal(pid, libc::SIGSTOP);
        }
        let mut victims = sys::children_of(pid);
        victims.push(pid);
        for &victim in &victims {
            if let Ok(victim) = i32::try_from(victim) {
                sys::send_signal(victim, libc::SIGKILL);
            }
        }
        for victim in victims {
            if !sys::wait_until_gone(victim, Duration::from_secs(10)) {
                tracing::warn!(
                    pid = victim,
                    "PostgreSQL process still alive 10s after SIGKILL"
                );
            }
        }
    }

    fn initdb(&self) -> Result<(), SandboxError> {
        // The password travels in a file, never in argv where `ps` would show it.
        let pwfile = self.root.path().join("superuser.pw");
        sys::write_owned(
            &pwfile,
            format!("{}\n", self.password),
            0o600,
            self.account.as_ref(),
        )?;
        let mut cmd = self.server_cmd("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        let result = sys::run_ok(&mut cmd, None, INITDB_TIMEOUT);
        let _ = fs::remove_file(&pwfile);
        result.map(drop)
    }

    fn write_hba(&self, method: &str, first: &[String]) -> Result<(), SandboxError> {
        let mut hba = format!(
            "# Written by poolguard-sandbox: the server listens on {HOST} and its own socket only.\n"
        );
        for line in first {
            hba.push_str(line);
            hba.push('\n');
        }
        let _ = write!(
            hba,
            "local all all {method}\n\
             host  all all {HOST}/32 {method}\n\
             host  replication all {HOST}/32 {method}\n"
        );
        sys::write_owned(
            &self.data_dir.join("pg_hba.conf"),
            &hba,
            0o600,
            self.account.as_ref(),
        )?;
        // Our settings live in their own file so a retry can rewrite the port without parsing
        // postgresql.conf; `include` comes last so our values win over initdb's.
        let conf = self.data_dir.join("postgresql.conf");
        let mut text =
            fs::read_to_string(&conf).map_err(io_err(format!("reading {}", conf.display())))?;
        text.push_str("\ninclude 'poolguard.conf'\n");
        sys::write_owned(&conf, &text, 0o600, self.account.as_ref())
    }

    fn first_start(&mut self, conf_body: &str) -> Result<(), SandboxError> {
        let socket_dir = quote_literal(&self.data_dir.to_string_lossy());
        let mut attempt = 1;
        loop {
            self.port = sys::free_port()?;
            let conf = format!(
                "port = {}\nunix_socket_directories = {socket_dir}\n{conf_body}",
                self.port
            );
            let path = self.data_dir.join("poolguard.conf");
            sys::write_owned(&path, &conf, 0o600, self.account.as_ref())?;
            let log_offset = sys::file_len(&self.log_file);
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e)
                    if attempt < START_ATTEMPTS
                        && port_taken(&sys::read_from(&self.log_file, log_offset)) =>
                {
                    tracing::debug!(port = self.port, attempt, error = %e, "port taken meanwhile, retrying");
                    // A failed start may have left a postmaster behind; never leak one.
                    self.kill();
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn pg_ctl_start(&mut self) -> Result<(), SandboxError> {
        self.clear_stale_lock_files();
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.args(["start", "-w", "-s", "-t"])
            .arg(READY_TIMEOUT.as_secs().to_string())
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file);
        if let Err(e) = sys::run_ok(&mut cmd, None, READY_TIMEOUT + Duration::from_secs(10)) {
            return Err(self.start_failed(e.to_string()));
        }
        self.wait_ready()
    }

    /// pg_ctl -w already waited for the postmaster; this confirms that TCP on our port answers.
    fn wait_ready(&self) -> Result<(), SandboxError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let port = self.port.to_string();
        loop {
            let mut cmd = self.client_cmd("pg_isready");
            cmd.args([
                "-h", HOST, "-p", &port, "-U", SUPERUSER, "-d", "postgres", "-t", "2",
            ]);
            if sys::run(&mut cmd, None, Duration::from_secs(10))
                .is_ok_and(|out| out.status.success())
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.start_failed(format!(
                    "{HOST}:{port} not accepting connections after {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_roles_and_databases(&self, conf: &PgBuilder) -> Result<(), SandboxError> {
        let mut sql = String::new();
        for (name, password) in &conf.users {
            let _ = writeln!(
                sql,
                "CREATE ROLE {} LOGIN PASSWORD {};",
                quote_ident(name),
                quote_literal(password)
            );
        }
        for (name, owner) in &conf.databases {
            let _ = writeln!(
                sql,
                "CREATE DATABASE {} OWNER {};",
                quote_ident(name),
                quote_ident(owner)
            );
        }
        if sql.is_empty() {
            return Ok(());
        }
        self.psql("postgres", &sql).map(drop)
    }

    /// The postmaster's pid if its pid file names a live process.
    fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: u32 = text.lines().next()?.trim().parse().ok()?;
        sys::is_alive(pid).then_some(pid)
    }

    /// After a kill, `postmaster.pid` and the socket's lock file stay behind. PostgreSQL removes
    /// them itself when their pid is gone, but the killed postmaster lingers as a zombie until
    /// pid 1 reaps it (seconds, in some containers), and `kill(pid, 0)` succeeds on a zombie. A
    /// lock file naming a dead or zombie process is safe to remove.
    fn clear_stale_lock_files(&self) {
        let lock_files = [
            self.data_dir.join("postmaster.pid"),
            self.data_dir.join(format!(".s.PGSQL.{}.lock", self.port)),
        ];
        for path in lock_files {
            let Ok(text) = fs::read_to_string(&path) else {
                continue;
            };
            if let Some(pid) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<u32>().ok())
            {
                if !sys::is_alive(pid) {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }

    fn start_failed(&self, reason: String) -> SandboxError {
        SandboxError::StartFailed {
            server: SERVER,
            reason,
            log: self.log_file.clone(),
            log_tail: sys::log_tail(&self.log_file, LOG_TAIL_LINES),
        }
    }

    /// A server-side tool, run as the unprivileged account when we are root.
    fn server_cmd(&self, tool: &str) -> Command {
        sys::command(
            &self.bin_dir.join(tool),
            self.root.path(),
            self.account.as_ref(),
        )
    }

    /// A client tool, run as ourselves; it only talks TCP.
    fn client_cmd(&self, tool: &str) -> Command {
        let mut cmd = sys::command(&self.bin_dir.join(tool), self.root.path(), None);
        cmd.env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "poolguard-sandbox")
            .env("PGSSLMODE", self.client_sslmode);
        cmd
    }
}

impl Drop for PgSandbox {
    fn drop(&mut self) {
        if self.postmaster_pid().is_none() {
            return;
        }
        // Immediate: the data is about to be deleted, a shutdown checkpoint would be wasted time.
        let mut cmd = self.server_cmd("pg_ctl");
        cmd.args(["stop", "-m", "immediate", "-w", "-s", "-t", "10", "-D"])
            .arg(&self.data_dir);
        if let Err(e) = sys::run_ok(&mut cmd, None, Duration::from_secs(20)) {
            tracing::warn!(error = %e, "pg_ctl stop failed while dropping the sandbox; killing the server");
        }
        // Covers a failed stop and a server stuck in shutdown alike.
        self.kill();
    }
}

/// The log of a start attempt says the port was taken between our probe and the server's bind.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("could not create any TCP/IP sockets")
}

/// The bin dir from `POOLGUARD_PG_BIN`, else the highest version under /usr/lib/postgresql.
pub(crate) fn find_bin_dir() -> Result<PathBuf, SandboxError> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
        return Err(SandboxError::BinaryNotFound {
            what: "PostgreSQL initdb",
            detail: format!("{BIN_ENV}={} has no initdb", dir.display()),
        });
    }
    let not_found = |detail: String| SandboxError::BinaryNotFound {
        what: "PostgreSQL server binaries",
        detail,
    };
    let entries =
        fs::read_dir(BIN_ROOT).map_err(|e| not_found(format!("{BIN_ROOT}: {e}; set {BIN_ENV}")))?;
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
        .ok_or_else(|| not_found(format!("no {BIN_ROOT}/<version>/bin/initdb; set {BIN_ENV}")))
}

/// `"name"` with embedded quotes doubled.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled; valid both in SQL (standard_conforming_strings is on)
/// and in postgresql.conf.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn rejects_unknown_auth_method_and_bad_setting() {
        let err = PgSandbox::builder()
            .auth_method("ident")
            .start()
            .unwrap_err();
        assert!(
            matches!(
                err,
                SandboxError::InvalidInput {
                    what: "auth method",
                    ..
                }
            ),
            "{err}"
        );
        let err = PgSandbox::builder()
            .setting("a\nb", "1")
            .start()
            .unwrap_err();
        assert!(
            matches!(
                err,
                SandboxError::InvalidInput {
                    what: "setting name",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn md5_method_stores_md5_hashes() {
        let conf = PgSandbox::builder()
            .auth_method("md5")
            .setting("work_mem", "8MB")
            .conf_body();
        assert!(conf.contains("password_encryption = 'md5'"), "{conf}");
        assert!(
            conf.ends_with("work_mem = '8MB'\n"),
            "user settings come last: {conf}"
        );
    }

    #[test]
    fn recognises_a_lost_port_race() {
        let log = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
                   FATAL:  could not create any TCP/IP sockets";
        assert!(port_taken(log));
        assert!(!port_taken(
            "FATAL:  invalid value for parameter \"shared_buffers\""
        ));
    }
}
