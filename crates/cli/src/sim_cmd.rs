//! `poolguard spike` and `poolguard replay`: thin CLI wrappers over `poolguard-sim`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use poolguard_sim::plan::{parse_duration, Slow, Spike, Workload};
use poolguard_sim::SpikeOptions;

/// Options of `poolguard spike`.
#[derive(Args)]
pub struct SpikeArgs {
    /// postgres://user:password@host:port/db or mysql://user:password@host:port/db (direct or
    /// through poolguard).
    pub url: String,
    /// Built-in workload on a table it creates (poolguard_sim): read, write or mixed.
    #[arg(long, default_value = "mixed")]
    pub workload: String,
    /// Run the statements of this file (separated by `;`) as one request instead.
    #[arg(long)]
    pub sql: Option<PathBuf>,
    /// Base load: this many workers back to back (default 8, or rate/50 with --rate).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Base load: this many requests per second in total (paced workers).
    #[arg(long)]
    pub rate: Option<f64>,
    /// A spike, FACTORx@START+LENGTH, e.g. 10x@30s+20s (repeatable).
    #[arg(long = "spike")]
    pub spikes: Vec<String>,
    /// Workers that take a connection, run SELECT 1 and never give it back.
    #[arg(long, default_value_t = 0)]
    pub leak_idle: u32,
    /// Workers that open a transaction, insert a row, and never finish it.
    #[arg(long, default_value_t = 0)]
    pub leak_in_tx: u32,
    /// Slow queries: N:DURATION, N workers each running a query that sleeps DURATION.
    #[arg(long)]
    pub slow: Option<String>,
    /// How long the run lasts.
    #[arg(long, default_value = "30s")]
    pub duration: String,
    /// Stop after this many requests in total.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open a new connection for every request.
    #[arg(long)]
    pub reconnect: bool,
    /// A request or connect taking longer than this fails (code `timeout`).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// Monitoring connection straight to the server (superuser/root), for its connection counts.
    /// Defaults to URL itself.
    #[arg(long)]
    pub server_url: Option<String>,
    /// Write spike.json and spike.html into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

pub async fn spike(a: SpikeArgs) -> anyhow::Result<()> {
    let workload = match &a.sql {
        Some(p) => Workload::from_sql(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )?,
        None => Workload::parse(&a.workload)?,
    };
    let spikes = a
        .spikes
        .iter()
        .map(|s| s.parse::<Spike>())
        .collect::<Result<Vec<_>, _>>()?;
    let opts = SpikeOptions {
        url: a.url,
        server_url: a.server_url,
        workload,
        concurrency: a.concurrency,
        rate: a.rate,
        spikes,
        leak_idle: a.leak_idle,
        leak_in_tx: a.leak_in_tx,
        slow: a.slow.as_deref().map(str::parse::<Slow>).transpose()?,
        duration: parse_duration(&a.duration)?,
        max_requests: a.requests,
        reconnect: a.reconnect,
        request_timeout: parse_duration(&a.timeout)?,
        progress: !a.quiet,
    };
    anyhow::ensure!(
        opts.duration > Duration::ZERO,
        "--duration must be more than zero"
    );
    poolguard_sim::spike(&opts, a.report.as_deref()).await?;
    Ok(())
}

/// Options of `poolguard replay`.
#[derive(Args)]
pub struct ReplayArgs {
    /// trademate (MariaDB) or bankfee (PostgreSQL).
    pub incident: String,
    /// Length of each of the two runs.
    #[arg(long, default_value = "20s")]
    pub duration: String,
    /// Directory for replay-INCIDENT.json and replay-INCIDENT.html.
    #[arg(long, default_value = "poolguard-reports")]
    pub report: PathBuf,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

pub async fn replay(a: ReplayArgs) -> anyhow::Result<()> {
    use crate::lab::Lab;
    use poolguard_sim::replay::{replay, Incident};
    let incident: Incident = a.incident.parse()?;
    let d = parse_duration(&a.duration)?;
    println!(
        "== starting a sandbox {} and poolguard in front of it",
        incident.server()
    );
    let mut lab = Lab::start(&[incident], Default::default()).await?;
    let c = replay(&lab.urls(incident)?, incident, d, !a.quiet).await?;
    print_comparison(&c);
    let path = poolguard_sim::verdict::write_report(
        &a.report,
        &format!("replay-{}", incident.name()),
        std::slice::from_ref(&c),
    )?;
    println!("report: {}", path.display());
    lab.proxy.stop_accepting();
    Ok(())
}

/// The side-by-side table and the two explanations.
pub fn print_comparison(c: &poolguard_sim::replay::Comparison) {
    use poolguard_sim::verdict::{explain, side_by_side};
    println!();
    print!("{}", side_by_side(c));
    println!();
    println!("direct: {}", explain(c, false));
    println!();
    println!("through poolguard: {}", explain(c, true));
    println!();
}
