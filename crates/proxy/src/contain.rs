//! Containing a panic to the one client whose task raised it.
//!
//! Every client task (and every task that cleans a server up for one) runs inside
//! [`contain`]: a panic is caught at the task's edge, logged, and counted
//! (`poolguard_panics_total`); the process and every other client go on. What the panicking
//! task held is dropped while it unwinds, and each piece is built to fail closed then:
//! - its lease closes the server connection ([`poolguard_pool::DiscardReason::Panicked`]): the
//!   server rolls back whatever the client had open, nothing of it is committed, and no other
//!   client ever gets that connection;
//! - its [`ClientSocket`] writes the client one last error (SQLSTATE XX000 / MySQL 1105,
//!   "poolguard internal error", no details that could leak anything) before it closes, so
//!   the client is told plainly instead of seeing a connection reset.
//!
//! The panic's message and location are logged by the binary's panic hook (the `cli` crate);
//! this module only knows that a task ended in one.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;

use crate::error::ProxyError;
use crate::state::Shared;
use crate::stream::ClientStream;

/// The message a client gets when its task panicked: nothing about the cause (which might
/// carry another client's data or a secret), only what happened to its work.
pub const INTERNAL_ERROR: &str = "poolguard internal error: this connection is closed; the server rolled back any transaction it had open, and nothing uncommitted was committed";

/// Runs `task`, catching a panic at its edge: counted (`Observe::panics`) and logged with
/// `what` (which kind of task it was). The panic's message and location come from the hook.
pub fn contain<F>(
    task: F,
    what: &'static str,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send
where
    F: Future<Output = ()> + Send,
{
    Contained {
        task: Box::pin(task),
        what,
        shared,
    }
}

struct Contained<F> {
    task: Pin<Box<F>>,
    what: &'static str,
    shared: Arc<Shared>,
}

impl<F: Future<Output = ()>> Future for Contained<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let task = self.task.as_mut();
        // The task is never polled again after a panic (it is dropped with `self`), so no
        // broken invariant inside it can be observed: that is what makes this unwind-safe.
        match catch_unwind(AssertUnwindSafe(|| task.poll(cx))) {
            Ok(poll) => poll,
            Err(_) => {
                self.shared.observe.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(task = self.what, "a task panicked; it was stopped, its server connection closed and its client told (the panic's message and location are logged just before)");
                Poll::Ready(())
            }
        }
    }
}

/// Which protocol's error a client gets if its task panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Postgres,
    /// With the sequence id the client expects next.
    Mysql {
        seq: u8,
    },
}

/// A client's socket, which tells the client about a panic on its way out (see the module
/// docs). Dereferences to the [`ClientStream`].
pub struct ClientSocket {
    stream: ClientStream,
    reply: Reply,
}

impl ClientSocket {
    pub fn postgres(stream: ClientStream) -> Self {
        ClientSocket {
            stream,
            reply: Reply::Postgres,
        }
    }

    pub fn mysql(stream: ClientStream) -> Self {
        ClientSocket {
            stream,
            reply: Reply::Mysql { seq: 1 },
        }
    }

    /// MySQL: the sequence id an error would carry now (the command's plus one).
    pub fn expect_seq(&mut self, seq: u8) {
        if let Reply::Mysql { seq: s } = &mut self.reply {
            *s = seq;
        }
    }
}

impl Deref for ClientSocket {
    type Target = ClientStream;

    fn deref(&self) -> &ClientStream {
        &self.stream
    }
}

impl DerefMut for ClientSocket {
    fn deref_mut(&mut self) -> &mut ClientStream {
        &mut self.stream
    }
}

impl Drop for ClientSocket {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let e = ProxyError::Internal(INTERNAL_ERROR.into());
        let mut m = BytesMut::new();
        match self.reply {
            Reply::Postgres => crate::pg::login::write_error(&mut m, "FATAL", &e),
            Reply::Mysql { seq } => crate::mysql::wire::err_packet(&mut m, seq, &e, true),
        }
        // Best effort, without waiting: a few dozen bytes fit any socket buffer that is not
        // already full, and a client that stopped reading loses nothing it would have read.
        self.stream.write_now(&m);
    }
}
