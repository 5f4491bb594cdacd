//! Cancel-key mapping: each client gets poolguard's own BackendKeyData; a CancelRequest carrying it
//! reaches exactly the server running that client's query.
//!
//! Invariant: a cancel is only ever sent to a server while the requesting client holds it. The
//! session clears its target before its server goes back to the pool, which waits while a
//! canceller holds the target ([`crate::stop`]), and the canceller keeps its hold until the
//! postmaster has closed the cancel connection, i.e. has delivered the signal. A cancel
//! therefore cannot land on another client's query after a hand-over.
//!
//! A cancel travels as its server connection did: over TLS (SSLRequest first, which PostgreSQL
//! accepts ahead of a CancelRequest) when that connection was opened with TLS, so under
//! `server_tls = "require"` and `verify-*` no key goes over the network in the clear.

use std::collections::HashMap;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::BytesMut;
use poolguard_pg::startup::encode_cancel_request;
use rand::Rng;
use tokio::io::AsyncReadExt;

use crate::pg::server::start_tls;
use crate::stop::StopTarget;
use crate::tls::connect::{ServerStream, TlsDest};
use crate::tls::socket::{reconnect, ServerAddr, Socket};

/// Where a running query can be cancelled: the server's address and its BackendKeyData, and
/// the TLS its connection uses (`None`: plain).
#[derive(Debug, Clone)]
pub struct ServerKey {
    pub addr: ServerAddr,
    pub pid: i32,
    pub secret: i32,
    pub tls: Option<TlsDest>,
}

/// One client's cancel target: the server it currently holds, if any (that connection's own
/// key, shared: every logged-in client has a target, most of them idle and empty). The session
/// sets it with `try_set`/`set`; a cancel holds it while on its way ([`crate::stop`]).
pub type CancelTarget = StopTarget<Arc<ServerKey>>;

#[derive(Default)]
pub struct CancelRegistry {
    clients: Mutex<HashMap<i32, (i32, Weak<CancelTarget>)>>,
    /// Server process (address, pid) -> the client process id of the transaction-mode client
    /// that last sent NOTIFY through it (kept after that client leaves): a notification names
    /// the notifying server process, and a listener compares it with the pid its notifier was
    /// given (asyncpg's `get_server_pid()`), which under transaction pooling is poolguard's.
    notifiers: Mutex<HashMap<(ServerAddr, i32), i32>>,
    /// The last [`Registration::serial`] given.
    serials: std::sync::atomic::AtomicU64,
}

/// Bound on remembered notifiers (the map is cleared when it is exceeded: a notification then
/// names the server's process, as it would without the rewrite).
const MAX_NOTIFIERS: usize = 10_000;

/// Removes the client's key from the registry when its session ends.
pub struct Registration {
    registry: Arc<CancelRegistry>,
    pub pid: i32,
    pub secret: i32,
    pub target: Arc<CancelTarget>,
    /// This session's number, never given to another while the process runs (a process id
    /// is free again once its client leaves): what a server records as the client it was
    /// last brought in line with.
    pub serial: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.pid);
        // The notifiers it left stay: a notification it sent may reach a listener after it
        // left, and should still name the pid it was given, as a server names a backend that
        // has exited. An entry is replaced when its server notifies for another client.
    }
}

impl CancelRegistry {
    /// Gives a new client a unique key.
    pub fn register(self: &Arc<Self>) -> Registration {
        self.register_as(None)
    }

    /// Gives a new client a unique key whose process id is `pid` when that one is free: a
    /// session-mode client gets its server's own process id, so `pg_backend_pid()` and the
    /// sender of its NOTIFYs agree with its BackendKeyData (the secret stays poolguard's, so a
    /// cancel still comes here). Taken already (two servers' processes can share an id): a
    /// random one, as for every other client.
    pub fn register_as(self: &Arc<Self>, pid: Option<i32>) -> Registration {
        let target = Arc::new(CancelTarget::default());
        let mut rng = rand::thread_rng();
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let wanted = pid.filter(|p| *p > 0 && !map.contains_key(p));
        let (pid, secret) = match wanted {
            Some(pid) => (pid, rng.gen::<i32>()),
            None => loop {
                let pid = rng.gen_range(1..i32::MAX);
                if !map.contains_key(&pid) {
                    break (pid, rng.gen::<i32>());
                }
            },
        };
        map.insert(pid, (secret, Arc::downgrade(&target)));
        Registration {
            registry: self.clone(),
            pid,
            secret,
            target,
            serial: self
                .serials
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .wrapping_add(1),
        }
    }

    /// Records that the client with process id `client` sent NOTIFY through `server`.
    pub fn note_notifier(&self, server: &ServerKey, client: i32) {
        let mut map = self.notifiers.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_NOTIFIERS {
            map.clear();
        }
        map.insert((server.addr.clone(), server.pid), client);
    }

    /// The client process id to show as the sender of a notification from server process
    /// `pid` at `addr`, if a poolguard client notified through it.
    pub fn notifier(&self, addr: &ServerAddr, pid: i32) -> Option<i32> {
        let map = self.notifiers.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(addr.clone(), pid)).copied()
    }

    /// Handles a client's CancelRequest. Unknown keys and wrong secrets are ignored silently,
    /// as PostgreSQL does, so the request reveals nothing.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = {
            let map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&pid) {
                Some((s, t)) if *s == secret => t.upgrade(),
                _ => None,
            }
        };
        let Some(target) = target else {
            tracing::debug!(pid, "cancel request for unknown client key ignored");
            return;
        };
        let hold = target.hold().await;
        if let Some(key) = hold.key.as_deref() {
            if let Err(e) = send_cancel(key).await {
                tracing::warn!(server = %key.addr, error = %e, "cancel request to server failed");
            }
        }
        drop(hold);
    }
}

/// Sends a CancelRequest to a server and waits until the postmaster closes the connection (it
/// does so once the signal is delivered), bounded so a dead server cannot hold us.
pub async fn send_cancel(key: &ServerKey) -> std::io::Result<()> {
    let exchange = async {
        let (mut s, _) = match reconnect(&key.addr).await? {
            Socket::Tcp(tcp) => start_tls(tcp, key.tls.clone(), &key.addr.to_string())
                .await
                .map_err(std::io::Error::other)?,
            Socket::Unix(unix) => (ServerStream::Unix(unix), None),
        };
        let mut m = BytesMut::new();
        encode_cancel_request(&mut m, key.pid, key.secret);
        s.write_all(&m).await?;
        let mut sink = [0u8; 64];
        loop {
            match s.read(&mut sink).await {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                // A TLS peer that closes without close_notify: the signal was delivered all
                // the same (the postmaster closes only after that).
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process id is free again once its client leaves, and a new client may be given it;
    /// its serial is still its own, so a server stamped for the old client is not taken as in
    /// line with the new one.
    #[test]
    fn a_reused_process_id_comes_with_a_new_serial() {
        let registry = Arc::new(CancelRegistry::default());
        let first = registry.register_as(Some(4242));
        let (pid, serial) = (first.pid, first.serial);
        assert_eq!(pid, 4242);
        drop(first);
        let second = registry.register_as(Some(4242));
        assert_eq!(second.pid, pid, "the id was free again");
        assert_ne!(second.serial, serial);
        let third = registry.register();
        assert!(third.serial != serial && third.serial != second.serial);
    }
}
