//! Bringing a server back from a client that is gone or was sent away.
//!
//! The guarantee: a server goes back to the pool only idle, outside any transaction, and (when
//! asked) with its session state reset. Whatever the client left open is rolled back, never
//! committed: an extended-protocol batch without its Sync is not completed by us (a Sync would
//! commit its implicit transaction), so such a server is discarded instead and the server aborts
//! the work when the connection closes. Every step is bounded by [`RECLAIM_TIMEOUT`]; a server
//! that does not cooperate in time is discarded too.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use poolguard_pg::{backend, tags};

use poolguard_pool::DiscardReason;

use crate::fault::{Faults, Point};
use crate::pg::cancel::send_cancel;
use crate::pg::pending::Expect;
use crate::pg::scan::Step;
use crate::pg::server::{copy_fail, ServerError};
use crate::pg::session::Held;

pub const RECLAIM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub enum Reclaim {
    /// Roll back what is open, optionally DISCARD ALL, and return the server to the pool.
    Clean { reset: bool },
    /// Close the server connection, for this reason.
    Discard(DiscardReason),
}

pub async fn reclaim(mut held: Box<Held>, how: Reclaim, pool: &str, faults: &Faults) {
    let reset = match how {
        Reclaim::Discard(why) => {
            tracing::info!(pool, server = %held.lease.addr, reason = %why, "discarding server connection");
            held.lease.discard(why);
            return;
        }
        Reclaim::Clean { reset } => reset,
    };
    if held.unsynced {
        tracing::info!(pool, server = %held.lease.addr, "client left an unfinished extended-protocol batch; discarding its server connection so nothing is committed");
        held.lease.discard(DiscardReason::Unfinished);
        return;
    }
    let rolled_back = held.status != b'I' || held.busy();
    match tokio::time::timeout(RECLAIM_TIMEOUT, clean(&mut held, reset, faults)).await {
        Ok(Ok(())) => {
            if rolled_back {
                tracing::info!(pool, server = %held.lease.addr, "rolled back the transaction a departed client left open");
            }
            // The client side is gone: only the server's side can be out of step.
            let proof = held.proof(true);
            held.lease.release(proof);
        }
        Ok(Err(e)) => {
            tracing::warn!(pool, error = %e, "could not clean server connection; discarding it");
            held.lease.discard(DiscardReason::CleanupFailed);
        }
        Err(_) => {
            tracing::warn!(pool, "server did not become idle in time; discarding it");
            held.lease.discard(DiscardReason::CleanupFailed);
        }
    }
}

async fn clean(held: &mut Held, reset: bool, faults: &Faults) -> Result<(), ServerError> {
    if held.busy() {
        if held.copy_in {
            let mut m = BytesMut::new();
            copy_fail(&mut m, "poolguard: client disconnected during COPY");
            held.lease.stream.write_all(&m).await?;
            held.copy_in = false;
            held.pending.push(Expect::CopyEnd);
        } else {
            send_cancel(&held.lease.cancel_key()).await?;
        }
        drain(held).await?;
        if held.pending.server_skipping() {
            // An error (the CopyFail above, say) left the server skipping to a Sync the client
            // never sent. A Sync after an error commits nothing: the batch already failed.
            let mut m = BytesMut::new();
            poolguard_pg::frontend::sync(&mut m);
            held.lease.stream.write_all(&m).await?;
            held.pending.push(Expect::Sync);
            drain(held).await?;
        }
    }
    if held.status != b'I' {
        let (_, status) = held.lease.simple_query("ROLLBACK").await?;
        held.status = status;
    }
    if reset {
        faults.hit(Point::PgReset);
        let (_, status) = held.lease.simple_query("DISCARD ALL").await?;
        held.status = status;
        held.lease.forget_session_state();
        held.dirty = false;
    }
    if held.status != b'I' {
        return Err(ServerError::Io(std::io::Error::other(
            "server still in a transaction after ROLLBACK",
        )));
    }
    Ok(())
}

/// Reads and drops server output until every request sent has been answered.
async fn drain(held: &mut Held) -> Result<(), ServerError> {
    use tokio::io::AsyncReadExt;
    let broken = |e: String| ServerError::Io(std::io::Error::other(e));
    loop {
        let mut pos = 0;
        let mut copy_in = false;
        let buf = std::mem::take(&mut held.lease.buf);
        let need =
            |t: u8| t == tags::backend::READY_FOR_QUERY || t == tags::backend::PARAMETER_STATUS;
        while held.pending.take_synthetic().is_some() {}
        while let Some(step) = held
            .scan
            .step(buf.get(pos..).unwrap_or_default(), need)
            .map_err(|e| broken(e.to_string()))?
        {
            let (tag, body): (Option<u8>, &[u8]) = match &step {
                Step::Whole { tag, body, .. } => (Some(*tag), body),
                Step::Head { tag, .. } => (Some(*tag), &[]),
                Step::Rest { .. } => (None, &[]),
            };
            if let Some(tag) = tag {
                held.pending.route(tag).map_err(|e| broken(e.to_string()))?;
                match tag {
                    tags::backend::READY_FOR_QUERY => {
                        held.status = backend::parse_ready_for_query(body).unwrap_or(b'E')
                    }
                    tags::backend::PARAMETER_STATUS => held.lease.note_parameter_status(body),
                    tags::backend::COPY_IN | tags::backend::COPY_BOTH => copy_in = true,
                    _ => {}
                }
            }
            while held.pending.take_synthetic().is_some() {}
            pos = pos.saturating_add(step.len());
        }
        let mut buf = buf;
        buf.advance(pos.min(buf.len()));
        held.lease.buf = buf;
        if copy_in {
            let mut m = BytesMut::new();
            copy_fail(&mut m, "poolguard: client disconnected during COPY");
            held.lease.stream.write_all(&m).await?;
            held.pending.push(Expect::CopyEnd);
        }
        if held.pending.is_empty() {
            return Ok(());
        }
        held.lease.buf.reserve(8192);
        let lease = &mut *held.lease;
        if lease.stream.read_buf(&mut lease.buf).await? == 0 {
            return Err(ServerError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}
