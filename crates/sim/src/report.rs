//! Reports: the summary table printed at the end of a run, the JSON file (the [`RunReport`] as
//! serialised), and a self-contained HTML page with inline SVG charts (throughput, latency,
//! server connections vs `max_connections`). No scripts, no external assets.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::stats::RunReport;
use crate::SimError;

/// The summary table, as printed to stdout.
pub fn summary_text(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== {} ({} workload, {:.1} s, run id {})",
        r.title, r.workload, r.duration_s, r.run_id
    );
    let _ = writeln!(
        s,
        "{:<18} {:>7} {:>9} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "group", "workers", "ok", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    let line = |s: &mut String,
                name: &str,
                workers: String,
                ok: u64,
                err: u64,
                tput: f64,
                l: &crate::stats::Latency| {
        let _ = writeln!(
            s,
            "{:<18} {:>7} {:>9} {:>8} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            name, workers, ok, err, tput, l.p50, l.p95, l.p99, l.max
        );
    };
    for g in &r.groups {
        if g.role == "traffic" || g.role == "slow" {
            line(
                &mut s,
                &g.name,
                g.workers.to_string(),
                g.ok,
                g.errors,
                g.throughput,
                &g.latency,
            );
        } else {
            let _ = writeln!(
                s,
                "{:<18} {:>7} leaked {} connection(s), {} taken back before the end, {} failed attempt(s)",
                g.name, g.workers, g.leaked, g.reclaimed, g.errors
            );
        }
    }
    line(
        &mut s,
        "all traffic",
        "".into(),
        r.ok,
        r.errors,
        r.throughput,
        &r.latency,
    );
    if r.error_codes.is_empty() {
        let _ = writeln!(s, "errors: none");
    } else {
        let _ = writeln!(s, "errors by code:");
        for (code, n) in &r.error_codes {
            let msg = r.error_messages.get(code).map(String::as_str).unwrap_or("");
            let _ = writeln!(s, "  {code:<8} {n:>8}  {}", truncate(msg, 90));
        }
    }
    match (r.peak_server_connections, r.max_connections) {
        (Some(p), Some(m)) => {
            let _ = writeln!(
                s,
                "server connections: peak {p} of max_connections {m} ({} samples)",
                r.server.len()
            );
            let _ = writeln!(s, "  over time (max per 1 s): {}", sparkline(r));
        }
        _ => {
            let _ = writeln!(s, "server connections: not sampled (no --server-url)");
        }
    }
    if let Some(rows) = r.server_rows {
        let _ = writeln!(
            s,
            "rows committed according to the server: {rows} (reported successes: {})",
            r.ok
        );
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        s.chars().take(n).chain("...".chars()).collect()
    }
}

/// Server connections per second (the max of that second's samples), as numbers.
fn sparkline(r: &RunReport) -> String {
    let secs = r.duration_s.ceil() as usize;
    let mut v = vec![None::<u64>; secs.max(1)];
    for s in &r.server {
        if let Some(slot) = v.get_mut(s.t as usize) {
            *slot = Some(slot.unwrap_or(0).max(s.connections));
        }
    }
    v.iter()
        .map(|x| x.map_or_else(|| "-".to_owned(), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes `name.json` and `name.html` into `dir` (created if missing); returns the HTML path.
pub fn write_files(
    dir: &Path,
    name: &str,
    json: &impl serde::Serialize,
    html: &str,
) -> Result<PathBuf, SimError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SimError::Report(format!("{}: {e}", dir.display())))?;
    let j = serde_json::to_string_pretty(json).map_err(|e| SimError::Report(e.to_string()))?;
    let jp = dir.join(format!("{name}.json"));
    std::fs::write(&jp, j).map_err(|e| SimError::Report(format!("{}: {e}", jp.display())))?;
    let hp = dir.join(format!("{name}.html"));
    std::fs::write(&hp, html).map_err(|e| SimError::Report(format!("{}: {e}", hp.display())))?;
    Ok(hp)
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A whole HTML page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}}\n\
         table{{border-collapse:collapse;margin:8px 0}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right;font-size:13px}}\n\
         th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}\n\
         .runs{{display:flex;gap:24px;flex-wrap:wrap}}.run{{flex:1;min-width:520px}}\n\
         .bad{{color:#b00020;font-weight:600}}.good{{color:#1b7f3b;font-weight:600}}\n\
         svg{{background:#fafafa;border:1px solid #ddd;margin:4px 0}}\n\
         </style></head><body>\n<h1>{t}</h1>\n{body}\n</body></html>\n",
        t = escape(title)
    )
}

/// One run's section: its table and its three charts.
pub fn run_section(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<p>Target <code>{}</code>, {} workload, {:.1} s. {} requests succeeded, {} failed; {:.1} req/s; \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.</p>\n<table><tr><th>group</th><th>workers</th>\
         <th>window</th><th>ok</th><th>errors</th><th>req/s</th><th>p99 ms</th></tr>\n",
        escape(&r.target), r.workload, r.duration_s, r.ok, r.errors, r.throughput, r.latency.p50, r.latency.p99, r.latency.max
    );
    for g in &r.groups {
        let (ok, errors) = if g.role.starts_with("leak") {
            (
                format!("held {}, reclaimed {}", g.leaked, g.reclaimed),
                format!("{} refused", g.errors),
            )
        } else {
            let codes: Vec<String> = g
                .error_codes
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            let detail = if codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", codes.join(", "))
            };
            (g.ok.to_string(), format!("{}{detail}", g.errors))
        };
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.0}-{:.0} s</td><td>{ok}</td><td>{}</td><td>{:.1}</td><td>{:.2}</td></tr>",
            escape(&g.name), g.workers, g.start_s, g.end_s, escape(&errors), g.throughput, g.latency.p99
        );
    }
    s.push_str("</table>\n");
    if !r.error_messages.is_empty() {
        s.push_str("<ul>");
        for (c, m) in &r.error_messages {
            let _ = write!(
                s,
                "<li><code>{}</code>: {}</li>",
                escape(c),
                escape(&truncate(m, 160))
            );
        }
        s.push_str("</ul>\n");
    }
    let x = r.duration_s.max(1.0);
    let ok: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .map(|t| (t.t as f64 + 0.5, t.ok as f64))
        .collect();
    let err: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .map(|t| (t.t as f64 + 0.5, t.errors as f64))
        .collect();
    s.push_str(&crate::svg::chart(
        "Throughput (requests per second)",
        x,
        &[("ok", "#1b7f3b", &ok), ("errors", "#b00020", &err)],
        None,
    ));
    let p99: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .filter(|t| t.ok > 0)
        .map(|t| (t.t as f64 + 0.5, t.p99_ms))
        .collect();
    s.push_str(&crate::svg::chart(
        "Latency p99 of successful requests (ms)",
        x,
        &[("p99", "#1f5fbf", &p99)],
        None,
    ));
    let conns: Vec<(f64, f64)> = r
        .server
        .iter()
        .map(|s| (s.t, s.connections as f64))
        .collect();
    let idle: Vec<(f64, f64)> = r
        .server
        .iter()
        .map(|s| (s.t, s.idle_in_tx as f64))
        .collect();
    s.push_str(&crate::svg::chart(
        "Server connections (sampled from the server) vs max_connections",
        x,
        &[
            ("connections", "#1f5fbf", &conns),
            ("idle in transaction > 1 s", "#d08000", &idle),
        ],
        r.max_connections.map(|m| (m as f64, "max_connections")),
    ));
    s
}

/// The HTML report of one `spike` run.
pub fn spike_html(r: &RunReport) -> String {
    page(
        &r.title,
        &format!(
            "<pre>{}</pre>\n{}",
            escape(&summary_text(r)),
            run_section(r)
        ),
    )
}
