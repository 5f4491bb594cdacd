//! The accept gate: what a socket may cost before it has logged in, bounded from the moment it
//! is accepted, for both front doors.
//!
//! A socket is counted at accept against `max_client_connections` (its [`ClientSlot`]) and
//! against the logins in progress, overall (`max_logins_in_progress`) and per source address
//! (`max_logins_per_address`), until its login ends (its [`LoginPermit`]). Over any of them it
//! gets its refusal (PostgreSQL ErrorResponse 53400, MySQL ERR 1203 instead of the greeting),
//! written without waiting, and is closed at once: no task, no read buffer, no timer. So a flood
//! of silent or slow sockets costs at most the caps' worth of login tasks, each for at most
//! `client_login_timeout`, and file descriptors stay bounded by the caps, not by the flood.
//!
//! Invariants: every count taken is given back exactly once, by a guard's `Drop` (a login that
//! panics or is cancelled included); the per-address map holds only addresses with a login in
//! progress, so it never has more than `max_logins_in_progress` entries.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::config::LoginLimits;
use crate::error::ProxyError;
use crate::lock;
use crate::state::{ClientSlot, Shared};

/// Which front door a socket came through: decides the refusal's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Postgres,
    Mysql,
}

/// What an admitted socket holds until it leaves: its place among the clients, and until it
/// has logged in, its place among the logins in progress.
pub struct Admitted {
    pub peer: SocketAddr,
    pub slot: ClientSlot,
    /// Drop it when the login is over (logged in, refused or timed out).
    pub login: LoginPermit,
}

/// Logins in progress, overall and per source address.
#[derive(Debug, Default)]
pub struct Logins {
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_address: HashMap<AddressKey, usize>,
}

/// What the per-address cap counts by: an IPv4 address, or an IPv6 /64 (one host usually has a
/// whole /64 to pick addresses from, so counting single IPv6 addresses would bound nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AddressKey(IpAddr);

impl AddressKey {
    fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                AddressKey(IpAddr::V6(bits.into()))
            }
            v4 => AddressKey(v4),
        }
    }
}

/// One login in progress; dropping it gives the place back.
#[derive(Debug)]
pub struct LoginPermit {
    logins: Arc<Logins>,
    key: AddressKey,
}

impl Drop for LoginPermit {
    fn drop(&mut self) {
        let mut c = lock(&self.logins.counts);
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_address.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_address.remove(&self.key);
            }
        }
    }
}

impl Logins {
    /// Counts one more login from `ip`, or says which cap it would exceed (53400 / 1203).
    pub fn begin(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &LoginLimits,
    ) -> Result<LoginPermit, ProxyError> {
        let key = AddressKey::of(ip);
        let mut c = lock(&self.counts);
        if c.total >= limits.max_logins_in_progress {
            let cap = limits.max_logins_in_progress;
            return Err(ProxyError::TooManyClients(format!(
                "poolguard refuses the connection: {cap} clients are already logging in (max_logins_in_progress = {cap}); retry shortly"
            )));
        }
        let from_here = c.per_address.get(&key).copied().unwrap_or(0);
        if from_here >= limits.max_logins_per_address {
            let cap = limits.max_logins_per_address;
            return Err(ProxyError::TooManyClients(format!(
                "poolguard refuses the connection: {cap} clients from {ip} are already logging in (max_logins_per_address = {cap}); retry shortly"
            )));
        }
        c.total += 1;
        *c.per_address.entry(key).or_insert(0) += 1;
        Ok(LoginPermit {
            logins: self.clone(),
            key,
        })
    }

    /// Logins in progress now (all addresses).
    pub fn in_progress(&self) -> usize {
        lock(&self.counts).total
    }
}

/// Admits a socket just accepted, or refuses it and leaves it to the caller to drop (which
/// closes it). Never waits: the refusal is written only if the socket can take it at once
/// (a fresh socket's send buffer is empty, so it can).
pub fn admit(
    shared: &Arc<Shared>,
    stream: &TcpStream,
    peer: SocketAddr,
    door: Door,
) -> Option<Admitted> {
    let admitted = shared.admit_client().and_then(|slot| {
        let limits = shared.config().logins.clone();
        let login = shared.logins.begin(peer.ip(), &limits)?;
        Ok(Admitted { peer, slot, login })
    });
    match admitted {
        Ok(a) => Some(a),
        Err(e) => {
            refuse(shared, stream, peer, door, &e);
            None
        }
    }
}

/// Runs a login under `[limits] client_login_timeout`. Either way it ends (logged in, refused,
/// timed out), the login stops counting as in progress. On timeout: what the client is told.
pub async fn timed_login<T>(
    shared: &Shared,
    permit: LoginPermit,
    login: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    let limit = shared.config().logins.client_login_timeout;
    let outcome = tokio::time::timeout(limit, login).await;
    drop(permit);
    outcome.map_err(|_| {
        format!(
            "poolguard: login not completed within {} (client_login_timeout)",
            crate::guard::fmt_duration(limit)
        )
    })
}

fn refuse(shared: &Shared, stream: &TcpStream, peer: SocketAddr, door: Door, e: &ProxyError) {
    let mut out = BytesMut::new();
    let (protocol, code) = match door {
        Door::Postgres => {
            crate::pg::login::write_error(&mut out, "FATAL", e);
            ("postgres", e.sqlstate().to_owned())
        }
        Door::Mysql => {
            crate::mysql::wire::err_before_greeting(&mut out, e, true);
            ("mysql", e.mysql_code(true).to_string())
        }
    };
    shared.observe.count_error(protocol, code);
    // debug, not warn: under a flood, a log line per refused socket would be a cost of its own;
    // poolguard_errors_total counts them.
    tracing::debug!(client = %peer, error = %e, "connection refused at accept");
    let _ = stream.try_write(&out);
    // What the client already sent (a startup packet, an SSLRequest) is read and dropped, so
    // the close is a FIN after our answer rather than a reset that could overtake it.
    let mut sink = [0u8; 512];
    let _ = stream.try_read(&mut sink);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> LoginLimits {
        LoginLimits {
            max_logins_in_progress: total,
            max_logins_per_address: per_address,
            ..LoginLimits::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_cap_leaves_other_addresses_alone() {
        let logins = Arc::new(Logins::default());
        let l = limits(10, 2);
        let a1 = logins.begin(ip("10.0.0.1"), &l).unwrap();
        let _a2 = logins.begin(ip("10.0.0.1"), &l).unwrap();
        let e = logins.begin(ip("10.0.0.1"), &l).unwrap_err();
        assert_eq!(e.sqlstate(), "53400");
        assert_eq!(e.mysql_code(true), 1203);
        assert!(e.to_string().contains("max_logins_per_address = 2"), "{e}");
        let _b = logins.begin(ip("10.0.0.2"), &l).unwrap();
        drop(a1);
        let _a3 = logins.begin(ip("10.0.0.1"), &l).unwrap();
        assert_eq!(logins.in_progress(), 3);
    }

    #[test]
    fn overall_cap_counts_every_address() {
        let logins = Arc::new(Logins::default());
        let l = limits(3, 3);
        let held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|a| logins.begin(ip(a), &l).unwrap())
            .collect();
        let e = logins.begin(ip("10.0.0.4"), &l).unwrap_err();
        assert!(e.to_string().contains("max_logins_in_progress = 3"), "{e}");
        drop(held);
        assert_eq!(logins.in_progress(), 0);
        assert!(lock(&logins.counts).per_address.is_empty(), "no entry kept");
        assert!(logins.begin(ip("10.0.0.4"), &l).is_ok());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let logins = Arc::new(Logins::default());
        let l = limits(10, 1);
        let _a = logins.begin(ip("2001:db8::1"), &l).unwrap();
        assert!(logins.begin(ip("2001:db8::ffff:2"), &l).is_err());
        assert!(logins.begin(ip("2001:db8:0:1::1"), &l).is_ok());
        let _v4 = logins.begin(ip("192.0.2.7"), &l).unwrap();
        assert!(logins.begin(ip("::ffff:192.0.2.7"), &l).is_err());
    }
}

#[cfg(test)]
mod socket_tests {
    //! The gate on real sockets: a refused one gets its error at once and is closed.

    use super::*;
    use tokio::io::AsyncReadExt;

    fn shared(per_address: usize) -> Arc<Shared> {
        let mut config = crate::config::Config::builtin_default("x");
        config.logins.max_logins_per_address = per_address;
        Shared::new(config)
    }

    async fn accepted(listener: &tokio::net::TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, server) = tokio::join!(client, listener.accept());
        (client.unwrap(), server.unwrap().0)
    }

    #[tokio::test]
    async fn refused_socket_gets_its_error_and_eof() {
        let shared = shared(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_c1, s1) = accepted(&listener).await;
        let peer = s1.peer_addr().unwrap();
        let first = admit(&shared, &s1, peer, Door::Postgres).expect("first admitted");
        assert_eq!(shared.client_count(), 1);

        let (mut c2, s2) = accepted(&listener).await;
        assert!(admit(&shared, &s2, s2.peer_addr().unwrap(), Door::Postgres).is_none());
        drop(s2);
        let mut answer = Vec::new();
        c2.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer.first(), Some(&b'E'), "an ErrorResponse");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.contains("C53400"), "{text}");
        assert!(text.contains("max_logins_per_address = 1"), "{text}");
        assert_eq!(shared.client_count(), 1, "the refused socket holds no slot");

        // The login ends: its place is free, the client slot stays until the client leaves.
        drop(first.login);
        assert_eq!(shared.logins.in_progress(), 0);
        let (_c3, s3) = accepted(&listener).await;
        let third = admit(&shared, &s3, s3.peer_addr().unwrap(), Door::Mysql);
        assert!(third.is_some());
        assert_eq!(shared.client_count(), 2);
    }

    #[tokio::test]
    async fn mysql_refusal_replaces_the_greeting() {
        let shared = shared(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (_c1, s1) = accepted(&listener).await;
        let _first = admit(&shared, &s1, s1.peer_addr().unwrap(), Door::Mysql).unwrap();
        let (mut c2, s2) = accepted(&listener).await;
        assert!(admit(&shared, &s2, s2.peer_addr().unwrap(), Door::Mysql).is_none());
        drop(s2);
        let mut answer = Vec::new();
        c2.read_to_end(&mut answer).await.unwrap();
        // Header (3 length bytes, sequence 0), then 0xff and the code, little-endian.
        assert_eq!(
            answer.get(3..7),
            Some(&[0u8, 0xff, 0xb3, 0x04][..]),
            "ERR 1203"
        );
    }
}
