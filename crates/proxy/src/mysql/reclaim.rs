//! Bringing a server back from a client that is gone, was sent away, or changed user.
//!
//! The guarantee: a server goes back to the pool only between commands, outside any
//! transaction, and (when asked) with its session reset by COM_RESET_CONNECTION. Whatever the
//! client left open is rolled back, never committed: a statement still running is killed
//! (KILL QUERY on a side connection) and its response drained; a LOAD DATA LOCAL transfer in
//! progress, or long data sent for a statement not yet executed, is not completed on the
//! client's behalf: that server connection is closed instead, and the server aborts the work.
//! Every step is bounded by [`RECLAIM_TIMEOUT`]; a server that does not cooperate in time is
//! discarded.

use std::sync::Arc;
use std::time::Duration;

use poolguard_mysql::consts::{COM_QUERY, COM_RESET_CONNECTION};
use poolguard_mysql::Progress;
use tokio::io::AsyncReadExt;

use poolguard_pool::DiscardReason;

use crate::fault::{Faults, Point};
use crate::mysql::kill::{kill_query, ServerKey};
use crate::mysql::pools::MyPoolEntry;
use crate::mysql::session::{Held, Infile, Inflight};

pub const RECLAIM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub enum Reclaim {
    /// Roll back what is open, optionally COM_RESET_CONNECTION, and return the server.
    Clean { reset: bool },
    /// Close the server connection, for this reason.
    Discard(DiscardReason),
}

pub async fn reclaim(
    mut held: Box<Held>,
    inflight: Option<Inflight>,
    how: Reclaim,
    entry: &Arc<MyPoolEntry>,
    faults: &Faults,
) {
    let pool = entry.name();
    let server = held.lease.addr.clone();
    let reset = match how {
        Reclaim::Discard(why) => {
            tracing::info!(pool = %pool, %server, reason = %why, "discarding server connection");
            held.lease.discard(why);
            return;
        }
        Reclaim::Clean { reset } => reset,
    };
    let sending_file = inflight
        .as_ref()
        .is_some_and(|i| matches!(i.infile, Infile::ClientSending { .. }));
    if !held.long_data.is_empty() || sending_file {
        tracing::info!(pool = %pool, %server, "client left a LOAD DATA LOCAL transfer or long data unfinished; closing its server connection so nothing is completed on its behalf");
        held.lease.discard(DiscardReason::Unfinished);
        return;
    }
    let busy = inflight.is_some();
    let in_trans = held.in_transaction();
    match tokio::time::timeout(
        RECLAIM_TIMEOUT,
        clean(&mut held, inflight, reset, entry, faults),
    )
    .await
    {
        Ok(Ok(())) => {
            if busy || in_trans {
                tracing::info!(pool = %pool, %server, killed = busy, rolled_back = in_trans, "reclaimed the server connection a departed client left busy or in a transaction");
            }
            let proof = held.proof();
            held.lease.release(proof);
        }
        Ok(Err(e)) => {
            tracing::warn!(pool = %pool, %server, error = %e, "could not clean server connection; discarding it");
            held.lease.discard(DiscardReason::CleanupFailed);
        }
        Err(_) => {
            tracing::warn!(pool = %pool, %server, "server did not become idle in time; discarding it");
            held.lease.discard(DiscardReason::CleanupFailed);
        }
    }
}

async fn clean(
    held: &mut Held,
    inflight: Option<Inflight>,
    reset: bool,
    entry: &Arc<MyPoolEntry>,
    faults: &Faults,
) -> Result<(), String> {
    let was_busy = inflight.is_some();
    if let Some(mut inf) = inflight {
        if !inf.kill_sent {
            let key = ServerKey {
                entry: entry.clone(),
                host: held.lease.host.clone(),
                thread_id: held.lease.thread_id,
            };
            if let Err(e) = kill_query(&key).await {
                tracing::warn!(thread = key.thread_id, error = %e, "KILL QUERY while reclaiming failed; waiting for the statement");
            }
            inf.kill_sent = true;
        }
        drain(held, &mut inf).await?;
    }
    if was_busy || held.in_transaction() || !held.lease.state.autocommit {
        // Also learns the status after a statement that ended in an error.
        let mut payload = vec![COM_QUERY];
        payload.extend_from_slice(b"ROLLBACK");
        let r = held.lease.exec(&payload).await.map_err(|e| e.to_string())?;
        if let Some(err) = r.error {
            return Err(format!("ROLLBACK failed: {}", err.message));
        }
    }
    if reset {
        faults.hit(Point::MyReset);
        let r = held
            .lease
            .exec(&[COM_RESET_CONNECTION])
            .await
            .map_err(|e| e.to_string())?;
        if let Some(err) = r.error {
            return Err(format!("COM_RESET_CONNECTION failed: {}", err.message));
        }
        held.lease.state.after_reset();
        held.lease.stmts.clear();
    }
    if held.in_transaction() {
        return Err("server still in a transaction after ROLLBACK".into());
    }
    Ok(())
}

/// Reads and drops the rest of the response in flight.
async fn drain(held: &mut Held, inf: &mut Inflight) -> Result<(), String> {
    loop {
        while let Some(frame) = held
            .frames
            .decode(&mut held.lease.buf)
            .map_err(|e| e.to_string())?
        {
            match inf.tracker.feed_frame(&frame).map_err(|e| e.to_string())? {
                Progress::More => {}
                Progress::LocalInfileRequested => {
                    let empty = [0, 0, 0, frame.seq.wrapping_add(1)];
                    held.lease
                        .stream
                        .write_all(&empty)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Progress::AuthContinue => return Err("unexpected authentication request".into()),
                Progress::Done { status_flags, .. } => {
                    if let Some(s) = status_flags {
                        held.lease.note_status(s);
                    }
                    if !held.lease.buf.is_empty() {
                        return Err("server sent more than the response".into());
                    }
                    return Ok(());
                }
            }
        }
        held.lease.buf.reserve(16384);
        let lease = &mut *held.lease;
        match lease.stream.read_buf(&mut lease.buf).await {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}
