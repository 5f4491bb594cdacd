//! A throwaway MariaDB server: `mariadb-install-db` into a fresh temp dir, `mariadbd` as our own
//! child process on a free port of 127.0.0.1, root password and accounts set through its private
//! unix socket, everything removed on `Drop`.
//!
//! Invariants: every server and install command gets `--no-defaults`, so no my.cnf on the machine
//! (including the system server's) is read; socket, pid file and log live in the sandbox's `run`
//! directory; `root` has a generated password and logs in over TCP from 127.0.0.1.

use std::fmt::Write as _;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{io_err, SandboxError};
use crate::sys::{self, Account};

const SERVER: &str = "MariaDB";
const HOST: &str = "127.0.0.1";
const ROOT_USER: &str = "root";
/// A directory searched first for mariadbd, mariadb-install-db and mariadb.
const BIN_ENV: &str = "POOLGUARD_MARIADB_BIN";
const SEARCH_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];
const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TAIL_LINES: usize = 40;

/// Small InnoDB and no durability: these servers live for one test. Shared by install-db and
/// mariadbd so the redo log is created at the size the server expects.
const INNODB_ARGS: [&str; 4] = [
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=8M",
    "--innodb-flush-log-at-trx-commit=2",
    // io_uring/libaio are often unavailable in containers; synchronous I/O always works.
    "--innodb-use-native-aio=0",
];

/// Configuration of a [`MariaDbSandbox`]; see [`MariaDbSandbox::builder`].
#[derive(Debug, Clone)]
pub struct MariaDbBuilder {
    max_connections: u32,
    users: Vec<(String, String)>,
    databases: Vec<(String, String)>,
    settings: Vec<(String, String)>,
}

impl Default for MariaDbBuilder {
    fn default() -> Self {
        Self {
            max_connections: 100,
            users: Vec::new(),
            databases: Vec::new(),
            settings: Vec::new(),
        }
    }
}

impl MariaDbBuilder {
    /// `max_connections` (default 100). MariaDB admits one more for a user with SUPER/CONNECTION
    /// ADMIN (root), which is why builder users get no global privileges.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// An account `name`@`%` and `name`@`127.0.0.1` with `mysql_native_password`, holding ALL
    /// privileges on the databases it owns (see [`database`](Self::database)) and nothing global.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// A database; `owner` (a builder user, or `root`) gets ALL privileges on it.
    pub fn database(mut self, name: &str, owner: &str) -> Self {
        self.databases.push((name.to_owned(), owner.to_owned()));
        self
    }

    /// An extra server option, passed as `--key=value` after the sandbox's own, so it wins.
    pub fn setting(mut self, key: &str, value: &str) -> Self {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Creates, starts and populates the server. On error nothing is left behind.
    pub fn start(self) -> Result<MariaDbSandbox, SandboxError> {
        self.validate()?;
        let bins = Binaries::find()?;
        let account = sys::server_account(SERVER, "mysql")?;
        let root = sys::sandbox_root("poolguard-mariadb-", account.as_ref())?;
        let data_dir = root.path().join("data");
        let run_dir = root.path().join("run");
        sys::owned_dir(&data_dir, 0o700, account.as_ref())?;
        // 0755: the server account creates its socket here and we (maybe root) connect to it.
        sys::owned_dir(&run_dir, 0o755, account.as_ref())?;
        let log_file = run_dir.join("mariadbd.log");
        // Created up front, owned by the server account: mariadbd appends to it via --log-error
        // and we hand the same file to it as stdout/stderr for anything printed before that.
        sys::write_owned(&log_file, "", 0o644, account.as_ref())?;
        let mut extra_args = vec![format!("--max-connections={}", self.max_connections)];
        extra_args.extend(self.settings.iter().map(|(k, v)| format!("--{k}={v}")));
        // From here on `sandbox` exists, so its Drop cleans up whatever step fails.
        let mut sandbox = MariaDbSandbox {
            bins,
            account,
            port: 0,
            password: sys::random_password()?,
            password_set: false,
            data_dir,
            socket: run_dir.join("mariadbd.sock"),
            run_dir,
            log_file,
            extra_args,
            child: None,
            root,
        };
        sandbox.install_db()?;
        sandbox.first_start()?;
        sandbox.create_accounts(&self)?;
        Ok(sandbox)
    }

    fn validate(&self) -> Result<(), SandboxError> {
        for (name, password) in &self.users {
            sys::check_name("user name", name)?;
            sys::check_name("password", password)?;
        }
        for (name, owner) in &self.databases {
            sys::check_name("database name", name)?;
            sys::check_name("database owner", owner)?;
        }
        for (key, value) in &self.settings {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(SandboxError::InvalidInput {
                    what: "setting name",
                    value: key.clone(),
                    reason: "expected letters, digits, '_' or '-'",
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
}

#[derive(Debug)]
struct Binaries {
    install_db: PathBuf,
    server: PathBuf,
    client: PathBuf,
}

impl Binaries {
    fn find() -> Result<Self, SandboxError> {
        let mut dirs: Vec<PathBuf> = std::env::var_os(BIN_ENV)
            .map(PathBuf::from)
            .into_iter()
            .collect();
        dirs.extend(SEARCH_DIRS.iter().map(PathBuf::from));
        let find = |what: &'static str, names: &[&str]| {
            names
                .iter()
                .find_map(|name| sys::find_binary(name, &dirs))
                .ok_or_else(|| SandboxError::BinaryNotFound {
                    what,
                    detail: format!(
                        "looked for {} in {BIN_ENV}, {} and PATH",
                        names.join("/"),
                        SEARCH_DIRS.join(", ")
                    ),
                })
        };
        Ok(Self {
            install_db: find(
                "MariaDB install script",
                &["mariadb-install-db", "mysql_install_db"],
            )?,
            server: find("MariaDB server", &["mariadbd", "mysqld"])?,
            client: find("MariaDB client", &["mariadb", "mysql"])?,
        })
    }
}

/// A running throwaway MariaDB server. Dropping it kills the server and deletes its files.
#[derive(Debug)]
pub struct MariaDbSandbox {
    bins: Binaries,
    account: Option<Account>,
    port: u16,
    password: String,
    /// Until the bootstrap ran, root@localhost has no password.
    password_set: bool,
    data_dir: PathBuf,
    run_dir: PathBuf,
    socket: PathBuf,
    log_file: PathBuf,
    /// `--max-connections` and the builder's settings; they follow the sandbox's own options.
    extra_args: Vec<String>,
    child: Option<Child>,
    // Last: removed only after `Drop::drop` has killed the server.
    root: TempDir,
}

impl MariaDbSandbox {
    pub fn builder() -> MariaDbBuilder {
        MariaDbBuilder::default()
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

    /// `("root", generated password)`; works over TCP from 127.0.0.1.
    pub fn root(&self) -> (&str, &str) {
        (ROOT_USER, &self.password)
    }

    /// `mysql://user:password@127.0.0.1:port/db`, components percent-encoded.
    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "mysql://{}:{}@{HOST}:{}/{}",
            sys::percent_encode(user),
            sys::percent_encode(password),
            self.port,
            sys::percent_encode(db)
        )
    }

    /// Runs `sql` (script on stdin, several statements allowed) with the `mariadb` client as
    /// root over TCP in batch mode without column names (`-N -B`); returns stdout, trimmed.
    /// An empty `db` means no default database. The client is killed after 60 s.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String, SandboxError> {
        self.sql_as(ROOT_USER, &self.password, db, sql)
    }

    /// Like [`sql`](Self::sql), as any account with its password (a wrong one fails).
    pub fn sql_as(
        &self,
        user: &str,
        password: &str,
        db: &str,
        sql: &str,
    ) -> Result<String, SandboxError> {
        let mut cmd = self.client_cmd(password);
        cmd.args(["--protocol=TCP", "-h", HOST])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"));
        if !db.is_empty() {
            cmd.arg(format!("--database={db}"));
        }
        sys::run_ok(&mut cmd, Some(sql), CLIENT_TIMEOUT)
    }

    /// Client connections right now, not counting the one that asks, nor daemon/system threads.
    pub fn connection_count(&self) -> Result<u64, SandboxError> {
        let sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                   WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon' \
                   AND USER NOT IN ('system user', 'event_scheduler')";
        let out = self.sql("", sql)?;
        out.parse().map_err(|_| SandboxError::UnexpectedOutput {
            command: format!("mariadb -e \"{sql}\""),
            output: out,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding mariadbd, which is where it was found.
    pub fn bin_dir(&self) -> &Path {
        self.bins.server.parent().unwrap_or(Path::new("/"))
    }

    /// The server's error log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server's unix socket (root may log in through it with the root password).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether mariadbd is alive (an exited but unreaped child counts as dead).
    pub fn is_running(&self) -> bool {
        self.child.as_ref().is_some_and(|c| sys::is_alive(c.id()))
    }

    /// Clean shutdown (SIGTERM, then wait). Does nothing if the server is not running.
    pub fn stop(&mut self) -> Result<(), SandboxError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        // SIGTERM is mariadbd's normal shutdown and needs no credentials, unlike mariadb-admin.
        if let Ok(pid) = i32::try_from(child.id()) {
            sys::send_signal(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(SandboxError::Timeout {
            command: "mariadbd shutdown (SIGTERM); it was killed".to_owned(),
            timeout: STOP_TIMEOUT,
        })
    }

    /// Starts the same data dir again on the same port, after [`stop`](Self::stop) or
    /// [`kill`](Self::kill) (InnoDB recovery runs then). Does nothing if already running.
    pub fn start_again(&mut self) -> Result<(), SandboxError> {
        if self.is_running() {
            return Ok(());
        }
        self.kill(); // reaps an exited child, if any
        self.spawn_and_wait()
    }

    /// SIGKILL, like a crash: clients see their connections drop.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn install_db(&self) -> Result<(), SandboxError> {
        let mut cmd = sys::command(
            &self.bins.install_db,
            self.root.path(),
            self.account.as_ref(),
        );
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.data_dir.display()))
            .arg(format!("--tmpdir={}", self.run_dir.display()))
            // Passwordless root over the socket until `create_accounts` sets the password: it works
            // whoever we are, unlike unix_socket auth, which only admits the OS user `root`.
            .args([
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ])
            .args(INNODB_ARGS);
        sys::run_ok(&mut cmd, None, INSTALL_TIMEOUT).map(drop)
    }

    fn server_args(&self) -> Vec<String> {
        let mut args = vec![
            // Must come first: the server reads no option file, not even the system server's.
            "--no-defaults".to_owned(),
            format!("--datadir={}", self.data_dir.display()),
            format!("--socket={}", self.socket.display()),
            format!("--pid-file={}", self.run_dir.join("mariadbd.pid").display()),
            format!("--log-error={}", self.log_file.display()),
            format!("--tmpdir={}", self.run_dir.display()),
            format!("--bind-address={HOST}"),
            format!("--port={}", self.port),
            "--skip-name-resolve".to_owned(),
            // Tests provoke failed handshakes on purpose; never let the server block 127.0.0.1.
            "--max-connect-errors=1000000".to_owned(),
            // What Debian's packaged config sets; --no-defaults would otherwise leave latin1.
            "--character-set-server=utf8mb4".to_owned(),
            "--collation-server=utf8mb4_general_ci".to_owned(),
        ];
        args.extend(INNODB_ARGS.iter().map(|s| (*s).to_owned()));
        args.extend(self.extra_args.iter().cloned());
        args
    }

    fn first_start(&mut self) -> Result<(), SandboxError> {
        let mut attempt = 1;
        loop {
            self.port = sys::free_port()?;
            let log_offset = sys::file_len(&self.log_file);
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e)
                    if attempt < START_ATTEMPTS
                        && port_taken(&sys::read_from(&self.log_file, log_offset)) =>
                {
                    tracing::debug!(port = self.port, attempt, error = %e, "port taken meanwhile, retrying");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Spawns mariadbd and waits until it answers on its socket and accepts TCP; on failure the
    /// server is killed and the error carries the log tail.
    fn spawn_and_wait(&mut self) -> Result<(), SandboxError> {
        let open_log = || {
            fs::OpenOptions::new()
                .append(true)
                .open(&self.log_file)
                .map_err(io_err(format!("opening {}", self.log_file.display())))
        };
        let mut cmd = sys::command(&self.bins.server, self.root.path(), self.account.as_ref());
        cmd.args(self.server_args())
            .stdin(Stdio::null())
            .stdout(open_log()?)
            .stderr(open_log()?);
        let child = cmd
            .spawn()
            .map_err(io_err(format!("could not run `{}`", sys::describe(&cmd))))?;
        self.child = Some(child);
        let result = self.wait_ready();
        if result.is_err() {
            self.kill();
        }
        result
    }

    fn wait_ready(&mut self) -> Result<(), SandboxError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(self.start_failed(format!("mariadbd exited with {status}")));
                }
            }
            if self.socket_ping()
                && TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2)).is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.start_failed(format!("not ready after {READY_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `SELECT 1` as root through the unix socket.
    fn socket_ping(&self) -> bool {
        if !self.socket.exists() {
            return false;
        }
        let password = if self.password_set {
            self.password.as_str()
        } else {
            ""
        };
        let mut cmd = self.client_cmd(password);
        cmd.arg("--protocol=SOCKET")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--user={ROOT_USER}"))
            .args(["-e", "SELECT 1"]);
        sys::run(&mut cmd, None, Duration::from_secs(10)).is_ok_and(|out| out.status.success())
    }

    /// Sets the root password and creates the builder's accounts and databases, through the
    /// socket, where root has no password yet.
    fn create_accounts(&mut self, conf: &MariaDbBuilder) -> Result<(), SandboxError> {
        let pw = quote_literal(&self.password);
        let mut sql = format!(
            "-- install-db also makes passwordless root@<hostname>/::1 and maybe anonymous accounts;\n\
             -- none is reachable on 127.0.0.1 but none should exist.\n\
             DELETE FROM mysql.global_priv WHERE User = '' \
               OR (User = 'root' AND Host NOT IN ('localhost', '127.0.0.1'));\n\
             FLUSH PRIVILEGES;\n\
             CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n\
             ALTER USER 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD({pw});\n\
             ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD({pw});\n"
        );
        for (name, password) in &conf.users {
            for host in ["%", HOST] {
                let _ = writeln!(
                    sql,
                    "CREATE USER {}@'{host}' IDENTIFIED VIA mysql_native_password USING PASSWORD({});",
                    quote_literal(name),
                    quote_literal(password)
                );
            }
        }
        for (name, owner) in &conf.databases {
            let _ = writeln!(sql, "CREATE DATABASE {};", quote_ident(name));
            if owner != ROOT_USER {
                // In a db-level grant `_` and `%` are wildcards; escape them to grant exactly this db.
                let exact = quote_ident(
                    &name
                        .replace('\\', "\\\\")
                        .replace('_', "\\_")
                        .replace('%', "\\%"),
                );
                let owner = quote_literal(owner);
                let _ = writeln!(
                    sql,
                    "GRANT ALL PRIVILEGES ON {exact}.* TO {owner}@'%', {owner}@'{HOST}';"
                );
            }
        }
        let mut cmd = self.client_cmd("");
        cmd.arg("--protocol=SOCKET")
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--user={ROOT_USER}"));
        sys::run_ok(&mut cmd, Some(&sql), CLIENT_TIMEOUT)?;
        self.password_set = true;
        Ok(())
    }

    /// The `mariadb` client in batch mode, reading no option files. The password goes in
    /// `MYSQL_PWD` so it appears neither in `ps` nor in our error messages.
    fn client_cmd(&self, password: &str) -> Command {
        let mut cmd = sys::command(&self.bins.client, self.root.path(), None);
        cmd.args(["--no-defaults", "-N", "-B", "--connect-timeout=10"]);
        if !password.is_empty() {
            cmd.env("MYSQL_PWD", password);
        }
        cmd
    }

    fn start_failed(&self, reason: String) -> SandboxError {
        SandboxError::StartFailed {
            server: SERVER,
            reason,
            log: self.log_file.clone(),
            log_tail: sys::log_tail(&self.log_file, LOG_TAIL_LINES),
        }
    }
}

impl Drop for MariaDbSandbox {
    fn drop(&mut self) {
        // Killing is enough: the data is about to be deleted.
        self.kill();
    }
}

/// The log of a start attempt says the port was taken between our probe and the server's bind.
fn port_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("Bind on TCP/IP port")
}

/// `` `name` `` with embedded backticks doubled.
fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `'text'` for MariaDB's default sql_mode, where backslash escapes.
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
        assert_eq!(quote_literal(r"it's a \ test"), r"'it\'s a \\ test'");
    }

    #[test]
    fn rejects_bad_setting_name() {
        let err = MariaDbSandbox::builder()
            .setting("x y", "1")
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
    fn recognises_a_lost_port_race() {
        let log = "[ERROR] Can't start server: Bind on TCP/IP port. Got error: 98: Address already in use";
        assert!(port_taken(log));
        assert!(!port_taken("[ERROR] unknown variable 'x=1'"));
    }
}
