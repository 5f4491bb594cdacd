//! The circuit breaker on its own: opening, refusing, the single probe, back-off, reporting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{advance, sleep};

use crate::{Breaker, BreakerConfig, BreakerState};

fn config(failures: u32) -> BreakerConfig {
    BreakerConfig {
        failures,
        cooldown: Duration::from_secs(2),
        max_cooldown: Duration::from_secs(7),
    }
}

/// `n` connects in a row that fail.
fn fail(breaker: &Arc<Breaker>, n: u32) {
    for _ in 0..n {
        breaker.try_pass().unwrap().failed();
    }
}

/// On an open `breaker`: wait out the cool-down and take the probe.
async fn probe_after_cooldown(breaker: &Arc<Breaker>) -> crate::BreakerPass {
    let cooldown = breaker.stats().retry_after.unwrap();
    advance(cooldown).await;
    let probe = breaker.try_pass().unwrap();
    assert!(probe.is_probe());
    assert_eq!(breaker.state(), BreakerState::HalfOpen);
    probe
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_and_a_success_resets_the_count() {
    let breaker = Breaker::new("db1:5432", config(3));
    fail(&breaker, 2);
    breaker.try_pass().unwrap().succeeded();
    fail(&breaker, 2);
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert_eq!(breaker.stats().consecutive_failures, 2);
    fail(&breaker, 1);
    let stats = breaker.stats();
    assert_eq!(stats.state, BreakerState::Open);
    assert_eq!(stats.opened_total, 1);
    assert_eq!(stats.consecutive_failures, 3);
    assert_eq!(stats.retry_after, Some(Duration::from_secs(2)));
    let transitions = breaker.take_transitions();
    assert_eq!(transitions.len(), 1);
    assert_eq!(
        (transitions[0].from, transitions[0].to),
        (BreakerState::Closed, BreakerState::Open)
    );
    assert_eq!(transitions[0].cooldown, Duration::from_secs(2));
    assert!(breaker.take_transitions().is_empty(), "taken once");
}

#[tokio::test(start_paused = true)]
async fn refuses_while_open_and_counts_each_refusal() {
    let breaker = Breaker::new("db1:5432", config(3));
    fail(&breaker, 3);
    advance(Duration::from_millis(500)).await;
    for _ in 0..4 {
        let refused = breaker.try_pass().unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(1500));
        assert_eq!(refused.consecutive_failures, 3);
        assert_eq!(
            refused.to_string(),
            "circuit breaker for db1:5432 is open after 3 failed connects; retry in 1.5s"
        );
    }
    // Asking without trying is not a refusal.
    assert!(breaker.refusing().is_some());
    assert_eq!(breaker.stats().rejected_total, 4);
    advance(Duration::from_millis(1500)).await;
    assert!(breaker.refusing().is_none(), "a probe would be let through");
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "refusing() takes no probe"
    );
}

#[tokio::test(start_paused = true)]
async fn exactly_one_probe_under_concurrent_callers() {
    let breaker = Breaker::new("db1:5432", config(3));
    fail(&breaker, 3);
    advance(Duration::from_secs(2)).await;
    let (passes, refusals) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (breaker, passes, refusals) = (
            Arc::clone(&breaker),
            Arc::clone(&passes),
            Arc::clone(&refusals),
        );
        tasks.push(tokio::spawn(async move {
            match breaker.try_pass() {
                Ok(pass) => {
                    passes.fetch_add(1, Ordering::SeqCst);
                    // The probe's connect is still running while the others arrive.
                    sleep(Duration::from_millis(100)).await;
                    pass.succeeded();
                }
                Err(refused) => {
                    assert_eq!(refused.retry_after, Duration::ZERO);
                    refusals.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(passes.load(Ordering::SeqCst), 1);
    assert_eq!(refusals.load(Ordering::SeqCst), 19);
    assert_eq!(breaker.stats().rejected_total, 19);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_success_closes_and_resets() {
    let breaker = Breaker::new("db1:5432", config(3));
    fail(&breaker, 3);
    probe_after_cooldown(&breaker).await.succeeded();
    let stats = breaker.stats();
    assert_eq!(stats.state, BreakerState::Closed);
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!(stats.retry_after, None);
    let path: Vec<_> = breaker
        .take_transitions()
        .iter()
        .map(|t| t.to.to_string())
        .collect();
    assert_eq!(path, ["open", "half-open", "closed"]);
    // A fresh run of failures starts from the base cool-down again.
    fail(&breaker, 3);
    assert_eq!(breaker.stats().retry_after, Some(Duration::from_secs(2)));
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_with_doubled_cooldown_capped() {
    let breaker = Breaker::new("db1:5432", config(3));
    fail(&breaker, 3);
    let mut cooldowns = Vec::new();
    for _ in 0..4 {
        probe_after_cooldown(&breaker).await.failed();
        assert_eq!(breaker.state(), BreakerState::Open);
        cooldowns.push(breaker.stats().retry_after.unwrap().as_secs());
    }
    assert_eq!(cooldowns, [4, 7, 7, 7], "doubled, capped at max_cooldown");
    let stats = breaker.stats();
    assert_eq!(stats.opened_total, 5);
    assert_eq!(stats.consecutive_failures, 7);
    probe_after_cooldown(&breaker).await.succeeded();
    fail(&breaker, 3);
    assert_eq!(
        breaker.stats().retry_after,
        Some(Duration::from_secs(2)),
        "closing reset the cool-down"
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_frees_the_slot_for_the_next_caller() {
    let breaker = Breaker::new("db1:5432", config(3));
    fail(&breaker, 3);
    let probe = probe_after_cooldown(&breaker).await;
    assert!(breaker.try_pass().is_err(), "the probe is out");
    drop(probe);
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(breaker.refusing().is_none(), "cool-down already over");
    let next = breaker.try_pass().unwrap();
    assert!(next.is_probe());
    next.succeeded();
    assert_eq!(breaker.state(), BreakerState::Closed);
    // A closed-state pass dropped unreported changes nothing.
    drop(breaker.try_pass().unwrap());
    assert_eq!(breaker.stats().consecutive_failures, 0);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn stale_outcomes_from_before_a_change_are_ignored() {
    let breaker = Breaker::new("db1:5432", config(3));
    let late = breaker.try_pass().unwrap();
    fail(&breaker, 3);
    late.failed();
    let stats = breaker.stats();
    assert_eq!(
        stats.retry_after,
        Some(Duration::from_secs(2)),
        "not extended"
    );
    assert_eq!((stats.opened_total, stats.consecutive_failures), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn zero_failures_never_opens_and_disabling_closes() {
    let breaker = Breaker::new("db1:5432", config(0));
    fail(&breaker, 100);
    let stats = breaker.stats();
    assert_eq!(stats.state, BreakerState::Closed);
    assert_eq!((stats.opened_total, stats.rejected_total), (0, 0));
    assert_eq!(stats.consecutive_failures, 100);

    let breaker = Breaker::new("db1:5432", config(3));
    fail(&breaker, 3);
    breaker.set_config(config(0));
    assert_eq!(breaker.state(), BreakerState::Closed);
    assert!(breaker.try_pass().is_ok());
}

#[test]
fn state_names_and_gauges() {
    let all = [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ];
    let shown: Vec<_> = all.iter().map(|s| (s.to_string(), s.as_gauge())).collect();
    assert_eq!(
        shown,
        [
            ("closed".to_owned(), 0),
            ("open".to_owned(), 1),
            ("half-open".to_owned(), 2)
        ]
    );
    assert_eq!(crate::BreakerStats::default().state, BreakerState::Closed);
}
