//! `poolguard demo`: throwaway PostgreSQL and MariaDB servers (max_connections 20 each), one
//! poolguard in front of both with the recommended settings and its admin listener (dashboard),
//! then both incident replays (bank fee on PostgreSQL, TradeMate on MariaDB), each run direct and
//! through poolguard, side by side, with an HTML + JSON report.
//!
//! Everything runs on 127.0.0.1; the sandboxes are removed on exit. With `--once` it exits after
//! the replays; otherwise poolguard keeps serving until Ctrl-C so the dashboard can be explored.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::lab::{free_or_any, Lab, LabPorts};
use anyhow::Context;
use poolguard_sim::replay::{replay, Incident, DB, PASSWORD, USER};

pub struct DemoOptions {
    pub once: bool,
    /// Length of each replay run, in seconds.
    pub seconds: u32,
    /// poolguard's PostgreSQL front door (a free one is used if taken); MySQL's is 6033 if free.
    pub port: u16,
    /// poolguard's admin listener (dashboard); a free port is used if taken.
    pub admin_port: u16,
    /// Where the replay report goes.
    pub report: PathBuf,
}

pub async fn demo(opts: DemoOptions) -> anyhow::Result<()> {
    println!(
        "== starting a throwaway PostgreSQL and MariaDB (max_connections 20 each) and poolguard"
    );
    let admin_port = match free_or_any(opts.admin_port) {
        0 => any_port()?,
        p => p,
    };
    let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let ports = LabPorts {
        postgres: free_or_any(opts.port),
        mysql: free_or_any(6033),
        admin: Some(admin),
    };
    let mut lab = Lab::start(&[Incident::Bankfee, Incident::Trademate], ports).await?;
    let pg_door = lab
        .proxy
        .postgres_addr
        .context("no PostgreSQL front door")?;
    let my_door = lab.proxy.mysql_addr.context("no MySQL front door")?;
    println!(
        "   PostgreSQL sandbox on 127.0.0.1:{}, MariaDB sandbox on 127.0.0.1:{}",
        lab.pg.as_ref().map_or(0, |p| p.port()),
        lab.maria.as_ref().map_or(0, |m| m.port())
    );
    println!(
        "   poolguard: PostgreSQL door {pg_door}, MySQL door {my_door}, admin http://{admin}/"
    );
    let d = Duration::from_secs(u64::from(opts.seconds.max(6)));
    let mut comparisons = Vec::new();
    for incident in [Incident::Bankfee, Incident::Trademate] {
        let c = replay(&lab.urls(incident)?, incident, d, false).await?;
        crate::sim_cmd::print_comparison(&c);
        comparisons.push(c);
    }
    let report = poolguard_sim::verdict::write_report(&opts.report, "replay", &comparisons)?;
    let report = std::fs::canonicalize(&report).unwrap_or(report);
    println!("== where to look");
    println!("   replay report:  file://{}", report.display());
    println!("   (and {})", report.with_extension("json").display());
    let log = opts.report.join("demo-poolguard.log");
    let log = std::fs::canonicalize(&log).unwrap_or(log);
    println!("   poolguard's log: {}", log.display());
    if tokio::net::TcpStream::connect(admin).await.is_ok() {
        println!("   dashboard:      http://{admin}/   (metrics: http://{admin}/metrics)");
    } else {
        println!("   dashboard:      http://{admin}/   (not served by this build)");
    }
    if opts.once {
        lab.proxy.stop_accepting();
        return Ok(());
    }
    println!();
    println!("poolguard keeps running. Try:");
    println!(
        "   PGPASSWORD={PASSWORD} psql -h 127.0.0.1 -p {} -U {USER} {DB}",
        pg_door.port()
    );
    println!(
        "   mariadb -h 127.0.0.1 -P {} -u {USER} -p{PASSWORD} {DB}",
        my_door.port()
    );
    println!(
        "   poolguard spike postgres://{USER}:{PASSWORD}@{pg_door}/{DB} --spike 10x@10s+10s --leak-in-tx 5"
    );
    println!("Ctrl-C stops it and removes the sandboxes.");
    crate::shutdown_signal().await;
    lab.proxy.stop_accepting();
    Ok(())
}

/// A port free right now on 127.0.0.1.
fn any_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("no free port")?;
    Ok(l.local_addr()?.port())
}
