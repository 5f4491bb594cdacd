//! Turns the workers' tallies, the timeline and the server samples into a [`RunReport`]:
//! histograms merged per group and over all traffic, errors grouped by code, the server's peak,
//! and when the server first saw a leaked transaction end (leak detection).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::engine::{group_report, second_report, Out};
use crate::monitor::ServerSample;
use crate::plan::{Plan, Role};
use crate::stats::{histogram, Latency, RunReport, Timeline};

#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    plan: &Plan,
    run_id: String,
    elapsed: Duration,
    outs: Vec<Out>,
    timeline: Timeline,
    server: Vec<ServerSample>,
    max_connections: Option<u64>,
    server_rows: Option<u64>,
) -> RunReport {
    let n = plan.groups.len();
    let mut hists: Vec<_> = (0..n).map(|_| histogram(3)).collect();
    let mut tallies = vec![[0u64; 4]; n];
    for o in &outs {
        let (g, h, ok, err, leaked, reclaimed) = o.parts();
        if let Some(m) = hists.get_mut(g) {
            let _ = m.add(h);
        }
        if let Some(t) = tallies.get_mut(g) {
            t[0] += ok;
            t[1] += err;
            t[2] += leaked;
            t[3] += reclaimed;
        }
    }
    let run = plan.duration.min(elapsed);
    let mut groups = Vec::with_capacity(n);
    let mut all = histogram(3);
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut ok, mut errors) = (0, 0);
    for (i, g) in plan.groups.iter().enumerate() {
        let [gok, gerr, leaked, reclaimed] = tallies[i];
        let mut r = group_report(g, gok, gerr, &hists[i], leaked, reclaimed, run);
        r.error_codes = timeline.codes.get(i).cloned().unwrap_or_default();
        if g.role == Role::Traffic {
            let _ = all.add(&hists[i]);
            ok += gok;
            errors += gerr;
            for (c, k) in &r.error_codes {
                *codes.entry(c.clone()).or_default() += k;
            }
        }
        groups.push(r);
    }
    let traffic: Vec<bool> = plan
        .groups
        .iter()
        .map(|g| g.role == Role::Traffic)
        .collect();
    let seconds = (run.as_secs_f64().ceil() as usize).min(timeline.seconds.len());
    let timeline_r = timeline.seconds[..seconds]
        .iter()
        .enumerate()
        .map(|(t, s)| second_report(t as u64, s, &traffic))
        .collect();
    let workload = plan
        .groups
        .iter()
        .find(|g| g.role == Role::Traffic)
        .map_or("none", |g| g.workload.name());
    RunReport {
        title: plan.title.clone(),
        target: crate::driver::redact(&plan.url),
        run_id,
        workload: workload.to_owned(),
        duration_s: run.as_secs_f64(),
        ok,
        errors,
        throughput: ok as f64 / run.as_secs_f64().max(1e-3),
        latency: Latency::of(&all),
        error_codes: codes,
        error_messages: timeline.messages,
        groups,
        timeline: timeline_r,
        peak_server_connections: server.iter().map(|s| s.connections).max(),
        leak_detected_s: leak_detected(plan, &server),
        server,
        max_connections,
        server_rows,
    }
}

/// Seconds from the first in-transaction leaker's start to the first sample where the server's
/// count of long-idle transactions fell below its peak so far (something ended a leaked one).
/// Samples from the leakers' last half second are ignored: that is the run ending, not a reclaim.
fn leak_detected(plan: &Plan, server: &[ServerSample]) -> Option<f64> {
    let leaks: Vec<_> = plan
        .groups
        .iter()
        .filter(|g| g.role == Role::LeakInTx)
        .collect();
    let start = leaks.iter().map(|g| g.start).min()?.as_secs_f64();
    let end = leaks.iter().map(|g| g.end).max()?.as_secs_f64() - 0.5;
    let mut peak = 0;
    for s in server.iter().filter(|s| s.t >= start && s.t < end) {
        if peak > 0 && s.idle_in_tx < peak {
            return Some(s.t - start);
        }
        peak = peak.max(s.idle_in_tx);
    }
    None
}
