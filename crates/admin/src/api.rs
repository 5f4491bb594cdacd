//! The HTTP routes: `/metrics`, the JSON API under `/api/`, and the dashboard at `/`.
//!
//! Every handler takes one snapshot and renders from it; nothing blocks on a pool.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::alerts::Monitor;
use crate::model::{LeaseSnapshot, Snapshot};
use crate::Source;

/// The dashboard: one self-contained page.
const DASHBOARD: &str = include_str!("dashboard.html");

#[derive(Clone)]
struct App {
    source: Arc<dyn Source>,
    monitor: Monitor,
    /// The listener's own address (the Host check accepts it).
    bound: std::net::SocketAddr,
}

/// All routes, behind the access check ([`crate::access`]).
pub fn router(source: Arc<dyn Source>, monitor: Monitor, bound: std::net::SocketAddr) -> Router {
    let app = App {
        source,
        monitor,
        bound,
    };
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/api/pools",
            get(|s: State<App>| async move { Json(s.source.snapshot().pools) }),
        )
        .route(
            "/api/clients",
            get(|s: State<App>| async move { Json(s.source.snapshot().clients) }),
        )
        .route(
            "/api/servers",
            get(|s: State<App>| async move { Json(s.source.snapshot().backends) }),
        )
        .route("/api/leases", get(leases))
        .route(
            "/api/holders",
            get(|s: State<App>| async move { Json(holders(&s.source.snapshot())) }),
        )
        .route("/api/events", get(events))
        .route(
            "/api/alerts",
            get(|s: State<App>| async move { Json(s.monitor.states()) }),
        )
        .route("/api/history", get(history))
        .route("/api/reload", axum::routing::post(reload))
        .route(
            "/api/snapshot",
            get(|s: State<App>| async move { Json(s.source.snapshot()) }),
        )
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// The access check, before any handler.
async fn guard(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let access = app.source.access();
    match access.check(
        app.bound,
        request.method(),
        request.uri().path(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::info!(path = %request.uri().path(), status = %refusal.status, reason = refusal.reason, "admin HTTP request refused");
            (refusal.status, format!("{}\n", refusal.reason)).into_response()
        }
    }
}

/// 200 "ready", or 503 with why not.
async fn ready(State(app): State<App>) -> Response {
    match app.source.ready() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why + "\n").into_response(),
    }
}

async fn metrics(State(app): State<App>) -> Response {
    let body = crate::metrics::render(&app.source.snapshot(), &app.monitor.metrics());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LeaseQuery {
    older_than: Option<String>,
}

async fn leases(State(app): State<App>, Query(q): Query<LeaseQuery>) -> Response {
    let min = match q.older_than.as_deref().map(humantime::parse_duration) {
        None => Duration::ZERO,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("older_than: {e} (e.g. \"10s\")"),
            )
                .into_response()
        }
    };
    let leases: Vec<LeaseSnapshot> = app
        .source
        .snapshot()
        .leases
        .into_iter()
        .filter(|l| l.held_seconds >= min.as_secs_f64())
        .collect();
    Json(leases).into_response()
}

#[derive(Deserialize)]
struct EventQuery {
    after: Option<u64>,
}

async fn events(State(app): State<App>, Query(q): Query<EventQuery>) -> Response {
    Json(app.source.events().since(q.after.unwrap_or(0))).into_response()
}

/// Re-reads the configuration file: 200 with the summary, 422 with why it was refused (the
/// running configuration stays). Needs the admin token ([`crate::access`]).
async fn reload(State(app): State<App>) -> Response {
    match app.source.reload() {
        Ok(summary) => (StatusCode::OK, summary + "\n").into_response(),
        Err(why) => (StatusCode::UNPROCESSABLE_ENTITY, why + "\n").into_response(),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    seconds: Option<usize>,
}

async fn history(State(app): State<App>, Query(q): Query<HistoryQuery>) -> Response {
    Json(app.monitor.history(q.seconds.unwrap_or(300))).into_response()
}

/// Server connections held, grouped by application and client address (IP, no port).
#[derive(Debug, Clone, Serialize)]
pub struct HolderGroup {
    pub application: String,
    pub address: String,
    pub leases: usize,
    pub idle_in_transaction: usize,
    pub leaked: usize,
    pub oldest_held_seconds: f64,
    pub pools: Vec<String>,
    pub last_statement: String,
}

/// Top holders, most leases first (then oldest).
pub fn holders(snap: &Snapshot) -> Vec<HolderGroup> {
    let mut groups: BTreeMap<(String, String), HolderGroup> = BTreeMap::new();
    for l in &snap.leases {
        let address = l
            .client
            .rsplit_once(':')
            .map_or(l.client.as_str(), |(ip, _)| ip)
            .to_owned();
        let g = groups
            .entry((l.application.clone(), address.clone()))
            .or_insert_with(|| HolderGroup {
                application: l.application.clone(),
                address,
                leases: 0,
                idle_in_transaction: 0,
                leaked: 0,
                oldest_held_seconds: 0.0,
                pools: Vec::new(),
                last_statement: String::new(),
            });
        g.leases += 1;
        g.idle_in_transaction += usize::from(l.state == "idle in transaction");
        g.leaked += usize::from(l.leak_reported);
        if l.held_seconds >= g.oldest_held_seconds {
            g.oldest_held_seconds = l.held_seconds;
            g.last_statement = l.last_statement.clone();
        }
        if !g.pools.contains(&l.pool) {
            g.pools.push(l.pool.clone());
        }
    }
    let mut out: Vec<HolderGroup> = groups.into_values().collect();
    out.sort_by(|a, b| {
        b.leases
            .cmp(&a.leases)
            .then(b.oldest_held_seconds.total_cmp(&a.oldest_held_seconds))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_group_by_application_and_ip() {
        let lease = |client: &str, app: &str, held: f64| LeaseSnapshot {
            client: client.into(),
            application: app.into(),
            held_seconds: held,
            pool: "bank/app".into(),
            state: "idle in transaction".into(),
            ..Default::default()
        };
        let snap = Snapshot {
            leases: vec![
                lease("10.0.0.1:1", "fees", 5.0),
                lease("10.0.0.1:2", "fees", 50.0),
                lease("10.0.0.2:1", "web", 1.0),
            ],
            ..Default::default()
        };
        let h = holders(&snap);
        assert_eq!(h.len(), 2);
        assert_eq!((h[0].application.as_str(), h[0].leases), ("fees", 2));
        assert_eq!(h[0].address, "10.0.0.1");
        assert_eq!(h[0].oldest_held_seconds, 50.0);
        assert_eq!(h[0].idle_in_transaction, 2);
    }
}
