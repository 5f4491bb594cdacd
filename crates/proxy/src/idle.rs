//! What a connected client costs while it does nothing, for both front doors.
//!
//! A client's task keeps its future for as long as the client is connected, and a future is
//! as large as its largest await point. So the sessions are built in layers: the login runs
//! boxed and is gone once the session starts ([`serve`]); the session is itself a `Box` (an
//! `async fn` keeps a by-value `self` twice in its state); and the relay's state, kilobytes of
//! reads, writes, acquires and resets, lives in a box only while the client is busy. Between
//! transactions the task waits in [`wait`], holding no buffer.
//!
//! Invariant: an idle client costs its session record and a few hundred bytes of task; the
//! footprint test in `lib.rs` fails if a client's task grows past 1 KiB again.

use std::future::Future;
use std::pin::Pin;

use tokio::time::Instant;

use crate::stream::ClientStream;

/// Runs a client: `open` (the login, boxed by the caller so that its state does not size the
/// task; an argument by value would be kept in this future's state) and, if it yields a
/// session, `run` on it.
pub async fn serve<S, R: Future<Output = ()>>(
    open: Pin<Box<impl Future<Output = Option<Box<S>>>>>,
    run: impl FnOnce(Box<S>) -> R,
) {
    if let Some(session) = open.await {
        run(session).await;
    }
}

/// Waits while a client is idle: until it has something to read (data, close or error; the
/// relay reads it and sees which; on TLS, plaintext rustls already holds counts too), its
/// `deadline` passes, or `also` completes.
pub async fn wait(
    client: &mut ClientStream,
    deadline: Option<Instant>,
    also: impl Future<Output = ()>,
) {
    tokio::select! {
        _ = client.wait_readable() => {}
        _ = async {
            match deadline {
                // Boxed: a timer is over a hundred bytes, and most idle clients have no
                // deadline (only `client_idle_timeout` gives them one); laid out inline it
                // would sit in every client's task.
                Some(d) => Box::pin(tokio::time::sleep_until(d)).await,
                None => std::future::pending().await,
            }
        } => {}
        _ = also => {}
    }
}
