//! The side-by-side comparison of an incident's two runs: the figures that matter (failed
//! requests, healthy success rate and p99, peak server connections, time to detect the leak,
//! time to recover), a paragraph per run in plain words, and the replay HTML/JSON report.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::replay::{Comparison, IDLE_IN_TX_TIMEOUT};
use crate::report::{escape, page, run_section, write_files};
use crate::stats::RunReport;
use crate::SimError;

/// One run's headline figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Figures {
    pub failed_requests: u64,
    pub healthy_ok: u64,
    pub healthy_failed: u64,
    pub healthy_success_pct: f64,
    pub healthy_p99_ms: f64,
    pub peak_server_connections: u64,
    pub max_connections: u64,
    pub leak_detected_s: Option<f64>,
    /// `None`: still failing at the end of the run.
    pub recovery_s: Option<f64>,
}

impl Figures {
    pub fn of(r: &RunReport) -> Figures {
        let (ok, failed) = r.counts("healthy");
        Figures {
            failed_requests: r.errors,
            healthy_ok: ok,
            healthy_failed: failed,
            healthy_success_pct: if ok + failed == 0 {
                0.0
            } else {
                100.0 * ok as f64 / (ok + failed) as f64
            },
            healthy_p99_ms: r
                .groups
                .iter()
                .find(|g| g.name == "healthy")
                .map_or(0.0, |g| g.latency.p99),
            peak_server_connections: r.peak_server_connections.unwrap_or(0),
            max_connections: r.max_connections.unwrap_or(0),
            leak_detected_s: r.leak_detected_s,
            recovery_s: r.recovery_s("healthy"),
        }
    }

    fn detect(&self) -> String {
        self.leak_detected_s
            .map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"))
    }

    fn recover(&self) -> String {
        match self.recovery_s {
            Some(s) if s == 0.0 && self.healthy_failed == 0 => "no outage".to_owned(),
            Some(s) => format!("{s:.0} s"),
            None => "not recovered".to_owned(),
        }
    }
}

/// The side-by-side table, as printed.
pub fn side_by_side(c: &Comparison) -> String {
    let (d, g) = (Figures::of(&c.direct), Figures::of(&c.guarded));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== {} replay ({}; poolguard: {})",
        c.incident.name(),
        c.server,
        c.settings
    );
    let _ = writeln!(s, "{:<34} {:>16} {:>20}", "", "direct", "through poolguard");
    let mut row = |k: &str, a: String, b: String| {
        let _ = writeln!(s, "{k:<34} {a:>16} {b:>20}");
    };
    row(
        "failed requests",
        d.failed_requests.to_string(),
        g.failed_requests.to_string(),
    );
    row(
        "healthy requests ok / failed",
        format!("{} / {}", d.healthy_ok, d.healthy_failed),
        format!("{} / {}", g.healthy_ok, g.healthy_failed),
    );
    row(
        "healthy success rate",
        format!("{:.1}%", d.healthy_success_pct),
        format!("{:.1}%", g.healthy_success_pct),
    );
    row(
        "healthy p99 (successful)",
        format!("{:.1} ms", d.healthy_p99_ms),
        format!("{:.1} ms", g.healthy_p99_ms),
    );
    row(
        "peak server connections",
        format!("{}/{}", d.peak_server_connections, d.max_connections),
        format!("{}/{}", g.peak_server_connections, g.max_connections),
    );
    row("time to detect the leak", d.detect(), g.detect());
    row("time to recover", d.recover(), g.recover());
    s
}

/// What happened in a run, in plain words.
pub fn explain(c: &Comparison, guarded: bool) -> String {
    let r = if guarded { &c.guarded } else { &c.direct };
    let f = Figures::of(r);
    let leakers: u32 = r
        .groups
        .iter()
        .filter(|g| g.role.starts_with("leak"))
        .map(|g| g.workers)
        .sum();
    let codes = r
        .error_codes
        .iter()
        .map(|(k, n)| match r.error_messages.get(k) {
            Some(m) if !m.is_empty() => format!("{n} x {k} (\"{m}\")"),
            _ => format!("{n} x {k}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    let spike = r.groups.iter().find(|g| g.name.starts_with("spike"));
    let (sok, serr) = spike.map_or((0, 0), |g| (g.ok, g.errors));
    if !guarded {
        let mut s = format!(
            "{leakers} leaking clients took connections straight on the {server} and never gave them back. \
             Nothing on the server ends an idle session or an idle transaction by default, so the leak was {det}. \
             The server peaked at {} of its {} connections; from then on new connections were refused",
            f.peak_server_connections,
            f.max_connections,
            server = c.incident.server(),
            det = if f.leak_detected_s.is_some() { "eventually cut" } else { "never detected" },
        );
        if codes.is_empty() {
            s += ", although no request happened to fail.";
        } else {
            let _ = write!(s, " ({codes}).");
        }
        let _ = write!(
            s,
            " Only {:.1}% of the healthy requests succeeded ({} failed), and the spike's writers got {sok} through and {serr} refused. ",
            f.healthy_success_pct, f.healthy_failed
        );
        s += match f.recovery_s {
            None => "It had not recovered when the run ended: as in the incident, only finding and restarting the leaking service would have ended the outage.",
            Some(_) => "The failures stopped before the end of the run.",
        };
        s
    } else {
        let mut s = format!(
            "The same clients connected to poolguard instead. In transaction mode a client holds a server connection only while a transaction is open, \
             so the idle leakers cost the server nothing; the leakers stuck inside a transaction held pooled connections until \
             idle_in_transaction_timeout ({IDLE_IN_TX_TIMEOUT}) rolled their transactions back and disconnected them ({}). \
             The server never saw more than {} connections (of {}: poolguard's budget is 15), ",
            f.leak_detected_s.map_or_else(|| "not observed in this run".to_owned(), |t| format!("first reclaim seen by the server {t:.1} s after the leak began")),
            f.peak_server_connections,
            f.max_connections,
        );
        let _ = write!(
            s,
            "and during the spike requests waited briefly for a pooled connection instead of being refused: the spike's writers got {sok} through, {serr} failed. \
             The healthy clients kept {:.1}% success with a p99 of {:.1} ms",
            f.healthy_success_pct, f.healthy_p99_ms
        );
        if codes.is_empty() {
            s += "; no request failed.";
        } else {
            let _ = write!(s, "; failures: {codes}.");
        }
        s
    }
}

/// Writes `NAME.json` and `NAME.html` (all comparisons on one page) into `dir`.
pub fn write_report(
    dir: &Path,
    name: &str,
    comparisons: &[Comparison],
) -> Result<PathBuf, SimError> {
    let mut body = String::new();
    for c in comparisons {
        let _ = write!(
            body,
            "<h2>{} replay</h2>\n<p>{}</p>\n<p>{}; poolguard: {}.</p>\n<pre>{}</pre>\n<div class=\"runs\">\
             <div class=\"run\"><h3 class=\"bad\">Direct</h3><p>{}</p>{}</div>\
             <div class=\"run\"><h3 class=\"good\">Through poolguard</h3><p>{}</p>{}</div></div>\n",
            c.incident.name(),
            escape(&c.story),
            escape(&c.server),
            escape(&c.settings),
            escape(&side_by_side(c)),
            escape(&explain(c, false)),
            run_section(&c.direct),
            escape(&explain(c, true)),
            run_section(&c.guarded),
        );
    }
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        #[serde(flatten)]
        comparison: &'a Comparison,
        direct_figures: Figures,
        guarded_figures: Figures,
        direct_explanation: String,
        guarded_explanation: String,
    }
    let json: Vec<Entry<'_>> = comparisons
        .iter()
        .map(|c| Entry {
            comparison: c,
            direct_figures: Figures::of(&c.direct),
            guarded_figures: Figures::of(&c.guarded),
            direct_explanation: explain(c, false),
            guarded_explanation: explain(c, true),
        })
        .collect();
    write_files(dir, name, &json, &page("poolguard incident replays", &body))
}
