//! End-to-end harness: a throwaway PostgreSQL (from `poolguard-sandbox`), the real `poolguard`
//! binary in front of it with a generated config, and helpers to drive real clients (psql,
//! pgbench, psycopg, node-postgres, tokio-postgres) against either.
//!
//! Everything listens on 127.0.0.1 on free ports and is torn down on drop, panics included.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use poolguard_sandbox::PgSandbox;

pub mod admin;
pub mod etcd;
pub mod fds;
pub mod mysql;
pub mod patroni;
pub mod pgc;
pub mod rawpg;
pub mod recorder;
pub mod tls;

pub const USER: &str = "app";
pub const PASSWORD: &str = "app-secret";
pub const DB: &str = "bank";

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `poolguard` binary cargo built for this workspace.
pub fn poolguard_bin() -> PathBuf {
    if let Ok(p) = std::env::var("POOLGUARD_BIN") {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target"));
    let bin = target.join("debug").join("poolguard");
    if !bin.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "poolguard"])
            .current_dir(repo_root())
            .status()
            .expect("cargo build poolguard");
        assert!(st.success(), "building poolguard failed");
    }
    bin
}

/// A port on 127.0.0.1 for poolguard to listen on, free a moment ago.
///
/// Taken from just below the kernel's range for outgoing connections' local ports
/// (`ip_local_port_range`, 32768-60999 by default): a port the kernel hands out with `bind(0)` is
/// from that range, and a client's outgoing connection elsewhere in the suite can take it
/// between this call and poolguard's bind ("address already in use", seen in CI). Below the
/// range only another listener can. Each call in this process tries the next port, starting
/// from a place that depends on the process id, so concurrent test processes rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    const SPAN: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low > SPAN + 1_024 {
        let low = ephemeral_low - SPAN;
        let start = std::process::id().wrapping_mul(7_919);
        for _ in 0..SPAN {
            let n = CALLS.fetch_add(1, Ordering::Relaxed);
            let port = low + start.wrapping_add(n) % SPAN;
            if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A sandbox PostgreSQL with role `app` / `app-secret` owning database `bank`.
pub fn sandbox(max_connections: u32) -> PgSandbox {
    PgSandbox::builder()
        .max_connections(max_connections)
        .user(USER, PASSWORD)
        .database(DB, USER)
        .start()
        .expect("start sandbox PostgreSQL")
}

/// A pool's settings for [`config_for`].
#[derive(Clone, Debug)]
pub struct PoolSpec {
    pub mode: &'static str,
    pub pool_size: usize,
    pub max_overflow: usize,
    pub budget: usize,
    /// Extra lines for the `[[databases]]` entry (overrides such as `acquire_timeout = "1s"`).
    pub extra: String,
    /// Extra top-level `[limits]` lines.
    pub limits: String,
    /// Extra `[postgres]` lines.
    pub front: String,
}

impl PoolSpec {
    /// The default pool, with the admin API on `admin` (metrics to wait on).
    pub fn with_admin(admin: u16) -> PoolSpec {
        PoolSpec {
            limits: format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"),
            ..PoolSpec::default()
        }
    }

    /// A pool of one server connection in `mode`: the next client gets the server the last one
    /// left, so whatever the last one left on it would show.
    pub fn one_server(mode: &'static str) -> PoolSpec {
        PoolSpec {
            mode,
            pool_size: 1,
            ..PoolSpec::default()
        }
    }
}

impl Default for PoolSpec {
    fn default() -> Self {
        PoolSpec {
            mode: "transaction",
            pool_size: 5,
            max_overflow: 0,
            budget: 10,
            extra: String::new(),
            limits: String::new(),
            front: String::new(),
        }
    }
}

pub fn config_for(pg: &PgSandbox, listen_port: u16, spec: &PoolSpec) -> String {
    format!(
        r#"
[postgres]
listen = "127.0.0.1:{listen_port}"
{front}

[[backends]]
name = "pg"
protocol = "postgres"
hosts = ["127.0.0.1:{pg_port}"]
max_connections = {budget}

[[databases]]
name = "{DB}"
backend = "pg"
pool_mode = "{mode}"
pool_size = {size}
max_overflow = {overflow}
{extra}

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[limits]
{limits}
"#,
        front = spec.front,
        pg_port = pg.port(),
        budget = spec.budget,
        mode = spec.mode,
        size = spec.pool_size,
        overflow = spec.max_overflow,
        extra = spec.extra,
        limits = spec.limits,
    )
}

/// The real poolguard binary, running with a config file, killed on drop.
pub struct Proxy {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Proxy {
    pub fn start(pg: &PgSandbox, spec: &PoolSpec) -> Proxy {
        let port = free_port();
        Proxy::start_with(&config_for(pg, port, spec), port)
    }

    /// Starts poolguard with this config text; `port` is its PostgreSQL listen port.
    pub fn start_with(config: &str, port: u16) -> Proxy {
        Proxy::start_wrapped(config, port, &[], &[])
    }

    /// [`Proxy::start_with`], with extra environment variables for the process (such as
    /// `POOLGUARD_FAULTS`, which the test build's fault switch reads).
    pub fn start_with_env(config: &str, port: u16, env: &[(&str, &str)]) -> Proxy {
        Proxy::start_wrapped(config, port, &[], env)
    }

    /// Like [`Proxy::start_with_env`], through a program that execs poolguard in its own place
    /// (e.g. `["prlimit", "--nofile=1024:1024", "--"]`), so [`Proxy::pid`] is poolguard's.
    pub fn start_wrapped(config: &str, port: u16, wrapper: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut p = Proxy::spawn(config, port, wrapper, env, &[]);
        p.wait_ready();
        p
    }

    /// `poolguard run --takeover` with this config: returns once the new process has taken
    /// the listening sockets over from the one running on `[general] upgrade_socket` (its log
    /// says so), or started on its own when none answered.
    pub fn start_takeover(config: &str, port: u16) -> Proxy {
        let mut p = Proxy::spawn(config, port, &[], &[], &["--takeover"]);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("poolguard exited early ({st}):\n{}", p.log());
            }
            let log = p.log();
            if log.contains("took over from the running poolguard")
                || log.contains("starting as usual")
            {
                return p;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("poolguard --takeover did not take over:\n{}", p.log());
    }

    fn spawn(
        config: &str,
        port: u16,
        wrapper: &[&str],
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("poolguard.toml");
        std::fs::write(&cfg, config).expect("write config");
        let log = dir.path().join("poolguard.log");
        let logfile = std::fs::File::create(&log).expect("log file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(poolguard_bin());
                c
            }
            None => Command::new(poolguard_bin()),
        };
        let child = command
            .args(["run", "--config"])
            .arg(&cfg)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("POOLGUARD_TEST_LOG")
                    .unwrap_or_else(|_| "info,poolguard_proxy=debug".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("spawn poolguard");
        Proxy {
            child,
            port,
            _dir: dir,
            log,
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("poolguard exited early ({st}):\n{}", self.log());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("poolguard did not listen on {}:\n{}", self.port, self.log());
    }

    /// poolguard's process id (for /proc/<pid>/fd and /proc/<pid>/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The configuration file poolguard was started with (rewrite it, then reload).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("poolguard.toml")
    }

    /// Sends a signal ("HUP", "TERM") to the poolguard process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} poolguard failed");
    }

    /// Waits up to `limit` for poolguard to exit; its status, or `None` if still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn url(&self) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}", self.port)
    }

    /// A tokio-postgres connection string through the proxy.
    pub fn conn_str(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={DB}",
            self.port
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- poolguard log ----\n{}", self.log());
        }
    }
}

/// Runs a command with PGPASSWORD set; returns its output.
pub fn run_pg(cmd: &mut Command) -> Output {
    cmd.env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("run client program")
}

/// A psql command against a port as `app` on `bank`: -X -q -At -v ON_ERROR_STOP=1.
pub fn psql_command(port: u16) -> Command {
    psql_command_as(port, USER, DB)
}

/// [`psql_command`] as another role on another database.
pub fn psql_command_as(port: u16, user: &str, db: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-X",
        "-q",
        "-At",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-U",
        user,
        "-d",
        db,
    ])
    .arg("-p")
    .arg(port.to_string());
    cmd
}

/// A real psql client reading its script from a pipe kept open: it holds its session (and
/// any transaction the script opened) until [`HeldPsql::finish`].
pub struct HeldPsql {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl HeldPsql {
    /// psql as `app` on `port` with this `application_name` and extra environment (such as
    /// `PGSSLMODE`), running `script`.
    pub fn start(port: u16, application: &str, env: &[(&str, &str)], script: &str) -> HeldPsql {
        let mut child = psql_command(port)
            .arg("-f")
            .arg("-")
            .env("PGPASSWORD", PASSWORD)
            .env("PGAPPNAME", application)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        let mut stdin = child.stdin.take();
        if let Some(s) = stdin.as_mut() {
            s.write_all(script.as_bytes()).expect("write psql script");
        }
        HeldPsql { child, stdin }
    }

    /// Sends the rest of the script, closes psql's input and waits for it.
    pub fn finish(mut self, rest: &str) -> Output {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(rest.as_bytes());
        }
        self.child.wait_with_output().expect("psql output")
    }
}

/// psql running one command string.
pub fn psql(port: u16, sql: &str) -> Output {
    run_pg(psql_command(port).arg("-c").arg(sql))
}

/// psql running a script file (backslash commands such as \copy need one).
pub fn psql_file(port: u16, script: &Path) -> Output {
    run_pg(psql_command(port).arg("-f").arg(script))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// `pgbench -i -s 1` on the sandbox's `bank` database, straight to the server.
pub fn pgbench_init(pg: &PgSandbox) {
    let init = run_pg(
        Command::new("pgbench")
            .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-U", USER, "-p"])
            .arg(pg.port().to_string())
            .arg(DB),
    );
    assert!(init.status.success(), "pgbench -i: {}", stderr(&init));
}

/// Connections the server sees from role `app` (poolguard's or direct clients').
pub fn app_connections(pg: &PgSandbox) -> u64 {
    pg.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
    )
    .ok()
    .and_then(|s| s.parse().ok())
    .unwrap_or(0)
}

/// Samples [`app_connections`] in the background; `peak()` is the highest seen.
pub struct PeakSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl PeakSampler {
    pub fn start(pg: &PgSandbox) -> PeakSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (s, p, n) = (stop.clone(), peak.clone(), samples.clone());
        let port = pg.port();
        let password = pg.superuser().1.to_string();
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let out = Command::new("psql")
                    .args([
                        "-X",
                        "-At",
                        "-h",
                        "127.0.0.1",
                        "-U",
                        "postgres",
                        "-d",
                        "postgres",
                    ])
                    .arg("-p")
                    .arg(port.to_string())
                    .arg("-c")
                    .arg("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")
                    .env("PGPASSWORD", &password)
                    .output();
                if let Ok(o) = out {
                    if let Ok(v) = String::from_utf8_lossy(&o.stdout).trim().parse::<u64>() {
                        p.fetch_max(v, Ordering::Relaxed);
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        PeakSampler {
            stop,
            peak,
            samples,
            handle: Some(handle),
        }
    }

    /// Stops sampling; returns (peak, number of samples).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.peak.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

/// Writes raw bytes to the proxy and returns what it answered before closing (bounded wait).
pub fn raw_exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The SQLSTATE in the first ErrorResponse of a raw server answer.
pub fn sqlstate_of(answer: &[u8]) -> Option<String> {
    let start = answer.iter().position(|&b| b == b'E')?;
    let body = answer.get(start + 5..)?;
    let mut fields = body.split(|&b| b == 0);
    fields.find_map(|f| {
        f.strip_prefix(b"C")
            .map(|c| String::from_utf8_lossy(c).into_owned())
    })
}

/// A path in tests/clients.
pub fn client_script(rel: &str) -> PathBuf {
    repo_root().join("tests").join("clients").join(rel)
}

/// Runs a program to completion, killing it if it outlives `limit`.
pub fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client program");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for client program") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// The number after `label` on its own line of pgbench's report.
pub fn report_number(report: &str, label: &str) -> Option<u64> {
    report.lines().find_map(|l| {
        l.trim()
            .strip_prefix(label)?
            .split_whitespace()
            .next()?
            .split('/')
            .next()?
            .parse()
            .ok()
    })
}
