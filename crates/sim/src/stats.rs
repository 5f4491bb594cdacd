//! Outcome counting: the per-second timeline fed by every worker's samples, the per-group error
//! codes, and the figures of a finished run ([`RunReport`], which is also the JSON report).
//!
//! Latency percentiles for the summary come from the workers' own HDR histograms merged at the
//! end; the timeline keeps one coarser histogram per second for the live p99 and the charts.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::monitor::ServerSample;

/// One finished request (or failed connect), sent by a worker to the aggregator.
pub struct Sample {
    pub group: usize,
    pub at_ms: u64,
    pub micros: u64,
    pub error: Option<String>,
}

/// A histogram in microseconds (1 us .. 1 h, growing past that if needed).
pub fn histogram(sigfig: u8) -> Histogram<u64> {
    // Provably infallible: the bounds are constants with low < high / 2, sigfig is clamped to 1..=5.
    #[allow(clippy::expect_used)]
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, sigfig.clamp(1, 5))
        .expect("constant histogram bounds are valid");
    h.auto(true);
    h
}

/// One second of the run.
pub struct Second {
    pub ok: Vec<u64>,
    pub err: Vec<u64>,
    pub latency: Histogram<u64>,
}

/// The aggregator's state.
pub struct Timeline {
    groups: usize,
    pub seconds: Vec<Second>,
    pub codes: Vec<BTreeMap<String, u64>>,
    /// The first message seen for each error code, for the summary.
    pub messages: BTreeMap<String, String>,
}

impl Timeline {
    pub fn new(groups: usize) -> Timeline {
        Timeline {
            groups,
            seconds: Vec::new(),
            codes: vec![BTreeMap::new(); groups],
            messages: BTreeMap::new(),
        }
    }

    fn second(&mut self, s: usize) -> &mut Second {
        while self.seconds.len() <= s {
            self.seconds.push(Second {
                ok: vec![0; self.groups],
                err: vec![0; self.groups],
                latency: histogram(2),
            });
        }
        &mut self.seconds[s]
    }

    pub fn add(&mut self, s: Sample) {
        let g = s.group.min(self.groups.saturating_sub(1));
        let sec = self.second((s.at_ms / 1000) as usize);
        match s.error {
            None => {
                sec.ok[g] += 1;
                let _ = sec.latency.record(s.micros.max(1));
            }
            Some(e) => {
                sec.err[g] += 1;
                let (code, message) = e.split_once('\u{0}').unwrap_or((&e, ""));
                *self.codes[g].entry(code.to_owned()).or_default() += 1;
                self.messages
                    .entry(code.to_owned())
                    .or_insert_with(|| message.to_owned());
            }
        }
    }
}

/// Latency figures in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// One group's figures.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupReport {
    pub name: String,
    pub role: String,
    pub workers: u32,
    pub start_s: f64,
    pub end_s: f64,
    pub ok: u64,
    pub errors: u64,
    /// Requests per second over the group's window.
    pub throughput: f64,
    pub latency: Latency,
    pub error_codes: BTreeMap<String, u64>,
    /// Leakers: connections actually taken and held.
    pub leaked: u64,
    /// Leakers in a transaction: transactions found rolled back or the connection gone at the end.
    pub reclaimed: u64,
}

/// One second of the timeline, all traffic groups together.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SecondReport {
    pub t: u64,
    pub ok: u64,
    pub errors: u64,
    pub p99_ms: f64,
    /// Per group: successes, then failures.
    pub group_ok: Vec<u64>,
    pub group_errors: Vec<u64>,
}

/// A finished run: the summary, the timeline and the server samples. Serialised as the JSON report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunReport {
    pub title: String,
    pub target: String,
    pub run_id: String,
    pub workload: String,
    pub duration_s: f64,
    pub ok: u64,
    pub errors: u64,
    pub throughput: f64,
    pub latency: Latency,
    pub error_codes: BTreeMap<String, u64>,
    pub error_messages: BTreeMap<String, String>,
    pub groups: Vec<GroupReport>,
    pub timeline: Vec<SecondReport>,
    pub server: Vec<ServerSample>,
    pub max_connections: Option<u64>,
    pub peak_server_connections: Option<u64>,
    /// Rows the run committed according to the server (write and mixed workloads).
    pub server_rows: Option<u64>,
    /// Seconds from the leakers' start to the first leaked transaction the server saw ended.
    pub leak_detected_s: Option<f64>,
}

impl RunReport {
    /// The traffic groups' failures and successes for groups whose name starts with `prefix`.
    pub fn counts(&self, prefix: &str) -> (u64, u64) {
        self.groups
            .iter()
            .filter(|g| g.role == "traffic" && g.name.starts_with(prefix))
            .fold((0, 0), |(o, e), g| (o + g.ok, e + g.errors))
    }

    /// Seconds from the first to the last failed request of groups named `prefix*`:
    /// `Some(0.0)` if none failed, `None` if they were still failing in the run's last seconds.
    pub fn recovery_s(&self, prefix: &str) -> Option<f64> {
        let idx: Vec<usize> = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.role == "traffic" && g.name.starts_with(prefix))
            .map(|(i, _)| i)
            .collect();
        let failing: Vec<u64> = self
            .timeline
            .iter()
            .filter(|s| {
                idx.iter()
                    .any(|&i| s.group_errors.get(i).copied().unwrap_or(0) > 0)
            })
            .map(|s| s.t)
            .collect();
        let (Some(first), Some(last)) = (failing.first(), failing.last()) else {
            return Some(0.0);
        };
        let end = self.duration_s.floor() as u64;
        if last + 2 >= end {
            None
        } else {
            Some((last + 1 - first) as f64)
        }
    }
}
