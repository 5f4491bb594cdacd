//! `poolguard demo`: a throwaway PostgreSQL, poolguard in front of it, a burst of 50 pgbench
//! clients through a pool of 5, and a summary of what the server saw.
//!
//! Everything runs on 127.0.0.1 with a small `max_connections`; the sandbox is removed on exit.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use poolguard_proxy::config::Config;
use poolguard_proxy::Proxy;
use poolguard_sandbox::PgSandbox;

const USER: &str = "app";
const PASSWORD: &str = "app-secret";
const DB: &str = "bank";

pub struct DemoOptions {
    pub once: bool,
    pub clients: u32,
    pub seconds: u32,
    pub port: u16,
}

pub async fn demo(opts: DemoOptions) -> anyhow::Result<()> {
    println!("== starting a throwaway PostgreSQL (max_connections 30)");
    let pg = tokio::task::spawn_blocking(|| {
        PgSandbox::builder()
            .max_connections(30)
            .user(USER, PASSWORD)
            .database(DB, USER)
            .start()
    })
    .await??;
    println!("   PostgreSQL on 127.0.0.1:{}", pg.port());

    let port = if std::net::TcpListener::bind(("127.0.0.1", opts.port)).is_ok() {
        opts.port
    } else {
        0
    };
    let config = Config::parse(&format!(
        r#"
[postgres]
listen = "127.0.0.1:{port}"

[[backends]]
name = "sandbox"
protocol = "postgres"
hosts = ["127.0.0.1:{pg_port}"]
max_connections = 10

[[databases]]
name = "{DB}"
backend = "sandbox"
pool_mode = "transaction"
pool_size = 5
max_overflow = 0

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[limits]
acquire_timeout = "10s"
"#,
        pg_port = pg.port()
    ))?;
    let proxy = Proxy::start(config).await?;
    let proxy_port = proxy
        .postgres_addr
        .map(|a| a.port())
        .context("proxy did not bind")?;
    println!("== poolguard on 127.0.0.1:{proxy_port}: pool_size 5, budget 10, transaction mode");

    println!("== pgbench -i (directly on the server)");
    let init = pgbench(pg.port(), &["-i", "-q", "-s", "1"]).await?;
    ensure!(
        init.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );

    println!(
        "== pgbench -c {} -j 2 -T {} -M extended through poolguard",
        opts.clients, opts.seconds
    );
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (sampling, peak) = (sampling.clone(), peak.clone());
        let (port, su_pw) = (pg.port(), pg.superuser().1.to_owned());
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                if let Some(n) = app_connections(port, &su_pw) {
                    peak.fetch_max(n, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    let run = pgbench(
        proxy_port,
        &[
            "-c",
            &opts.clients.to_string(),
            "-j",
            "2",
            "-T",
            &opts.seconds.to_string(),
            "-M",
            "extended",
            "-n",
        ],
    )
    .await?;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let out = String::from_utf8_lossy(&run.stdout);
    ensure!(
        run.status.success(),
        "pgbench through poolguard failed:\n{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let field = |prefix: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| "?".into())
    };
    println!();
    println!("== summary");
    println!(
        "   clients:                      {} pgbench clients for {:.0?}",
        opts.clients,
        started.elapsed()
    );
    println!(
        "   transactions processed:       {}",
        field("number of transactions actually processed:")
    );
    println!(
        "   failed transactions:          {}",
        field("number of failed transactions:")
    );
    println!(
        "   tps:                          {}",
        field("tps =").split(' ').next().unwrap_or("?")
    );
    println!(
        "   latency average:              {}",
        field("latency average =")
    );
    println!(
        "   peak server connections:      {} (pool_size 5; server max_connections 30)",
        peak.load(Ordering::Relaxed)
    );
    println!(
        "   {} clients shared {} server connections; without poolguard they would need {}.",
        opts.clients,
        peak.load(Ordering::Relaxed),
        opts.clients
    );
    if opts.once {
        return Ok(());
    }
    println!();
    println!("poolguard keeps running. Try:");
    println!("   PGPASSWORD={PASSWORD} psql -h 127.0.0.1 -p {proxy_port} -U {USER} {DB}");
    println!("Ctrl-C stops it and removes the sandbox.");
    tokio::signal::ctrl_c().await?;
    proxy.stop_accepting();
    drop(pg);
    Ok(())
}

async fn pgbench(port: u16, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args(["-h", "127.0.0.1", "-U", USER])
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .arg(DB)
        .env("PGPASSWORD", PASSWORD);
    cmd.output()
        .await
        .context("cannot run pgbench (scripts/setup installs it)")
}

fn app_connections(port: u16, password: &str) -> Option<u64> {
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
        .env("PGPASSWORD", password)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}
