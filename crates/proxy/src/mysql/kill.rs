//! KILL QUERY on a side connection, and routing clients' own KILL statements.
//!
//! MySQL cancels a running statement with `KILL QUERY <thread id>` sent on another connection.
//! poolguard uses it for `query_timeout` and for clients that vanish mid-statement, opening a
//! short-lived connection with the pool's credentials (outside the pool: the pool may be full
//! with the very connection to cancel). It takes a free unit of the backend's budget, or else
//! the backend's one side connection that `poolguard check` counts beyond the budget. Each
//! client is greeted with poolguard's own connection id ([`KillRegistry`]); a client's
//! `KILL [QUERY] <that id>` is answered by poolguard, which kills the statement on whichever
//! server runs that client's command, never another client's.
//!
//! Invariant: a kill is only sent while the session that owns the server holds it: the session
//! clears its target before its server goes back to the pool, which waits while a killer holds
//! the target ([`crate::stop`]). A KILL that lands after the statement finished is harmless on
//! MariaDB: the flag is cleared when the server starts its next command.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::lock;
use crate::mysql::pools::MyPoolEntry;
use crate::stop::StopTarget;

/// How long a side connection may take to log in and kill.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// poolguard's connection ids start here, away from the small thread ids servers hand out, so
/// a KILL naming a real server thread is not mistaken for one of ours.
const FIRST_ID: u32 = 0x4000_0000;

/// Where a client's command currently runs.
#[derive(Clone)]
pub struct ServerKey {
    pub entry: Arc<MyPoolEntry>,
    /// The server the thread runs on (its address as configured, which TLS verifies): after a
    /// failover the pool's write host is another one, where the same thread id may belong to
    /// someone else.
    pub host: Arc<str>,
    pub thread_id: u32,
}

/// One client's kill target and its disconnect signal.
pub struct KillTarget {
    /// The server the client's statements run on; a KILL holds it while killing
    /// ([`crate::stop`]: the session sets it with `try_set`/`set`).
    pub stop: StopTarget<ServerKey>,
    /// The user the client is logged in as (COM_CHANGE_USER changes it); the holder's copy,
    /// shared, not one more string per client.
    pub user: Mutex<Arc<str>>,
    /// Raised when another client KILLs this connection.
    pub kicked: crate::idle::Signal,
}

impl KillTarget {
    pub fn set_user(&self, user: Arc<str>) {
        *lock(&self.user) = user;
    }
}

pub struct KillRegistry {
    next: AtomicU32,
    clients: Mutex<HashMap<u32, Weak<KillTarget>>>,
}

impl Default for KillRegistry {
    fn default() -> Self {
        KillRegistry {
            next: AtomicU32::new(FIRST_ID),
            clients: Mutex::new(HashMap::new()),
        }
    }
}

/// A client's entry in the registry; removed on drop.
pub struct Registration {
    registry: Arc<KillRegistry>,
    pub id: u32,
    pub target: Arc<KillTarget>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.clients).remove(&self.id);
    }
}

/// What a routed KILL found.
#[derive(Debug, PartialEq, Eq)]
pub enum KillOutcome {
    /// Not one of poolguard's ids: let the server handle it.
    NotOurs,
    /// Ours, but another user's connection.
    NotOwner,
    Done,
}

impl KillRegistry {
    /// A fresh connection id for a greeting (registered once the client has logged in).
    pub fn next_id(&self) -> u32 {
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if id >= FIRST_ID {
                return id;
            }
            // Wrapped past u32::MAX: start over in our range.
            let _ = self.next.compare_exchange(
                id.wrapping_add(1),
                FIRST_ID,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Registers a logged-in client under the id its greeting carried.
    pub fn register(self: &Arc<Self>, id: u32, user: Arc<str>) -> Registration {
        let target = Arc::new(KillTarget {
            stop: StopTarget::default(),
            user: Mutex::new(user),
            kicked: Default::default(),
        });
        lock(&self.clients).insert(id, Arc::downgrade(&target));
        Registration {
            registry: self.clone(),
            id,
            target,
        }
    }

    /// Server thread id -> poolguard id of the client whose commands run on it, for the
    /// threads on `host`: SHOW PROCESSLIST shows each client under the id it was greeted with,
    /// the one `CONNECTION_ID()` and KILL take here.
    pub fn threads_on(&self, host: &str) -> HashMap<u32, u32> {
        lock(&self.clients)
            .iter()
            .filter_map(|(&id, target)| {
                let key = target.upgrade()?.stop.peek()?;
                (&*key.host == host).then_some((key.thread_id, id))
            })
            .collect()
    }

    /// Handles `KILL [QUERY] id` from a client logged in as `user` (`None`: a user the server
    /// allows to kill any connection).
    pub async fn kill(&self, id: u64, query_only: bool, user: Option<&str>) -> KillOutcome {
        let target = u32::try_from(id).ok().and_then(|id| {
            let map = lock(&self.clients);
            map.get(&id).and_then(Weak::upgrade)
        });
        let Some(target) = target else {
            return KillOutcome::NotOurs;
        };
        if user.is_some_and(|user| **lock(&target.user) != *user) {
            return KillOutcome::NotOwner;
        }
        let hold = target.stop.hold().await;
        if let Some(key) = &hold.key {
            if let Err(e) = kill_query(key).await {
                tracing::warn!(thread = key.thread_id, error = %e, "KILL QUERY failed");
            }
        }
        drop(hold);
        if !query_only {
            target.kicked.raise();
        }
        KillOutcome::Done
    }
}

/// Sends `KILL QUERY <thread>` on a fresh connection with the pool's credentials, to the very
/// server the thread runs on. The connection takes a unit of the backend's budget when one is
/// free, else the backend's single side connection (waiting for it if another kill holds it),
/// so a backend never has more than its budget plus one connection open.
pub async fn kill_query(key: &ServerKey) -> Result<(), String> {
    let connector = key.entry.pool.connector();
    let work = async {
        // Both guards live until the side connection is closed at the end of this block.
        let _unit = key.entry.pool.budget().try_reserve();
        let _side = match _unit {
            Some(_) => None,
            None => Some(connector.hosts.side_connection().await),
        };
        let mut side = connector
            .open_at(key.host.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let r = side
            .query(&format!("KILL QUERY {}", key.thread_id))
            .await
            .map_err(|e| e.to_string());
        poolguard_pool::Connector::close(
            connector,
            Box::new(side),
            poolguard_pool::CloseReason::Discarded,
        );
        r.map(drop)
    };
    match tokio::time::timeout(KILL_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {KILL_TIMEOUT:?}")),
    }
}
