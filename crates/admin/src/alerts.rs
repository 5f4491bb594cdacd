//! Alert rules, evaluated once a second over snapshots, and the short history the dashboard and
//! the rate/forecast quantities read.
//!
//! A rule is *pending* while its condition holds and *firing* once it has held for `for`; it
//! resolves the first tick the condition is false. Only transitions are announced (a log line,
//! an event, one webhook POST), so a flapping quantity cannot cause a storm: at most one
//! notice per transition. Webhooks are delivered in order by one task, each with a few retries
//! and backoff; a failed delivery is logged and dropped, never re-queued forever.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::{now_ms, EventKind, Snapshot};
use crate::Source;

/// What a rule watches. Config spelling in [`Quantity::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    /// Budget units in use / budget limit, 0..1 (worst backend).
    ServerUsageOfBudget,
    /// Server's own connection count / its max_connections, 0..1 (worst backend).
    ServerUsageOfMaxConnections,
    /// Acquires waiting, summed over pools.
    Waiters,
    /// Acquire timeouts in the last minute.
    AcquireTimeoutsPerMinute,
    /// Leases currently held past leak_threshold.
    Leaks,
    /// Errors sent to clients in the last minute.
    ErrorRate,
    /// Seconds until the server's connections run out at the current growth rate; the rule
    /// fires when this drops below `horizon` (threshold is unused).
    Forecast,
    /// Hosts whose circuit breaker is not closed (open or half-open).
    BreakersOpen,
}

impl Quantity {
    /// Parses the config spelling.
    pub fn parse(s: &str) -> Option<Quantity> {
        Some(match s {
            "server_usage_of_budget" => Quantity::ServerUsageOfBudget,
            "server_usage_of_max_connections" => Quantity::ServerUsageOfMaxConnections,
            "waiters" => Quantity::Waiters,
            "acquire_timeouts_per_minute" => Quantity::AcquireTimeoutsPerMinute,
            "leaks" => Quantity::Leaks,
            "error_rate" => Quantity::ErrorRate,
            "forecast" | "server_connections_forecast" => Quantity::Forecast,
            "breakers_open" => Quantity::BreakersOpen,
            _ => return None,
        })
    }

    /// Every accepted spelling, for error messages.
    pub const NAMES: &'static str = "server_usage_of_budget, server_usage_of_max_connections, waiters, acquire_timeouts_per_minute, leaks, error_rate, forecast, breakers_open";
}

/// One `[[alerts]]` entry, validated.
#[derive(Debug, Clone)]
pub struct AlertRule {
    pub name: String,
    pub quantity: Quantity,
    /// Fires when the value is >= threshold (ignored by `forecast`).
    pub threshold: f64,
    /// How long the condition must hold before firing.
    pub for_: Duration,
    /// `http://host:port/path`; `None`: log and event only.
    pub webhook: Option<String>,
    /// Only this backend (default: all).
    pub backend: Option<String>,
    /// `forecast`: warn when exhaustion is predicted within this long.
    pub horizon: Duration,
}

/// A backend in a history point: (name, budget_in_use, budget_limit, server connections,
/// server max_connections).
pub type BackendPoint = (String, usize, usize, Option<u64>, Option<u64>);

/// One point of history (every tick): what the dashboard charts.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub at_ms: u64,
    /// (pool name, in_use, open, cap, waiters)
    pub pools: Vec<(String, usize, usize, usize, usize)>,
    /// (backend, budget_in_use, budget_limit, server_connections, server_max_connections)
    pub backends: Vec<BackendPoint>,
    #[serde(skip)]
    timeouts: u64,
    #[serde(skip)]
    errors: u64,
}

/// A rule's state, as served by `/api/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct RuleState {
    pub name: String,
    pub firing: bool,
    pub value: Option<f64>,
    pub threshold: f64,
    #[serde(skip)]
    pending_since: Option<Instant>,
}

/// History length: ten minutes of one-second points.
const HISTORY: usize = 600;

struct Inner {
    history: VecDeque<Point>,
    states: Vec<RuleState>,
}

/// The rule evaluator and history keeper. Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    rules: Arc<Vec<AlertRule>>,
    inner: Arc<Mutex<Inner>>,
}

/// A webhook delivery.
struct Notice {
    url: String,
    body: String,
}

impl Monitor {
    pub fn new(rules: Vec<AlertRule>) -> Monitor {
        let states = rules
            .iter()
            .map(|r| RuleState {
                name: r.name.clone(),
                firing: false,
                value: None,
                threshold: r.threshold,
                pending_since: None,
            })
            .collect();
        Monitor {
            rules: Arc::new(rules),
            inner: Arc::new(Mutex::new(Inner {
                history: VecDeque::new(),
                states,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The last `seconds` of history.
    pub fn history(&self, seconds: usize) -> Vec<Point> {
        let inner = self.lock();
        let skip = inner.history.len().saturating_sub(seconds);
        inner.history.iter().skip(skip).cloned().collect()
    }

    /// Every rule's current state.
    pub fn states(&self) -> Vec<RuleState> {
        self.lock().states.clone()
    }

    /// `poolguard_alert_firing{rule=...}` lines for `/metrics`.
    pub fn metrics(&self) -> String {
        let mut out = String::from(
            "# HELP poolguard_alert_firing 1 while an [[alerts]] rule is firing.\n# TYPE poolguard_alert_firing gauge\n",
        );
        for s in self.states() {
            let l = crate::metrics::labels(&[("rule", &s.name)]);
            out.push_str(&format!(
                "poolguard_alert_firing{{{l}}} {}\n",
                u8::from(s.firing)
            ));
        }
        out
    }

    /// Ticks every second until the task is aborted.
    pub async fn run(self, source: Arc<dyn Source>) {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(deliver(rx));
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let snap = source.snapshot();
            self.tick(&snap, source.as_ref(), &tx, Instant::now());
        }
    }

    fn tick(
        &self,
        snap: &Snapshot,
        source: &dyn Source,
        tx: &mpsc::UnboundedSender<Notice>,
        now: Instant,
    ) {
        let mut inner = self.lock();
        inner.history.push_back(point(snap));
        if inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let value = evaluate(rule, snap, &inner.history);
            let holds = match (rule.quantity, value) {
                (Quantity::Forecast, Some(v)) => v <= rule.horizon.as_secs_f64(),
                (_, Some(v)) => v >= rule.threshold,
                (_, None) => false,
            };
            let state = &mut inner.states[i];
            state.value = value;
            if holds {
                let since = *state.pending_since.get_or_insert(now);
                if !state.firing && now.saturating_duration_since(since) >= rule.for_ {
                    state.firing = true;
                    announce(rule, true, value, source, tx);
                }
            } else {
                state.pending_since = None;
                if state.firing {
                    state.firing = false;
                    announce(rule, false, value, source, tx);
                }
            }
        }
    }
}

fn point(snap: &Snapshot) -> Point {
    Point {
        at_ms: now_ms(),
        pools: snap
            .pools
            .iter()
            .map(|p| (p.name.clone(), p.in_use, p.open, p.cap, p.waiters))
            .collect(),
        backends: snap
            .backends
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    b.budget_in_use,
                    b.budget_limit,
                    b.server_connections,
                    b.server_max_connections,
                )
            })
            .collect(),
        timeouts: snap.pools.iter().map(|p| p.timeouts_total).sum(),
        errors: snap.errors_total.iter().map(|e| e.2).sum(),
    }
}

/// The rule's quantity now, or `None` when it cannot be computed (no data yet).
fn evaluate(rule: &AlertRule, snap: &Snapshot, history: &VecDeque<Point>) -> Option<f64> {
    let wanted = |name: &str| rule.backend.as_deref().is_none_or(|b| b == name);
    let worst = |f: &dyn Fn(&crate::model::BackendSnapshot) -> Option<f64>| {
        snap.backends
            .iter()
            .filter(|b| wanted(&b.name))
            .filter_map(f)
            .reduce(f64::max)
    };
    // The point about a minute ago (or the oldest we have).
    let minute_ago = history.iter().rev().nth(60).or(history.front());
    match rule.quantity {
        Quantity::ServerUsageOfBudget => {
            worst(&|b| (b.budget_limit > 0).then(|| b.budget_in_use as f64 / b.budget_limit as f64))
        }
        Quantity::ServerUsageOfMaxConnections => worst(&|b| match (
            b.server_connections,
            b.server_max_connections,
        ) {
            (Some(c), Some(m)) if m > 0 => Some(c as f64 / m as f64),
            _ => None,
        }),
        Quantity::Waiters => Some(
            snap.pools
                .iter()
                .filter(|p| wanted(&p.backend))
                .map(|p| p.waiters as f64)
                .sum(),
        ),
        Quantity::AcquireTimeoutsPerMinute => {
            let now: u64 = snap.pools.iter().map(|p| p.timeouts_total).sum();
            minute_ago.map(|p| now.saturating_sub(p.timeouts) as f64)
        }
        Quantity::ErrorRate => {
            let now: u64 = snap.errors_total.iter().map(|e| e.2).sum();
            minute_ago.map(|p| now.saturating_sub(p.errors) as f64)
        }
        Quantity::Leaks => Some(
            snap.leases
                .iter()
                .filter(|l| l.leak_reported && wanted(&l.backend))
                .count() as f64,
        ),
        Quantity::Forecast => forecast(rule, history),
        Quantity::BreakersOpen => Some(
            snap.backends
                .iter()
                .filter(|b| wanted(&b.name))
                .flat_map(|b| &b.hosts)
                .filter(|h| h.breaker_gauge != 0)
                .count() as f64,
        ),
    }
}

/// Seconds until the server's connections reach its max, extrapolating the growth over the
/// last minute; `None` when not growing or unknown.
fn forecast(rule: &AlertRule, history: &VecDeque<Point>) -> Option<f64> {
    let newest = history.back()?;
    let oldest = history.iter().rev().nth(60).or(history.front())?;
    let secs = newest.at_ms.saturating_sub(oldest.at_ms) as f64 / 1000.0;
    if secs < 5.0 {
        return None;
    }
    let mut best: Option<f64> = None;
    for (name, in_use, limit, conns, max) in &newest.backends {
        if rule.backend.as_deref().is_some_and(|b| b != name) {
            continue;
        }
        let (now, cap) = match (conns, max) {
            (Some(c), Some(m)) => (*c as f64, *m as f64),
            _ => (*in_use as f64, *limit as f64),
        };
        let Some(then) = oldest
            .backends
            .iter()
            .find(|b| &b.0 == name)
            .map(|b| match (b.3, max) {
                (Some(c), Some(_)) => c as f64,
                _ => b.1 as f64,
            })
        else {
            continue;
        };
        let rate = (now - then) / secs;
        if rate > 0.0 {
            let left = ((cap - now) / rate).max(0.0);
            best = Some(best.map_or(left, |b: f64| b.min(left)));
        }
    }
    best
}

fn announce(
    rule: &AlertRule,
    firing: bool,
    value: Option<f64>,
    source: &dyn Source,
    tx: &mpsc::UnboundedSender<Notice>,
) {
    let status = if firing { "firing" } else { "resolved" };
    let value_text = value.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
    let text = match rule.quantity {
        Quantity::Forecast => format!(
            "[poolguard] {status}: {} (server connections run out in {value_text} s at the current rate; horizon {} s)",
            rule.name,
            rule.horizon.as_secs()
        ),
        _ => format!(
            "[poolguard] {status}: {} ({:?} = {value_text}, threshold {})",
            rule.name, rule.quantity, rule.threshold
        ),
    };
    if firing {
        tracing::warn!(rule = %rule.name, value = ?value, threshold = rule.threshold, "alert firing");
    } else {
        tracing::info!(rule = %rule.name, value = ?value, "alert resolved");
    }
    let kind = if firing {
        EventKind::AlertFiring
    } else {
        EventKind::AlertResolved
    };
    source
        .events()
        .push(kind, text.clone(), None, Some(rule.name.clone()), value);
    if let Some(url) = &rule.webhook {
        let body = serde_json::json!({
            "text": text,
            "rule": rule.name,
            "status": status,
            "value": value,
            "threshold": rule.threshold,
            "at_ms": now_ms(),
        })
        .to_string();
        let _ = tx.send(Notice {
            url: url.clone(),
            body,
        });
    }
}

/// Delivers notices in order; each gets up to 4 attempts (1 s, 2 s, 4 s apart).
async fn deliver(mut rx: mpsc::UnboundedReceiver<Notice>) {
    while let Some(n) = rx.recv().await {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=4 {
            match post(&n.url, &n.body).await {
                Ok(()) => break,
                Err(e) if attempt < 4 => {
                    tracing::info!(url = %n.url, attempt, error = %e, "webhook failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => tracing::warn!(url = %n.url, error = %e, "webhook failed, giving up"),
            }
        }
    }
}

/// A plain HTTP/1.1 POST of JSON; success is a 2xx status. Only `http://` URLs.
pub async fn post(url: &str, body: &str) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// webhooks are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let io = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; 256];
        let n = s.read(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let head = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let code = head.split(' ').nth(1).unwrap_or("");
    if code.starts_with('2') {
        Ok(())
    } else {
        Err(format!("status {code:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendSnapshot, EventLog};

    struct Fixed(EventLog);
    impl Source for Fixed {
        fn snapshot(&self) -> Snapshot {
            Snapshot::default()
        }
        fn events(&self) -> &EventLog {
            &self.0
        }
    }

    fn snap(in_use: usize) -> Snapshot {
        Snapshot {
            backends: vec![BackendSnapshot {
                name: "pg".into(),
                budget_limit: 10,
                budget_in_use: in_use,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn fires_after_for_and_resolves_once() {
        let rule = AlertRule {
            name: "budget".into(),
            quantity: Quantity::ServerUsageOfBudget,
            threshold: 0.8,
            for_: Duration::from_secs(2),
            webhook: None,
            backend: None,
            horizon: Duration::ZERO,
        };
        let m = Monitor::new(vec![rule]);
        let src = Fixed(EventLog::default());
        let (tx, _rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        m.tick(&snap(9), &src, &tx, at(0));
        m.tick(&snap(9), &src, &tx, at(1));
        assert!(!m.states()[0].firing);
        for s in 2..6 {
            m.tick(&snap(9), &src, &tx, at(s));
        }
        assert!(m.states()[0].firing);
        m.tick(&snap(1), &src, &tx, at(6));
        m.tick(&snap(1), &src, &tx, at(7));
        assert_eq!(src.0.count(EventKind::AlertFiring), 1);
        assert_eq!(src.0.count(EventKind::AlertResolved), 1);
    }

    #[test]
    fn breakers_open_counts_hosts_not_closed() {
        let rule = AlertRule {
            name: "breaker".into(),
            quantity: Quantity::BreakersOpen,
            threshold: 1.0,
            for_: Duration::ZERO,
            webhook: None,
            backend: Some("pg".into()),
            horizon: Duration::ZERO,
        };
        let host = |gauge: u8| crate::model::HostSnapshot {
            breaker_gauge: gauge,
            ..Default::default()
        };
        let mut s = snap(0);
        s.backends[0].hosts = vec![host(0), host(1), host(2)];
        assert_eq!(evaluate(&rule, &s, &VecDeque::new()), Some(2.0));
        s.backends[0].name = "other".into();
        assert_eq!(evaluate(&rule, &s, &VecDeque::new()), Some(0.0));
    }
}
