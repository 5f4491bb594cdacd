//! Following Patroni's leader: where writes go, straight from Patroni's keys in etcd.
//!
//! Patroni (etcd3 DCS, default namespace `/service`) keeps `/service/<scope>/leader`, whose
//! value is the leader member's name, and `/service/<scope>/members/<name>`, a JSON document
//! whose `conn_url` is `postgres://host:port/postgres`. This task reads both, reports the
//! leader's `host:port`, then watches the scope's prefix and reads again on every change, so a
//! failover reaches the proxy as soon as Patroni writes it, not at the next health check.
//!
//! Invariants: a report is made only for a leader whose member key names a usable address
//! (no leader, e.g. during an election, reports nothing: writes stay where they are); the same
//! leader is not reported twice in a row; errors are counted and retried after a short pause,
//! and never end the task.

use std::sync::Arc;
use std::time::Duration;

use crate::agent::Status;
use crate::etcd::{Etcd, EtcdError, Kv};

/// Patroni's leader, as read from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The member's name (the leader key's value).
    pub member: String,
    /// `host:port` from the member's `conn_url`.
    pub addr: String,
}

/// What is told of each new leader.
pub type OnLeader = Arc<dyn Fn(&Leader) + Send + Sync>;

/// Pause after an error before reading again.
const RETRY: Duration = Duration::from_millis(500);

/// Follows the leader of `scope` for as long as the task runs.
pub(crate) async fn follow(
    etcd: Arc<Etcd>,
    scope: String,
    status: Arc<Status>,
    on_leader: OnLeader,
) {
    let prefix = format!("/service/{scope}/");
    let mut last: Option<Leader> = None;
    loop {
        match read_and_watch(&etcd, &prefix, &mut last, &on_leader).await {
            Ok(()) => {}
            Err(e) => {
                status.error(&e);
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Reads the scope, reports a new leader, then waits for the next change under the prefix.
async fn read_and_watch(
    etcd: &Etcd,
    prefix: &str,
    last: &mut Option<Leader>,
    on_leader: &OnLeader,
) -> Result<(), EtcdError> {
    let (revision, kvs) = etcd.range(prefix, true).await?;
    match leader_of(prefix, &kvs) {
        Some(leader) if last.as_ref() != Some(&leader) => {
            tracing::info!(member = %leader.member, addr = %leader.addr, "patroni: leader");
            on_leader(&leader);
            *last = Some(leader);
        }
        Some(_) => {}
        None => tracing::debug!(prefix, "patroni: no leader with a usable conn_url"),
    }
    let mut watch = etcd.watch(prefix, revision.saturating_add(1)).await?;
    watch.changed().await.map(drop)
}

/// The leader named under `prefix` and its address, from one read of the prefix.
pub fn leader_of(prefix: &str, kvs: &[Kv]) -> Option<Leader> {
    let leader_key = format!("{prefix}leader");
    let member = kvs.iter().find(|kv| kv.key == leader_key)?;
    let member = String::from_utf8_lossy(&member.value).trim().to_owned();
    let member_key = format!("{prefix}members/{member}");
    let doc = kvs.iter().find(|kv| kv.key == member_key)?;
    let doc: serde_json::Value = serde_json::from_slice(&doc.value).ok()?;
    let addr = addr_of(doc.get("conn_url")?.as_str()?)?;
    Some(Leader { member, addr })
}

/// `host:port` of a `postgres://[user[:pw]@]host[:port][/db][?...]` URL (port 5432 if absent).
pub fn addr_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit('@').next()?;
    if host_port.is_empty() {
        return None;
    }
    let has_port = match host_port.rfind(']') {
        Some(end) => host_port.get(end..)?.contains(':'),
        None => host_port.contains(':'),
    };
    Some(if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:5432")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> Kv {
        Kv {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            mod_revision: 1,
            lease: 0,
        }
    }

    #[test]
    fn conn_urls() {
        assert_eq!(
            addr_of("postgres://127.0.0.1:5433/postgres").as_deref(),
            Some("127.0.0.1:5433")
        );
        assert_eq!(
            addr_of("postgres://u:p@db1/postgres").as_deref(),
            Some("db1:5432")
        );
        assert_eq!(
            addr_of("postgresql://[::1]:6000").as_deref(),
            Some("[::1]:6000")
        );
        assert_eq!(addr_of("mysql://x:1"), None);
        assert_eq!(addr_of("postgres:///x"), None);
    }

    #[test]
    fn the_leader_and_its_member_key() {
        let p = "/service/bank/";
        let kvs = [
            kv("/service/bank/leader", "pg2"),
            kv(
                "/service/bank/members/pg1",
                r#"{"conn_url":"postgres://127.0.0.1:1/postgres"}"#,
            ),
            kv(
                "/service/bank/members/pg2",
                r#"{"conn_url":"postgres://127.0.0.1:2/postgres","role":"master"}"#,
            ),
        ];
        assert_eq!(
            leader_of(p, &kvs),
            Some(Leader {
                member: "pg2".into(),
                addr: "127.0.0.1:2".into()
            })
        );
        assert_eq!(leader_of(p, &kvs[1..]), None, "no leader key: nothing");
        assert_eq!(
            leader_of(p, &kvs[..2]),
            None,
            "leader without member key: nothing"
        );
    }
}
