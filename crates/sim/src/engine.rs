//! Executes a [`Plan`]: one task per worker, each with its own connection and its own HDR
//! histogram; an aggregator that builds the per-second timeline and prints the progress line; a
//! monitor sampling the server. Bounded by the plan's duration (and request cap): every worker
//! stops at its group's end, and stragglers are aborted after one request timeout more.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio::time::sleep_until;

use crate::driver::{redact, within, Conn, OpError};
use crate::monitor::{Monitor, Samples};
use crate::plan::{Group, Plan, Role};
use crate::stats::{histogram, GroupReport, Latency, RunReport, Sample, SecondReport, Timeline};
use crate::SimError;

/// What the workers share.
struct Ctx {
    url: String,
    run_id: String,
    started: Instant,
    tx: mpsc::UnboundedSender<Sample>,
    /// Requests left under `--requests`; negative once exhausted. `i64::MAX` = unbounded.
    remaining: AtomicI64,
    timeout: Duration,
}

impl Ctx {
    fn at(&self, d: Duration) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.started + d)
    }

    fn send(&self, group: usize, t0: Instant, r: &Result<(), OpError>) {
        let _ = self.tx.send(Sample {
            group,
            at_ms: t0.duration_since(self.started).as_millis() as u64,
            micros: t0.elapsed().as_micros() as u64,
            error: r
                .as_ref()
                .err()
                .map(|e| format!("{}\u{0}{}", e.code, e.message)),
        });
    }

    fn take_one(&self) -> bool {
        self.remaining.fetch_sub(1, Ordering::Relaxed) > 0
    }
}

/// One worker's tally, merged per group at the end.
pub(crate) struct Out {
    group: usize,
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    leaked: u64,
    reclaimed: u64,
}

impl Out {
    fn new(group: usize) -> Out {
        Out {
            group,
            hist: histogram(3),
            ok: 0,
            errors: 0,
            leaked: 0,
            reclaimed: 0,
        }
    }

    fn count(&mut self, t0: Instant, r: &Result<(), OpError>) {
        match r {
            Ok(()) => {
                self.ok += 1;
                let _ = self.hist.record((t0.elapsed().as_micros() as u64).max(1));
            }
            Err(_) => self.errors += 1,
        }
    }
}

/// Pause after a failure, so a refused client does not spin.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

async fn traffic(ctx: Arc<Ctx>, gi: usize, g: Group, worker: u32) -> Out {
    let mut out = Out::new(gi);
    let end = ctx.at(g.end);
    sleep_until(ctx.at(g.start)).await;
    let mut conn: Option<Conn> = None;
    let mut next = tokio::time::Instant::now();
    while tokio::time::Instant::now() < end {
        if let Some(pace) = g.pace {
            if next >= end {
                break;
            }
            sleep_until(next).await;
            // Missed slots are skipped, not bunched up: the rate is a ceiling.
            next = (next + pace).max(tokio::time::Instant::now());
        }
        if !ctx.take_one() {
            break;
        }
        let t0 = Instant::now();
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match Conn::connect(&ctx.url, ctx.timeout).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    let r = Err(e);
                    out.count(t0, &r);
                    ctx.send(gi, t0, &r);
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let t1 = if g.reconnect { t0 } else { Instant::now() };
        let r = match &g.role {
            Role::Slow(d) => within(*d + ctx.timeout, c.sleep(*d)).await,
            _ => within(ctx.timeout, c.request(&g.workload, &ctx.run_id, worker)).await,
        };
        out.count(t1, &r);
        ctx.send(gi, t1, &r);
        if r.is_err() || g.reconnect {
            if let Some(c) = conn.take() {
                c.close().await;
            }
        }
        if let Err(e) = r {
            tracing::debug!(group = %g.name, worker, code = %e.code, "request failed");
            tokio::time::sleep(ERROR_BACKOFF).await;
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
    out
}

/// Takes a connection (retrying until it gets one), leaks it, holds it to the group's end, then
/// checks whether something (a pooler, a timeout) took it away meanwhile.
async fn leaker(ctx: Arc<Ctx>, gi: usize, g: Group, worker: u32) -> Out {
    let mut out = Out::new(gi);
    let end = ctx.at(g.end);
    sleep_until(ctx.at(g.start)).await;
    let mut held = None;
    while held.is_none() && tokio::time::Instant::now() < end {
        let t0 = Instant::now();
        let r = async {
            let mut c = Conn::connect(&ctx.url, ctx.timeout).await?;
            let leak = match g.role {
                Role::LeakInTx => c.leak_in_tx(&ctx.run_id, worker).await,
                _ => c.exec("SELECT 1").await,
            };
            leak.map(|()| c)
        };
        match within(ctx.timeout, r).await {
            Ok(c) => {
                held = Some(c);
                out.leaked = 1;
                tracing::debug!(group = %g.name, worker, "connection leaked");
            }
            Err(e) => {
                out.count(t0, &Err(e.clone()));
                ctx.send(gi, t0, &Err(e));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    sleep_until(end).await;
    if let Some(mut c) = held {
        if within(Duration::from_secs(2), c.exec("SELECT 1"))
            .await
            .is_err()
        {
            out.reclaimed = 1;
        }
        c.close().await;
    }
    out
}

/// Creates the workload's table (through the same URL the workers use).
pub async fn prepare(url: &str) -> Result<(), SimError> {
    let mut c = Conn::connect(url, Duration::from_secs(10))
        .await
        .map_err(|e| SimError::Setup(format!("cannot connect to {}: {e}", redact(url))))?;
    c.setup()
        .await
        .map_err(|e| SimError::Setup(format!("cannot create the table: {e}")))?;
    c.close().await;
    Ok(())
}

fn new_run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("run{}", ms % 100_000_000_000)
}

/// Runs the plan to the end and returns its figures.
pub async fn run(plan: &Plan) -> Result<RunReport, SimError> {
    let writes = plan.groups.iter().any(|g| g.role == Role::Traffic);
    if writes
        && !plan
            .groups
            .iter()
            .all(|g| matches!(g.workload, crate::plan::Workload::Sql(_)))
    {
        prepare(&plan.url).await?;
    }
    let monitor = match &plan.server_url {
        Some(u) => match Monitor::connect(u).await {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(url = %redact(u), error = %e, "no server sampling");
                None
            }
        },
        None => None,
    };
    let max_connections = monitor.as_ref().map(|m| m.max_connections);
    let run_id = new_run_id();
    let started = Instant::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let ctx = Arc::new(Ctx {
        url: plan.url.clone(),
        run_id: run_id.clone(),
        started,
        tx,
        remaining: AtomicI64::new(
            plan.max_requests
                .map_or(i64::MAX, |n| n.min(i64::MAX as u64) as i64),
        ),
        timeout: plan.request_timeout,
    });
    let samples: Samples = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let monitor_task = monitor.map(|m| {
        tokio::spawn(m.run(
            started,
            Duration::from_millis(250),
            samples.clone(),
            stop_rx,
        ))
    });
    let traffic_groups: Vec<bool> = plan
        .groups
        .iter()
        .map(|g| g.role == Role::Traffic)
        .collect();
    let aggregator = tokio::spawn(aggregate(
        rx,
        traffic_groups.clone(),
        plan.progress.then(|| (samples.clone(), max_connections)),
        started,
    ));
    tracing::info!(run = %run_id, title = %plan.title, groups = plan.groups.len(), "load started");
    let mut tasks = tokio::task::JoinSet::new();
    for (gi, g) in plan.groups.iter().enumerate() {
        for w in 0..g.workers {
            let (ctx, g) = (ctx.clone(), g.clone());
            if g.role.is_leak() {
                tasks.spawn(leaker(ctx, gi, g, w));
            } else {
                tasks.spawn(traffic(ctx, gi, g, w));
            }
        }
    }
    drop(ctx);
    let hard_stop =
        tokio::time::Instant::from_std(started + plan.duration) + plan.request_timeout * 2;
    let mut outs = Vec::new();
    loop {
        match tokio::time::timeout_at(hard_stop, tasks.join_next()).await {
            Ok(Some(Ok(o))) => outs.push(o),
            Ok(Some(Err(e))) => tracing::warn!(error = %e, "worker failed"),
            Ok(None) => break,
            Err(_) => {
                tracing::warn!(
                    left = tasks.len(),
                    "workers past the deadline; aborting them"
                );
                tasks.abort_all();
            }
        }
    }
    let _ = stop_tx.send(true);
    if let Some(t) = monitor_task {
        let _ = t.await;
    }
    let timeline = aggregator
        .await
        .map_err(|e| SimError::Setup(e.to_string()))?;
    let server = samples.lock().map(|v| v.clone()).unwrap_or_default();
    let server_rows = if plan
        .groups
        .iter()
        .any(|g| g.role == Role::Traffic && g.workload.writes_one_row())
    {
        count_rows(&plan.url, &run_id).await
    } else {
        None
    };
    Ok(crate::summary::build(
        plan,
        run_id,
        started.elapsed(),
        outs,
        timeline,
        server,
        max_connections,
        server_rows,
    ))
}

async fn count_rows(url: &str, run_id: &str) -> Option<u64> {
    for _ in 0..5 {
        if let Ok(mut c) = Conn::connect(url, Duration::from_secs(5)).await {
            let n = c.rows_of_run(run_id).await;
            c.close().await;
            if let Ok(n) = n {
                return Some(n);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Collects samples into the timeline; prints a progress line every second if asked.
async fn aggregate(
    mut rx: mpsc::UnboundedReceiver<Sample>,
    traffic: Vec<bool>,
    progress: Option<(Samples, Option<u64>)>,
    started: Instant,
) -> Timeline {
    let mut t = Timeline::new(traffic.len());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut errors_total = 0u64;
    loop {
        tokio::select! {
            s = rx.recv() => match s {
                Some(s) => t.add(s),
                None => break,
            },
            _ = tick.tick(), if progress.is_some() => {
                let Some((samples, max)) = &progress else { continue };
                let sec = started.elapsed().as_secs().saturating_sub(1) as usize;
                let Some(s) = t.seconds.get(sec) else { continue };
                let sum = |v: &[u64]| v.iter().zip(&traffic).filter(|(_, &t)| t).map(|(n, _)| n).sum::<u64>();
                errors_total += sum(&s.err);
                let server = samples
                    .lock()
                    .ok()
                    .and_then(|v| v.last().map(|x| x.connections))
                    .map_or_else(|| "?".to_owned(), |n| n.to_string());
                let max = max.map_or_else(|| "?".to_owned(), |n| n.to_string());
                eprintln!(
                    "[{:>4}s] {:>8} req/s  errors {:>6} (total {:>7})  p99 {:>8.1} ms  server connections {server}/{max}",
                    sec + 1,
                    sum(&s.ok),
                    sum(&s.err),
                    errors_total,
                    Latency::of(&s.latency).p99,
                );
            }
        }
    }
    t
}

/// A group's figures (for [`crate::summary`]).
pub(crate) fn group_report(
    g: &Group,
    ok: u64,
    errors: u64,
    hist: &Histogram<u64>,
    leaked: u64,
    reclaimed: u64,
    run: Duration,
) -> GroupReport {
    let end = g.end.min(run.max(g.start));
    let window = end.saturating_sub(g.start).as_secs_f64().max(1e-3);
    GroupReport {
        name: g.name.clone(),
        role: g.role.label().to_owned(),
        workers: g.workers,
        start_s: g.start.as_secs_f64(),
        end_s: g.end.as_secs_f64(),
        ok,
        errors,
        throughput: ok as f64 / window,
        latency: Latency::of(hist),
        error_codes: Default::default(),
        leaked,
        reclaimed,
    }
}

impl Out {
    pub(crate) fn parts(&self) -> (usize, &Histogram<u64>, u64, u64, u64, u64) {
        (
            self.group,
            &self.hist,
            self.ok,
            self.errors,
            self.leaked,
            self.reclaimed,
        )
    }
}

pub(crate) fn second_report(t: u64, s: &crate::stats::Second, traffic: &[bool]) -> SecondReport {
    let sum = |v: &[u64]| {
        v.iter()
            .zip(traffic)
            .filter(|(_, &t)| t)
            .map(|(n, _)| n)
            .sum::<u64>()
    };
    SecondReport {
        t,
        ok: sum(&s.ok),
        errors: sum(&s.err),
        p99_ms: Latency::of(&s.latency).p99,
        group_ok: s.ok.clone(),
        group_errors: s.err.clone(),
    }
}
