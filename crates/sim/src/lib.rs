//! poolguard's load generator and incident simulator.
//!
//! - [`plan`]: what a run does (traffic groups, spikes, leakers, slow queries);
//! - [`engine`]: runs a plan with real clients (tokio-postgres, mysql_async), one task and one
//!   HDR histogram per worker, a live progress line, and a monitor sampling the server;
//! - [`report`] and [`svg`]: the summary table, JSON, and a self-contained HTML report;
//! - [`replay`]: the TradeMate and bank-fee incidents, run direct and through poolguard.
//!
//! Everything is bounded: a run stops by itself at its duration (or request cap).

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod driver;
pub mod engine;
pub mod monitor;
pub mod plan;
pub mod replay;
pub mod report;
pub mod stats;
mod summary;
pub mod svg;
pub mod verdict;

pub use plan::{Plan, SpikeOptions};
pub use stats::RunReport;

/// What can stop a run before it starts or its report from being written.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Bad options (spike notation, URL, durations).
    #[error("{0}")]
    Usage(String),
    /// The target could not be prepared (connect, create the table) or a sandbox failed.
    #[error("setup failed: {0}")]
    Setup(String),
    /// The report files could not be written.
    #[error("cannot write the report: {0}")]
    Report(String),
}

/// Runs `spike` end to end: the plan, the progress line, the summary, and the report files in
/// `report_dir` (if given). Returns the report and the HTML path.
pub async fn spike(
    opts: &SpikeOptions,
    report_dir: Option<&std::path::Path>,
) -> Result<(RunReport, Option<std::path::PathBuf>), SimError> {
    let plan = opts.plan()?;
    let r = engine::run(&plan).await?;
    print!("{}", report::summary_text(&r));
    let html = match report_dir {
        Some(dir) => {
            let p = report::write_files(dir, "spike", &r, &report::spike_html(&r))?;
            println!("report: {} (and spike.json)", p.display());
            Some(p)
        }
        None => None,
    };
    Ok((r, html))
}
