//! The list of logged-in clients (both front doors, consoles too) that SHOW CLIENTS and the
//! dashboard read, and how KILL_CLIENT reaches a listed client's socket without a descriptor
//! of its own.
//!
//! A client costs one file descriptor, its session's, as in PgBouncer. Its entry keeps only
//! the *number* of that descriptor and the socket's cookie (`SO_COOKIE`: a 64-bit id the
//! kernel gives each socket once and never reuses while the machine runs), 16 bytes. KILL_CLIENT
//! shuts the socket down in both directions, so the session reads EOF and leaves by its
//! ordinary "client vanished" path (rollback, lease returned, slot freed). A number is not a
//! socket: once the session closes its descriptor, the kernel hands the same number to the
//! next socket opened (another client, a server connection), and shutting that down would
//! break a connection that has nothing to do with the one killed. Two guarantees keep that from
//! happening, the second one catching any path the first one missed:
//! 1. *Listed means open.* The entry is removed under the list's lock before the session's
//!    socket is closed, on every path: the entry belongs to the client's [`ClientSlot`], and
//!    each owner drops the slot before the socket (the sessions declare `_slot` before
//!    `client`, and struct fields drop in declaration order; the PostgreSQL console holds the
//!    slot in a local, which drops before the socket passed in as a parameter; the logins keep
//!    the slot in a value declared after the socket until the session takes both). A panic
//!    unwinds through the same drops, an idle client is parked with its whole session, and a
//!    binary upgrade hands over listening sockets only, never a client's. KILL_CLIENT looks
//!    the entry up and shuts the socket down under that same lock, so the descriptor cannot be
//!    closed, let alone reused, in between.
//! 2. *Same socket.* Before the shutdown, still under the lock, the descriptor's cookie is
//!    read and compared with the one recorded at login; a different cookie (or no socket at
//!    all) is refused and logged as the bug it would be. Without `SO_COOKIE` (not Linux) no
//!    client is reachable, rather than an unchecked one.
//!
//! Debug builds check guarantee 1 each time a client is unlisted (its socket must still be
//! open and carry its cookie) and abort if not, so every end-to-end test run checks it on
//! every path it takes.
//!
//! Rejected alternatives: a duplicate descriptor per client (what this replaced: two
//! descriptors per client, so a 20,000 limit stopped new clients near 10,000); a shared
//! handle to the socket (an allocation per client, and a change to every session's stream);
//! a wake-up the sessions poll for (a waiter per idle client, and a branch in the relay).
//!
//! The crate denies `unsafe` everywhere else. The exception is borrowing a listed descriptor
//! by its number (in [`ClientList::disconnect`], and in the debug check), sound by guarantee 1.

use std::collections::HashMap;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use poolguard_admin::model::ClientSnapshot;
use poolguard_pool::Holder;
use tokio::time::Instant;

use crate::lock;
use crate::state::ClientSlot;

/// The logged-in clients, by id (what SHOW CLIENTS calls `ptr`).
#[derive(Default)]
pub struct ClientList {
    /// Boxed entries: the table keeps slack (up to half its buckets empty after a growth),
    /// and a bucket is a pointer instead of a whole entry (about 140 B) for every client.
    entries: Mutex<HashMap<u64, Box<ClientEntry>>>,
    next: AtomicU64,
}

struct ClientEntry {
    protocol: &'static str,
    holder: Holder,
    /// The pool's name, shared with the pool (idle clients are many; the names are few).
    pool: Arc<str>,
    since: Instant,
    /// Where KILL_CLIENT finds the socket; `None` if its cookie could not be read at login.
    socket: Option<SocketRef>,
}

/// A client's socket as its entry knows it: the session's descriptor number, and the cookie
/// that tells whether that number still holds the same socket.
#[derive(Debug, Clone, Copy)]
struct SocketRef {
    fd: RawFd,
    cookie: NonZeroU64,
}

/// Why KILL_CLIENT did not shut a listed client's socket down.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreachable {
    /// The socket was already shut down (a second KILL_CLIENT, or the client is leaving).
    #[error("the connection is already shut down")]
    AlreadyClosing,
    /// Its cookie could not be read at login.
    #[error("its socket could not be identified at login")]
    Unidentified,
    /// The descriptor no longer holds the client's socket (a broken guarantee 1).
    #[error("its descriptor no longer holds its socket; nothing was touched")]
    NotItsSocket,
    #[error("{0}")]
    Io(io::Error),
}

impl ClientList {
    /// Lists a logged-in client until its slot drops. `socket` is the session's own: its
    /// owner must drop `slot` before closing it (guarantee 1 in the module docs).
    pub fn describe(
        &self,
        slot: &mut ClientSlot,
        protocol: &'static str,
        holder: &Holder,
        pool: Arc<str>,
        socket: Option<BorrowedFd<'_>>,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let socket = match socket.map(|fd| (fd, cookie(fd))) {
            Some((fd, Ok(cookie))) => Some(SocketRef {
                fd: fd.as_raw_fd(),
                cookie,
            }),
            None => {
                tracing::warn!(client = %holder.client, "the client has no socket: KILL_CLIENT will not reach this client");
                None
            }
            Some((_, Err(e))) => {
                tracing::warn!(client = %holder.client, error = %e, "cannot read the client socket's cookie: KILL_CLIENT will not reach this client");
                None
            }
        };
        let entry = ClientEntry {
            protocol,
            holder: holder.clone(),
            pool,
            since: Instant::now(),
            socket,
        };
        lock(&self.entries).insert(id, Box::new(entry));
        slot.observed = NonZeroU64::new(id);
    }

    /// A listed client is now `holder` in `pool` (MySQL's COM_CHANGE_USER).
    pub(crate) fn rename(&self, slot: &ClientSlot, holder: &Holder, pool: Arc<str>) {
        let Some(id) = slot.observed else { return };
        if let Some(entry) = lock(&self.entries).get_mut(&id.get()) {
            entry.holder = holder.clone();
            entry.pool = pool;
        }
    }

    /// The client's socket was closed while it is still listed: moving a resting client in or
    /// out of tokio's reactor failed (an `epoll_ctl` error: no memory, or the watch limit), and
    /// tokio's conversion closes the socket it is given. Its session ends next; until then
    /// KILL_CLIENT answers that it cannot be identified instead of looking at a number another
    /// socket may have got (the cookie check, guarantee 2, refuses that too), and the departure
    /// check does not mistake this for a broken guarantee 1.
    pub(crate) fn detach(&self, slot: &ClientSlot) {
        let Some(id) = slot.observed else { return };
        if let Some(entry) = lock(&self.entries).get_mut(&id.get()) {
            entry.socket = None;
        }
    }

    /// Unlists a client: its slot drops, before its socket closes.
    pub(crate) fn forget(&self, id: u64) {
        let entry = lock(&self.entries).remove(&id);
        // Debug builds (every end-to-end test runs one) check guarantee 1 on every departure:
        // the socket must still be open, and still the client's.
        #[cfg(debug_assertions)]
        if let Some(s) = entry.and_then(|e| e.socket) {
            // SAFETY: by guarantee 1 the descriptor is open: the session dropping this slot owns
            // it and closes it only after this returns. A broken guarantee is what is checked,
            // and reading a cookie harms no descriptor.
            #[allow(unsafe_code)]
            let fd = unsafe { BorrowedFd::borrow_raw(s.fd) };
            let now = cookie(fd).ok();
            if now != Some(s.cookie) {
                broken_guarantee(id, s, now);
            }
        }
        #[cfg(not(debug_assertions))]
        drop(entry);
    }

    /// Shuts a listed client's socket down in both directions: its session reads EOF and ends
    /// as if the client had left. `None` if no client has this id; otherwise the client's
    /// protocol and holder, and whether its socket was shut down. The entry stays until the
    /// session drops its slot.
    pub(crate) fn disconnect(
        &self,
        id: u64,
    ) -> Option<(&'static str, Holder, Result<(), Unreachable>)> {
        let entries = lock(&self.entries);
        let c = entries.get(&id)?;
        let done = match c.socket {
            None => Err(Unreachable::Unidentified),
            Some(s) => {
                // SAFETY: `BorrowedFd::borrow_raw` needs the descriptor open for as long as the
                // borrow lives. The entry is listed and `entries` is locked until after the
                // shutdown: the session removes the entry under this lock before its socket is
                // closed (guarantee 1 in the module docs), so the descriptor is open and the
                // session's until the lock is released.
                #[allow(unsafe_code)]
                let fd = unsafe { BorrowedFd::borrow_raw(s.fd) };
                shut_down(fd, s.cookie)
            }
        };
        if let Err(e @ Unreachable::NotItsSocket) = &done {
            tracing::error!(id, fd = ?c.socket.map(|s| s.fd), client = %c.holder.client, error = %e, "KILL_CLIENT found another socket under a listed client's descriptor (a bug: the entry outlived the socket)");
        }
        Some((c.protocol, c.holder.clone(), done))
    }

    /// Every listed client, for the admin side's snapshot.
    pub(crate) fn snapshot(&self, now: Instant) -> Vec<ClientSnapshot> {
        lock(&self.entries)
            .iter()
            .map(|(id, c)| ClientSnapshot {
                id: *id,
                protocol: c.protocol.to_owned(),
                client: c.holder.client.to_string(),
                user: c.holder.user.to_string(),
                database: c.holder.database.to_string(),
                application: c.holder.application.to_string(),
                pool: c.pool.to_string(),
                state: c.holder.note.state().as_str().to_owned(),
                connected_seconds: now.saturating_duration_since(c.since).as_secs_f64(),
                statements: c.holder.note.statements(),
                pinned: c.holder.note.pinned().unwrap_or_default().to_owned(),
            })
            .collect()
    }
}

/// A client was unlisted after its socket closed (debug builds only). The process aborts: caught
/// as one client's panic ([`crate::contain`]), it would pass every end-to-end test unseen.
/// Unit tests get the panic, to check that it comes.
#[cfg(debug_assertions)]
fn broken_guarantee(id: u64, s: SocketRef, now: Option<NonZeroU64>) {
    let what = format!("client {id} unlisted after its socket closed (descriptor {} holds cookie {now:?}, not {}): KILL_CLIENT could have reached another connection", s.fd, s.cookie);
    if cfg!(test) {
        panic!("{what}");
    }
    tracing::error!("{what}");
    std::process::abort();
}

/// Shuts `fd` down both ways if it is still the socket with this cookie (guarantee 2).
fn shut_down(fd: BorrowedFd<'_>, expected: NonZeroU64) -> Result<(), Unreachable> {
    match cookie(fd) {
        Ok(c) if c == expected => {}
        // Not a socket at all (EBADF, ENOTSOCK) is another descriptor as much as another cookie.
        _ => return Err(Unreachable::NotItsSocket),
    }
    match rustix::net::shutdown(fd, rustix::net::Shutdown::Both) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::NOTCONN) => Err(Unreachable::AlreadyClosing),
        Err(e) => Err(Unreachable::Io(e.into())),
    }
}

/// The socket's cookie (`SO_COOKIE`, Linux 4.12 and later).
#[cfg(target_os = "linux")]
fn cookie(fd: BorrowedFd<'_>) -> io::Result<NonZeroU64> {
    let c = rustix::net::sockopt::socket_cookie(fd)?;
    NonZeroU64::new(c).ok_or_else(|| io::Error::other("the kernel gave the socket cookie 0"))
}

/// Without socket cookies a descriptor cannot be checked (guarantee 2), so no client is
/// reachable: KILL_CLIENT answers so rather than risk another socket.
#[cfg(not(target_os = "linux"))]
fn cookie(_: BorrowedFd<'_>) -> io::Result<NonZeroU64> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "socket cookies (SO_COOKIE) are Linux-only",
    ))
}

#[cfg(test)]
mod tests {
    //! Against real sockets: a kill reaches the listed socket and only it, including when the
    //! listed descriptor number has been made to hold another socket.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, OwnedFd};

    use super::*;
    use crate::config::Config;
    use crate::state::Shared;

    /// A connected pair: (the peer's end, poolguard's end).
    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        (peer, ours)
    }

    fn holder(client: &str) -> Holder {
        Holder::new(client.into(), "u".into(), "d".into(), "".into())
    }

    /// Lists `socket` as a new client; its id and slot.
    fn listed(shared: &Arc<Shared>, socket: impl AsFd) -> (u64, ClientSlot) {
        let mut slot = shared.admit_client().unwrap();
        let list = &shared.observe.clients;
        list.describe(
            &mut slot,
            "postgres",
            &holder("a"),
            "p".into(),
            Some(socket.as_fd()),
        );
        (slot.observed.unwrap().get(), slot)
    }

    /// The peer reads EOF (its socket was shut down), not a timeout.
    fn sees_eof(peer: &mut TcpStream) -> bool {
        peer.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        matches!(peer.read(&mut [0u8; 8]), Ok(0))
    }

    /// The connection still carries bytes both ways.
    fn still_open(peer: &mut TcpStream, ours: &mut TcpStream) -> bool {
        let mut got = [0u8; 4];
        peer.write_all(b"ping").is_ok()
            && ours.read_exact(&mut got).is_ok()
            && &got == b"ping"
            && ours.write_all(b"pong").is_ok()
            && peer.read_exact(&mut got).is_ok()
            && &got == b"pong"
    }

    #[test]
    fn a_renamed_client_is_listed_under_its_new_names() {
        let shared = Shared::new(Config::builtin_default("pw"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (_peer, ours) = pair(&listener);
        let (_, slot) = listed(&shared, &ours);
        let list = &shared.observe.clients;
        let renamed = Holder::new("a".into(), "u2".into(), "d2".into(), "".into());
        list.rename(&slot, &renamed, "p2".into());
        let rows = list.snapshot(Instant::now());
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(
            (&*row.user, &*row.database, &*row.pool, &*row.client),
            ("u2", "d2", "p2", "a")
        );
    }

    #[test]
    fn kill_shuts_the_listed_socket_down_once() {
        let shared = Shared::new(Config::builtin_default("pw"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut peer, ours) = pair(&listener);
        let (id, slot) = listed(&shared, &ours);
        let list = &shared.observe.clients;
        let (protocol, who, done) = list.disconnect(id).expect("listed");
        assert_eq!((protocol, &*who.client), ("postgres", "a"));
        assert!(done.is_ok(), "{done:?}");
        assert!(sees_eof(&mut peer));
        // A second kill finds the same socket, already shut down: harmless either way.
        let again = list
            .disconnect(id)
            .expect("still listed until the slot drops")
            .2;
        assert!(
            matches!(again, Ok(()) | Err(Unreachable::AlreadyClosing)),
            "{again:?}"
        );
        drop(slot);
        assert!(list.disconnect(id).is_none(), "forgotten with its slot");
        assert_eq!(list.snapshot(Instant::now()).len(), 0);
    }

    #[test]
    fn a_reused_descriptor_number_is_not_shut_down() {
        let shared = Shared::new(Config::builtin_default("pw"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (_gone_peer, gone) = pair(&listener);
        let (id, mut slot) = listed(&shared, &gone);
        // Breaks guarantee 1 on purpose: the listed number now holds another connection's
        // socket (dup2 closes the listed socket and reuses its number in one step, so no other
        // thread of the test process can take the number in between).
        let (mut other_peer, other) = pair(&listener);
        let mut number = OwnedFd::from(gone);
        rustix::io::dup2(&other, &mut number).unwrap();
        let (_, _, done) = shared.observe.clients.disconnect(id).expect("listed");
        assert!(matches!(done, Err(Unreachable::NotItsSocket)), "{done:?}");
        let mut other_at_number = TcpStream::from(number);
        assert!(
            still_open(&mut other_peer, &mut other_at_number),
            "the other connection was not touched"
        );
        drop(other);
        // The entry stays with the list: its slot would fail the debug check below, rightly.
        slot.observed = None;
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "unlisted after its socket closed")]
    fn debug_builds_catch_a_socket_closed_before_its_client_is_unlisted() {
        let shared = Shared::new(Config::builtin_default("pw"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (_peer, ours) = pair(&listener);
        let (_, slot) = listed(&shared, &ours);
        drop(ours);
        drop(slot);
    }
}
