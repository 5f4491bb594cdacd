//! The `poolguard` binary: `run` the proxy, or `check` a configuration against the servers.

mod demo;
mod import;
mod lab;
mod sandbox_cmd;
mod sim_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use poolguard_proxy::check::read_budgets;
use poolguard_proxy::config::Config;
use poolguard_proxy::workers::Workers;
use poolguard_proxy::{upgrade, Proxy};

/// A database connection guard for PostgreSQL and MySQL/MariaDB: hard caps on server
/// connections, transaction pooling, acquire deadlines with clear errors, leak detection.
#[derive(Parser)]
#[command(name = "poolguard", version, about, long_about = None)]
struct Cli {
    /// Worker threads for `run`, each one event loop serving its share of the clients
    /// (1 = a single event loop, like PgBouncer; 0 = one per two cores).
    #[arg(long, global = true, default_value_t = 0, env = "POOLGUARD_THREADS")]
    threads: usize,
    /// Log lines as text (default) or as one JSON object per line, for a log shipper.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "POOLGUARD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until interrupted (Ctrl-C or SIGTERM, which drain first).
    ///
    /// SIGHUP re-reads the configuration file and applies it without dropping clients (as does
    /// RELOAD on the admin console and `POST /api/reload`); a bad file is refused and logged.
    /// SIGTERM stops accepting clients, refuses new transactions, lets running ones finish for
    /// up to --drain-timeout, then exits.
    ///
    /// Without --config (or POOLGUARD_CONFIG), serves a built-in default only when
    /// POOLGUARD_PASSWORD holds the local superuser's real password (not "postgres"):
    /// PostgreSQL clients on 127.0.0.1:6432, fronting 127.0.0.1:5432, database and user
    /// "postgres", pool_size 10 + max_overflow 5. `poolguard init` writes a configuration.
    Run {
        /// The TOML configuration file (see docs/configuration.md).
        #[arg(long, short, env = "POOLGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// Start even if a backend cannot be reached to verify its connection budget.
        #[arg(long)]
        skip_budget_check: bool,
        /// On SIGTERM or Ctrl-C, how long running transactions may take to finish; after
        /// handing over to a new binary, how long its clients may stay connected.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        drain_timeout: std::time::Duration,
        /// Binary upgrade: take the listening sockets over from the poolguard answering on
        /// `[general] upgrade_socket` (it then drains and exits); start as usual when none
        /// answers there.
        #[arg(long)]
        takeover: bool,
    },
    /// Start throwaway PostgreSQL and MariaDB servers, poolguard in front of them (with its
    /// dashboard), and replay both incidents (bank fee, TradeMate) direct and through poolguard,
    /// side by side, with an HTML report. Keeps running until Ctrl-C unless --once.
    Demo {
        /// Exit after the replays instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Length of each replay run in seconds (four runs in all).
        #[arg(long, default_value_t = 15)]
        seconds: u32,
        /// Port for poolguard's PostgreSQL front door (a free one is used if taken).
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Port for poolguard's admin listener and dashboard (a free one is used if taken).
        #[arg(long, default_value_t = 9930)]
        admin_port: u16,
        /// Directory for the replay report (replay.html, replay.json).
        #[arg(long, default_value = "poolguard-reports")]
        report: PathBuf,
    },
    /// Start a throwaway PostgreSQL or MariaDB on a free loopback port (for experiments and
    /// benchmark scripts); prints KEY=value lines, runs until Ctrl-C/SIGTERM, then removes it.
    Sandbox {
        /// postgres or mariadb.
        #[arg(long, default_value = "postgres")]
        engine: String,
        #[arg(long, default_value_t = 100)]
        max_connections: u32,
        /// A login role with password, name:password (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
        /// A database and its owner, name:owner (repeatable).
        #[arg(long = "database")]
        databases: Vec<String>,
        /// An extra server setting, key=value (repeatable).
        #[arg(long = "setting")]
        settings: Vec<String>,
    },
    /// Load generator against a PostgreSQL or MySQL URL (direct or through poolguard): a
    /// workload, a base load, spikes, leaking clients and slow queries; prints a summary and
    /// writes JSON + HTML reports with --report DIR.
    Spike(sim_cmd::SpikeArgs),
    /// Replay an incident (trademate on MariaDB, bankfee on PostgreSQL) on sandbox servers, direct
    /// and through poolguard, and compare them side by side (report in --report DIR).
    Replay(sim_cmd::ReplayArgs),
    /// Validate a configuration, reach each backend and verify the connection budgets.
    /// Exits non-zero with a message naming the problem.
    Check {
        /// The TOML configuration file.
        #[arg(long, short, env = "POOLGUARD_CONFIG")]
        config: Option<PathBuf>,
        /// Validate the file only, without reaching the servers (a service's pre-start check).
        #[arg(long)]
        skip_servers: bool,
    },
    /// Print a commented configuration to start from (`poolguard init > poolguard.toml`).
    Init,
    /// Translate a PgBouncer configuration: the equivalent poolguard configuration on stdout,
    /// what has no equivalent on stderr (`poolguard import-pgbouncer pgbouncer.ini userlist.txt
    /// > poolguard.toml`).
    ImportPgbouncer {
        /// PgBouncer's pgbouncer.ini.
        ini: PathBuf,
        /// Its auth_file (userlist.txt), for the [[users]].
        userlist: Option<PathBuf>,
    },
}

/// What `poolguard init` prints (also the package's /etc/poolguard/poolguard.toml).
const CONFIG_TEMPLATE: &str = include_str!("../../../deploy/poolguard.toml");

fn load(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => {
            Config::load(p).with_context(|| format!("invalid configuration {}", p.display()))
        }
        // The built-in default fronts the local server's superuser: only with a password the
        // operator chose, never the well-known one.
        None => match std::env::var("POOLGUARD_PASSWORD") {
            Ok(password) if !password.is_empty() && password != "postgres" => {
                Ok(Config::builtin_default(&password))
            }
            _ => anyhow::bail!(
                "no configuration: give --config FILE (or POOLGUARD_CONFIG); `poolguard init > poolguard.toml` writes a commented one to start from. (Without a file poolguard would front the local server's postgres superuser, so it needs that account's real password in POOLGUARD_PASSWORD, and refuses the default \"postgres\".)"
            ),
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The demo's proxy runs in this process: its log goes to a file beside the report, so the
    // demo's own lines are not buried in it (the demo prints where the file is).
    let demo_log = match &cli.command {
        Command::Demo { report, .. } => Some(report.join("demo-poolguard.log")),
        _ => None,
    };
    let demo_file = demo_log.as_ref().and_then(|path| {
        std::fs::create_dir_all(path.parent()?).ok()?;
        std::fs::File::create(path).ok()
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match (demo_file, cli.log_format) {
        (Some(file), _) => logs
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .init(),
        (None, LogFormat::Json) => logs.with_writer(std::io::stderr).json().init(),
        (None, LogFormat::Text) => logs
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    // A panic is contained to the task that raised it (poolguard_proxy::contain); this puts
    // its message and location in the log, as an error event, instead of bare stderr.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        tracing::error!(%location, panic = %message, "panic");
    }));
    // `run` serves clients on one single-threaded loop per worker (see
    // `poolguard_proxy::workers`); the loop `block_on` drives is the first worker. Other
    // commands keep a work-stealing runtime.
    // Default: one worker per two cores. poolguard mostly shares its machine with the
    // database or the application; on the 2-core benchmark machine a second loop cost more
    // CPU per transaction than it gained (bench/PROFILE.md).
    let workers = match cli.threads {
        0 => (std::thread::available_parallelism().map_or(1, usize::from) / 2).max(1),
        n => n,
    };
    let serving = matches!(cli.command, Command::Run { .. });
    let runtime = match cli.threads {
        _ if serving => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("poolguard: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let workers = if serving && workers > 1 {
        match poolguard_proxy::workers::start_threads(workers) {
            Ok(others) => Workers::spread(others),
            Err(e) => {
                eprintln!("poolguard: cannot start the worker threads: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Workers::local()
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run {
                config,
                skip_budget_check,
                drain_timeout,
                takeover,
            } => {
                let options = RunOptions {
                    skip_budget_check,
                    drain_timeout,
                    takeover,
                    workers,
                };
                run(load(&config)?, config, options).await
            }
            Command::Check {
                config,
                skip_servers,
            } => check(load(&config)?, skip_servers).await,
            Command::Init => {
                print!("{CONFIG_TEMPLATE}");
                Ok(())
            }
            Command::ImportPgbouncer { ini, userlist } => {
                let text = std::fs::read_to_string(&ini)
                    .with_context(|| format!("cannot read {}", ini.display()))?;
                let users = match &userlist {
                    Some(p) => Some(
                        std::fs::read_to_string(p)
                            .with_context(|| format!("cannot read {}", p.display()))?,
                    ),
                    None => None,
                };
                let imported = import::import(&text, users.as_deref());
                print!("{}", imported.config);
                for note in &imported.notes {
                    eprintln!("note: {note}");
                }
                Ok(())
            }
            Command::Spike(args) => sim_cmd::spike(args).await,
            Command::Replay(args) => sim_cmd::replay(args).await,
            Command::Sandbox {
                engine,
                max_connections,
                users,
                databases,
                settings,
            } => {
                sandbox_cmd::sandbox(sandbox_cmd::SandboxOptions {
                    engine,
                    max_connections,
                    users,
                    databases,
                    settings,
                })
                .await
            }
            Command::Demo {
                once,
                seconds,
                port,
                admin_port,
                report,
            } => {
                demo::demo(demo::DemoOptions {
                    once,
                    seconds,
                    port,
                    admin_port,
                    report,
                })
                .await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("poolguard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(config: Config, skip_servers: bool) -> anyhow::Result<()> {
    println!(
        "configuration ok: {} backend(s), {} database(s), {} user(s)",
        config.backends.len(),
        config.databases.len(),
        config.users.len()
    );
    for b in &config.backends {
        let pools: Vec<String> = config
            .databases
            .iter()
            .filter(|d| d.backend == b.name)
            .map(|d| format!("{} {}+{}", d.name, d.pool_size, d.max_overflow))
            .collect();
        println!(
            "backend {:?} ({}, {}): budget {} server connections; pools (size+overflow, per user): {}",
            b.name,
            b.protocol,
            b.hosts.join(", "),
            b.max_connections,
            if pools.is_empty() { "none".into() } else { pools.join(", ") }
        );
    }
    if skip_servers {
        println!("servers not contacted (--skip-servers)");
        return Ok(());
    }
    let budgets = read_budgets(&config).await?;
    let mut ok = true;
    for s in &budgets {
        println!("{}", s.explain());
        ok &= s.fits();
    }
    anyhow::ensure!(
        ok,
        "the connection budget does not fit the server (see above)"
    );
    Ok(())
}

async fn verify_budgets(config: &Config, skip_budget_check: bool) -> anyhow::Result<()> {
    match read_budgets(config).await {
        Ok(budgets) => {
            for s in &budgets {
                tracing::info!("{}", s.explain());
                anyhow::ensure!(
                    s.fits(),
                    "refusing to start: the connection budget does not fit the server\n{}",
                    s.explain()
                );
            }
        }
        Err(e) if skip_budget_check => {
            tracing::warn!(error = %e, "budget not verified (--skip-budget-check)")
        }
        Err(e) => {
            return Err(anyhow::anyhow!(e)).context(
                "cannot verify the connection budget; start the server first or pass --skip-budget-check",
            )
        }
    }
    Ok(())
}

struct RunOptions {
    skip_budget_check: bool,
    drain_timeout: std::time::Duration,
    takeover: bool,
    /// Where clients run.
    workers: std::sync::Arc<Workers>,
}

async fn run(config: Config, path: Option<PathBuf>, options: RunOptions) -> anyhow::Result<()> {
    let socket_path = config.upgrade_socket.clone();
    let takeover = match (&socket_path, options.takeover) {
        (Some(p), true) => upgrade::take_over(p).await.context("cannot take over")?,
        (None, true) => {
            anyhow::bail!("--takeover needs [general] upgrade_socket in the configuration")
        }
        _ => None,
    };
    if takeover.is_some() {
        // The check logs in outside the budget, which the running process may be using in
        // full right now: the servers were verified when it started.
        tracing::info!("taking over: the budget check against the servers is skipped");
    } else {
        verify_budgets(&config, options.skip_budget_check).await?;
    }
    let took_over = takeover.is_some();
    let (mut proxy, _follower) = match takeover {
        Some(mut t) => {
            let proxy = Proxy::start_with(config, t.inherited(), options.workers.clone()).await?;
            let follower = t.started(proxy.shared.clone()).await?;
            tracing::info!("took over from the running poolguard; it drains and exits");
            (proxy, Some(follower))
        }
        None => {
            if options.takeover {
                tracing::info!("no poolguard answers on the upgrade socket: starting as usual");
            }
            (
                Proxy::start_with(config, Default::default(), options.workers.clone()).await?,
                None,
            )
        }
    };
    if let Some(path) = path {
        proxy.shared.set_config_path(path);
    }
    let control = match &socket_path {
        Some(p) => Some(upgrade::ControlSocket::bind(p, took_over).await?),
        None => None,
    };
    #[cfg(unix)]
    let reloads = tokio::spawn(reload_on_sighup(proxy.shared.clone()));
    let handover = loop {
        let request = async {
            match &control {
                Some(c) => c.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown_signal() => break None,
            request = request => match request {
                Ok(r) => match proxy.hand_over(r).await {
                    Ok(h) => break Some(h),
                    Err(e) => tracing::warn!(error = %e, "upgrade refused; this process goes on serving"),
                },
                Err(e) => tracing::warn!(error = %e, "upgrade socket"),
            },
        }
    };
    #[cfg(unix)]
    reloads.abort();
    if let Some(h) = handover {
        // The path belongs to the new process now: left in place.
        drop(control);
        tracing::info!(
            clients = proxy.shared.client_count(),
            timeout = ?options.drain_timeout,
            "handed over: serving the clients connected here until they leave"
        );
        let summary = tokio::select! {
            s = h.drain(&proxy.shared, options.drain_timeout) => s,
            _ = shutdown_signal() => proxy.shared.drain(upgrade::LAST_CALL).await,
        };
        proxy.stop_accepting();
        tracing::info!(%summary, "exiting after the upgrade");
        return Ok(());
    }
    tracing::info!(
        clients = proxy.shared.client_count(),
        timeout = ?options.drain_timeout,
        "shutting down: no new clients or transactions, waiting for running transactions"
    );
    proxy.stop_accepting();
    if let Some(c) = control {
        c.remove();
    }
    let summary = proxy.shared.drain(options.drain_timeout).await;
    tracing::info!(%summary, "shut down");
    Ok(())
}

/// SIGHUP: reload the configuration file (errors are logged by `reload` itself).
#[cfg(unix)]
async fn reload_on_sighup(shared: std::sync::Arc<poolguard_proxy::state::Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /api/reload or RELOAD");
        return;
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        let _ = shared.reload();
    }
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    /// `poolguard init` prints a configuration that validates as it stands.
    #[test]
    fn the_init_template_is_a_valid_configuration() {
        let config = poolguard_proxy::config::Config::parse(super::CONFIG_TEMPLATE)
            .expect("the template validates");
        assert_eq!(config.databases.len(), 1);
        assert!(config.admin_listen.is_some());
    }
}
