//! Server -> client: routes each server message through [`Pending`](crate::pg::pending::Pending)
//! (forward, or swallow the answers to poolguard's own requests), inserts poolguard's own
//! answers in their place, and follows transaction status, COPY and parameter changes.
//!
//! The common case (nothing swallowed, nothing inserted) writes the received bytes to the client
//! in one call without copying them.

use bytes::{Buf, BytesMut};
use poolguard_pg::tags;
use tokio::time::Instant;

use super::{End, Session};
use crate::fault::Point;
use crate::pg::pending::{CacheEffect, Route};
use crate::pg::scan::{span, Step};

/// A failure that cannot happen while the scanner keeps its invariant; if it ever does, the
/// server is closed rather than trusted.
const LOST_PLACE: &str = "poolguard lost its place in the server's message stream";

/// Server messages whose body poolguard must see whole.
fn need_body(tag: u8) -> bool {
    matches!(
        tag,
        tags::backend::READY_FOR_QUERY
            | tags::backend::PARAMETER_STATUS
            | tags::backend::NOTIFICATION
            | tags::backend::ERROR_RESPONSE
    )
}

/// The server's prepared statements are out of date with the schema: a statement whose result
/// type changed (`ALTER TABLE ... TYPE`) fails on every execution until it is prepared again,
/// and poolguard shares statements between clients by text. Such a server is reset (DISCARD
/// ALL, every statement forgotten) before it serves again, and the pool's statement epoch moves
/// on, so the client's next prepare is planned afresh on whichever server it lands.
fn stale_statement(body: &[u8]) -> bool {
    poolguard_pg::backend::parse_error_notice(body).is_ok_and(|e| {
        (e.code == "0A000"
            && e.message
                .contains("cached plan must not change result type"))
            || (e.code == "XX000" && e.message.starts_with("cache lookup failed for type"))
    })
}

impl Session {
    /// Forwards what the server sent, tracking the conversation as it passes.
    pub(super) async fn pump_server(&mut self) -> Option<End> {
        let held = self.held.as_mut()?;
        let buf = std::mem::take(&mut held.lease.buf);
        // `copied` collects the output once anything deviates from plain forwarding; until
        // then `kept_from..pos` is the run of bytes still to forward as they are.
        let mut copied: Option<BytesMut> = None;
        let mut kept_from = 0;
        let mut pos = 0;
        let mut route = Route::Forward;
        let mut failure = None;
        loop {
            // Answers poolguard owes come before the next server message.
            let mut answers = BytesMut::new();
            self.take_synthetics(&mut answers);
            let held = self.held.as_mut()?;
            if !answers.is_empty() {
                let Some(run) = span(&buf, kept_from, pos) else {
                    failure = Some(LOST_PLACE.to_owned());
                    break;
                };
                let out = copied.get_or_insert_with(BytesMut::new);
                out.extend_from_slice(run);
                out.extend_from_slice(&answers);
                kept_from = pos;
            }
            let step = match held
                .scan
                .step(buf.get(pos..).unwrap_or_default(), need_body)
            {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(format!("malformed message from server: {e}"));
                    break;
                }
            };
            let len = step.len();
            if let Step::Whole { tag, .. } | Step::Head { tag, .. } = step {
                let mut fatal = false;
                if tag == tags::backend::ERROR_RESPONSE {
                    // The server may have skipped a Parse poolguard recorded as sent.
                    held.lease.unnamed.forget();
                    if let Step::Whole { body, .. } = step {
                        if self.transaction_mode && stale_statement(body) {
                            held.dirty = true;
                            self.entry.statements_went_stale();
                        }
                        fatal = poolguard_pg::backend::parse_error_notice(body)
                            .is_ok_and(|e| matches!(e.severity.as_str(), "FATAL" | "PANIC"));
                    }
                }
                // A FATAL the server sends with nothing asked of it (a backend terminated while
                // its client was idle, idle_session_timeout, a shutdown) is the client's to
                // see, as directly; the server closes after it.
                let routed = if fatal && held.pending.is_empty() {
                    Ok((Route::Forward, CacheEffect::None))
                } else {
                    held.pending.route(tag)
                };
                tracing::trace!(tag = %(tag as char), ?routed, "server message");
                match routed {
                    Ok((r, effect)) => {
                        route = r;
                        held.fatal_relayed |= fatal && route == Route::Forward;
                        match effect {
                            CacheEffect::Failed { server, client } => {
                                for n in server {
                                    held.lease.prepared.forget(&n);
                                }
                                for n in client {
                                    self.statements.remove(&n);
                                }
                            }
                            CacheEffect::Prepared(n) => self.entry.remember_statement(n),
                            CacheEffect::None => {}
                        }
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            match step {
                Step::Whole {
                    tag: tags::backend::READY_FOR_QUERY,
                    body,
                    ..
                } => {
                    // A status that is not exactly one of I/T/E says nothing about the
                    // transaction: the server is out of step, never taken for idle.
                    held.status = match poolguard_pg::backend::parse_ready_for_query(body) {
                        Ok(status) => status,
                        Err(e) => {
                            failure = Some(format!("malformed ReadyForQuery from server: {e}"));
                            break;
                        }
                    };
                    self.holder.note.set_state(if held.status == b'I' {
                        poolguard_pool::LeaseState::Idle
                    } else {
                        poolguard_pool::LeaseState::IdleInTransaction
                    });
                    held.copy_in = false;
                    let now = Instant::now();
                    held.idle_since = now;
                    if route == Route::Forward {
                        // The client's own batch ended (not one of poolguard's queries).
                        let idle = held.status == b'I';
                        self.clock.answered(&self.entry.traffic, idle, now);
                    }
                    held.busy_since = (!held.pending.is_empty()).then(Instant::now);
                    held.cancel_sent = false;
                    if held.status != b'I' && route == Route::Forward {
                        self.shared.faults.hit(Point::PgInTransaction);
                    }
                }
                Step::Whole {
                    tag: tags::backend::COPY_DATA,
                    ..
                }
                | Step::Head {
                    tag: tags::backend::COPY_DATA,
                    ..
                } => self.shared.faults.hit(Point::PgCopyOut),
                Step::Whole {
                    tag: tags::backend::PARAMETER_STATUS,
                    body,
                    ..
                } => {
                    held.lease.note_parameter_status(body);
                    if let Ok((k, v)) = poolguard_pg::backend::parse_parameter_status(body) {
                        if crate::pg::params::is_reported(k) {
                            if self.params.get(k) == Some(v) {
                                // As the server does, a value is reported only when it differs
                                // from what the client was last told (poolguard's own SETs
                                // bring a server to the client's values: nothing new for it).
                                route = Route::Swallow;
                            } else {
                                // However it came about, a new encoding means text may be
                                // read in another layout than the parameters say.
                                if k.eq_ignore_ascii_case("client_encoding") {
                                    self.encoding_changed.set(true);
                                }
                                // Copied only on a change: the set may be shared.
                                std::sync::Arc::make_mut(&mut self.params).set(k, v);
                            }
                        }
                    }
                }
                Step::Whole {
                    tag: tags::backend::COPY_IN | tags::backend::COPY_BOTH,
                    ..
                }
                | Step::Head {
                    tag: tags::backend::COPY_IN | tags::backend::COPY_BOTH,
                    ..
                } => held.copy_in = true,
                _ => {}
            }
            // A notification names the notifying server's process. Clients know each other
            // by the process ids in their BackendKeyData (poolguard's, where they could not be
            // the server's) and compare the two, to recognise their own NOTIFYs or another
            // client's: the sender becomes the pid its client was given.
            let own_notify = match step {
                Step::Whole {
                    tag: tags::backend::NOTIFICATION,
                    body,
                    ..
                } => body.split_first_chunk::<4>().and_then(|(pid, rest)| {
                    let pid = i32::from_be_bytes(*pid);
                    let sender = if pid == held.lease.key.0 {
                        self.registration.pid
                    } else {
                        self.shared.cancels.notifier(&held.lease.addr, pid)?
                    };
                    (sender != pid).then_some((sender, rest))
                }),
                _ => None,
            };
            if route == Route::Swallow || own_notify.is_some() {
                let Some(run) = span(&buf, kept_from, pos) else {
                    failure = Some(LOST_PLACE.to_owned());
                    break;
                };
                let out = copied.get_or_insert_with(BytesMut::new);
                out.extend_from_slice(run);
                kept_from = pos.saturating_add(len);
                if route != Route::Swallow {
                    if let Some((sender, rest)) = own_notify {
                        poolguard_pg::backend::notification(out, sender, rest);
                    }
                }
            }
            pos = pos.saturating_add(len);
        }
        // Steps never cover more than `buf`: the range is always there (else: fail closed).
        let run = span(&buf, kept_from, pos);
        if run.is_none() {
            failure = Some(LOST_PLACE.to_owned());
        }
        let run = run.unwrap_or_default();
        let write = match copied.as_mut() {
            None => {
                self.entry.traffic.sent(run.len());
                self.client.write_all(run).await
            }
            Some(out) => {
                out.extend_from_slice(run);
                self.entry.traffic.sent(out.len());
                self.client.write_all(out).await
            }
        };
        let held = self.held.as_mut()?;
        let mut buf = buf;
        buf.advance(pos.min(buf.len()));
        held.lease.buf = buf;
        if let Some(problem) = failure {
            tracing::warn!(server = %held.lease.addr, problem = %problem, "server protocol error");
            return Some(Box::pin(self.server_lost()).await);
        }
        if write.is_err() {
            return Some(End::ClientGone);
        }
        None
    }
}
