//! Client -> server: acquiring a server when a transaction starts, and forwarding the client's
//! messages, rewritten where transaction pooling needs it.
//!
//! Untouched: simple queries, unnamed statements and portals, Execute, Sync, Flush, COPY data,
//! FunctionCall. Rewritten in transaction mode: Parse/Bind/Describe of named statements (renamed
//! to poolguard's server-side names, prepared on the server first when it lacks them) and Close
//! of named statements (answered by poolguard; the server keeps the statement for others).
//! Each forwarded request is recorded in [`Pending`](crate::pg::pending::Pending).

use bytes::{Buf, BytesMut};
use poolguard_pg::{backend, frontend, tags};

use super::statement_sql::{deallocate_target, execute_target, execute_text};
use super::{Acquired, End, Held, Session};
use crate::config::front::DEFAULT_MAX_CLIENT_PREPARED_STATEMENTS;
use crate::error::ProxyError;
use crate::pg::features::{Findings, TrackedSet};
use crate::pg::login::write_error;
use crate::pg::pending::Expect;
use crate::pg::prepared::{too_many_statements, Statement};
use crate::pg::scan::{client_message_error, span, Step};

/// Client messages whose body poolguard must see whole.
fn need_body(tag: u8) -> bool {
    use tags::frontend::*;
    matches!(tag, QUERY | PARSE | BIND | DESCRIBE | CLOSE)
}

/// What to do with one client message.
enum Action {
    /// Forward the bytes as they are.
    Pass,
    /// The rewritten form was written to `out`.
    Rewritten,
    /// Answered or dropped by poolguard; nothing reaches the server.
    Absorbed,
    /// Refuse this statement: drop through the sync point (unless this message is one), then
    /// report.
    Refuse { error: ProxyError, sync_point: bool },
}

impl Session {
    /// Forwards buffered client messages, acquiring a server first if needed.
    pub(super) async fn pump_client(&mut self) -> Option<End> {
        loop {
            if self.cbuf.is_empty() {
                return None;
            }
            if self.skipping.is_some() {
                match Box::pin(self.skip_to_sync()).await {
                    Ok(true) => continue,
                    Ok(false) => return None,
                    Err(end) => return Some(end),
                }
            }
            if self.held.is_none() {
                let &[first, ..] = self.cbuf.first_chunk::<5>()?;
                if first == tags::frontend::TERMINATE {
                    return Some(End::Terminate);
                }
                // An oversized message is refused at its header, before it costs a server.
                if let Err(e) = self.cscan.check_header(&self.cbuf) {
                    return Some(End::Kicked(client_message_error(e)));
                }
                // Only a Parse may be answered locally: anything else skips the boxed future
                // (an allocation) that keeps the rare path out of the relay's own.
                if first == tags::frontend::PARSE {
                    match Box::pin(self.answer_prepare_locally()).await {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(end) => return Some(end),
                    }
                }
                let acquired = match self.try_acquire_now() {
                    Acquired::Leased => Ok(()),
                    Acquired::Start(held) => Box::pin(self.start_lease(held)).await,
                    Acquired::Wait => Box::pin(self.acquire()).await,
                };
                if let Err(e) = acquired {
                    tracing::warn!(client = %self.holder.client, code = e.sqlstate(), error = %e, "acquire failed");
                    if matches!(e, ProxyError::ShuttingDown(_)) {
                        return Some(End::Kicked(e));
                    }
                    // Boxed: rare (see `refuse`).
                    if let Err(end) = Box::pin(self.begin_refusal(e)).await {
                        return Some(end);
                    }
                    continue;
                }
            }
            match self.forward_client().await {
                Ok(true) => continue, // a refusal started; handle the rest of the buffer
                Ok(false) => return None,
                Err(end) => return Some(end),
            }
        }
    }

    /// Drops client messages through the next Sync/Query/FunctionCall; then reports the error
    /// that caused the skip. Returns whether the sync point was reached.
    async fn skip_to_sync(&mut self) -> Result<bool, End> {
        let mut pos = 0;
        let mut reached = false;
        loop {
            let rest = self.cbuf.get(pos..).unwrap_or_default();
            let step = match self.cscan.step(rest, |_| false) {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => return Err(End::Kicked(client_message_error(e))),
            };
            let tag = match step {
                Step::Whole { tag, .. } => Some(tag),
                _ => None,
            };
            pos = pos.saturating_add(step.len());
            if tag == Some(tags::frontend::TERMINATE) {
                return Err(End::Terminate);
            }
            if matches!(
                tag,
                Some(tags::frontend::SYNC | tags::frontend::QUERY | tags::frontend::FUNCTION_CALL)
            ) {
                reached = true;
                break;
            }
        }
        self.cbuf.advance(pos.min(self.cbuf.len()));
        if reached {
            if let Some(r) = self.skipping.take() {
                let status = self.held.as_ref().map_or(b'I', |h| h.status);
                let mut m = BytesMut::new();
                if !r.reported {
                    write_error(&mut m, "ERROR", &r.error);
                }
                backend::ready_for_query(&mut m, status);
                self.entry.traffic.sent(m.len());
                if self.client.write_all(&m).await.is_err() {
                    return Err(End::ClientGone);
                }
            }
        }
        Ok(reached)
    }

    /// Forwards what is buffered. Returns true if a refusal began (the caller continues with
    /// skipping), false when the buffer is drained as far as it can be.
    async fn forward_client(&mut self) -> Result<bool, End> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        // The buffer is taken out of `self` so message bodies can be borrowed from it while
        // the session is updated.
        let cbuf = std::mem::take(&mut self.cbuf);
        let mut pos = 0;
        let mut terminate = false;
        let mut failure = None;
        let mut refusal = None;
        // Test builds: COPY data went to the server in this write (see `fault`).
        let mut copy_data = false;
        loop {
            let step = match self
                .cscan
                .step(cbuf.get(pos..).unwrap_or_default(), need_body)
            {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(client_message_error(e));
                    break;
                }
            };
            let len = step.len();
            if let Step::Whole { tag, .. } | Step::Head { tag, .. } = step {
                copy_data |= tag == tags::frontend::COPY_DATA;
            }
            let action = match step {
                Step::Whole {
                    tag: tags::frontend::TERMINATE,
                    ..
                } => {
                    terminate = true;
                    break;
                }
                Step::Whole { tag, body, .. } => {
                    match self.on_client_message(tag, body, &mut out) {
                        Ok(a) => a,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                Step::Head { tag, .. } => {
                    self.note_streamed(tag);
                    Action::Pass
                }
                Step::Rest { .. } => Action::Pass,
            };
            let end = pos.saturating_add(len);
            match action {
                Action::Pass => match span(&cbuf, pos, end) {
                    Some(bytes) => out.extend_from_slice(bytes),
                    None => {
                        // Cannot happen while the scanner keeps its invariant; fail closed.
                        failure = Some(ProxyError::Protocol(
                            "poolguard lost its place in the client's message stream".into(),
                        ));
                        break;
                    }
                },
                Action::Rewritten | Action::Absorbed => {}
                Action::Refuse { error, sync_point } => {
                    pos = end;
                    refusal = Some((error, sync_point));
                    break;
                }
            }
            pos = end;
        }
        let mut cbuf = cbuf;
        cbuf.advance(pos.min(cbuf.len()));
        // Bytes that arrived meanwhile cannot exist (no reads happen here); restore the buffer.
        self.cbuf = cbuf;
        let result = self.send_to_server(&out).await;
        self.out = out;
        result?;
        if copy_data {
            self.shared.faults.hit(crate::fault::Point::PgCopyIn);
        }
        if self.held.as_ref().is_some_and(|h| h.unsynced) {
            self.shared.faults.hit(crate::fault::Point::PgExtendedBatch);
        }
        if let Some(e) = failure {
            return Err(End::Kicked(e));
        }
        if terminate {
            return Err(End::Terminate);
        }
        if let Some((e, sync_point)) = refusal {
            // Boxed: rare, and every statement's future would otherwise be sized for it.
            return Box::pin(self.refuse(e, sync_point)).await;
        }
        Ok(false)
    }

    /// A statement refused in `forward_client`: a simple Query (its own sync point) is answered
    /// at once; otherwise the rest of its batch is skipped first.
    async fn refuse(&mut self, e: ProxyError, sync_point: bool) -> Result<bool, End> {
        if sync_point {
            let status = self.held.as_ref().map_or(b'I', |h| h.status);
            let mut m = BytesMut::new();
            write_error(&mut m, "ERROR", &e);
            backend::ready_for_query(&mut m, status);
            self.entry.traffic.sent(m.len());
            if self.client.write_all(&m).await.is_err() {
                return Err(End::ClientGone);
            }
            return Ok(false);
        }
        self.begin_refusal(e).await?;
        Ok(true)
    }

    /// Starts skipping the client's batch after a refusal; reports the error at once when the
    /// server owes the client nothing from earlier in the batch (see [`super::Refusal`]).
    async fn begin_refusal(&mut self, error: ProxyError) -> Result<(), End> {
        let owed = self
            .held
            .as_ref()
            .is_some_and(|h| !h.pending.only_injected());
        let reported = !owed;
        if reported {
            let mut m = BytesMut::new();
            write_error(&mut m, "ERROR", &error);
            self.entry.traffic.sent(m.len());
            if self.client.write_all(&m).await.is_err() {
                return Err(End::ClientGone);
            }
        }
        self.skipping = Some(Box::new(super::Refusal { error, reported }));
        Ok(())
    }

    /// Writes rewritten requests to the server, then any answers poolguard owes the client.
    async fn send_to_server(&mut self, out: &BytesMut) -> Result<(), End> {
        if !out.is_empty() {
            let Some(held) = self.held.as_mut() else {
                return Ok(());
            };
            if let Err(e) = held.lease.stream.write_all(out).await {
                tracing::warn!(error = %e, "write to server failed");
                return Err(Box::pin(self.server_lost()).await);
            }
        }
        let mut answers = BytesMut::new();
        self.take_synthetics(&mut answers);
        if !answers.is_empty() {
            self.entry.traffic.sent(answers.len());
            if self.client.write_all(&answers).await.is_err() {
                return Err(End::ClientGone);
            }
        }
        Ok(())
    }

    /// Bookkeeping for a long message streamed through without its body.
    fn note_streamed(&mut self, tag: u8) {
        let Some(held) = self.held.as_mut() else {
            return;
        };
        match tag {
            tags::frontend::FUNCTION_CALL => {
                self.clock.request_sent();
                push_ready(held, Expect::FunctionCall);
                // The function is named by number (set_config among them): reset after.
                held.dirty |= self.transaction_mode;
            }
            tags::frontend::EXECUTE => {
                self.clock.query(&self.entry.traffic);
                held.unsynced = true;
                held.pending.push(Expect::Execute);
            }
            tags::frontend::COPY_DATA => {}
            _ => held.unsynced = true,
        }
    }

    fn on_client_message(
        &mut self,
        tag: u8,
        body: &[u8],
        out: &mut BytesMut,
    ) -> Result<Action, ProxyError> {
        use tags::frontend::*;
        tracing::trace!(tag = %(tag as char), "client message");
        let batch_start = out.is_empty()
            && self
                .held
                .as_ref()
                .is_some_and(|h| h.pending.only_injected() && !h.unsynced);
        match tag {
            QUERY => {
                let sql = frontend::parse_query(body)
                    .map_err(|e| ProxyError::Protocol(format!("invalid Query message: {e}")))?;
                self.holder.note.statement_bytes(sql);
                if self.transaction_mode {
                    let findings = self.scan(sql, true);
                    if let Some(stmt) = deallocate_target(sql) {
                        if self.statements.remove(stmt) {
                            let held = self.held_mut()?;
                            held.pending.push(Expect::SyntheticDeallocate);
                            return Ok(Action::Absorbed);
                        }
                    }
                    if let Some(error) = self.apply_findings(&findings, batch_start) {
                        return Ok(Action::Refuse {
                            error,
                            sync_point: true,
                        });
                    }
                    if let Some((stmt, rest)) = self.executed_statement(sql) {
                        self.clock.query(&self.entry.traffic);
                        self.clock.request_sent();
                        let held = self.held_mut()?;
                        held.lease.unnamed.forget();
                        let idle = held.pending.is_empty();
                        ensure_prepared(held, &stmt, out);
                        frontend::query(out, execute_text(&stmt, rest));
                        if idle {
                            held.busy_since = Some(tokio::time::Instant::now());
                            held.cancel_sent = false;
                        }
                        held.pending.push(Expect::Query);
                        return Ok(Action::Rewritten);
                    }
                } else if crate::pg::features::may_drop_database(sql) {
                    // Session mode: only what poolguard itself must act on (its idle
                    // connections to a database being dropped).
                    let findings = self.scan(sql, false);
                    if let Some(db) = &findings.drops_database {
                        self.shared.let_go_of_database(db);
                    }
                }
                self.clock.query(&self.entry.traffic);
                self.clock.request_sent();
                let held = self.held_mut()?;
                // A simple query destroys the server's unnamed statement.
                held.lease.unnamed.forget();
                push_ready(held, Expect::Query);
                Ok(Action::Pass)
            }
            PARSE => self.on_parse(body, out, batch_start),
            BIND => {
                let (head, rest) = frontend::split_bind(body)
                    .map_err(|e| ProxyError::Protocol(format!("invalid Bind message: {e}")))?;
                let stmt = self.named(head.statement);
                let held = self.held_mut()?;
                held.unsynced = true;
                match stmt {
                    Some(stmt) => {
                        ensure_prepared(held, &stmt, out);
                        held.pending.push(Expect::Bind);
                        frontend::bind_with_rest(
                            out,
                            head.portal,
                            stmt.server_name.as_bytes(),
                            rest,
                        );
                        Ok(Action::Rewritten)
                    }
                    None => {
                        held.pending.push(Expect::Bind);
                        Ok(Action::Pass)
                    }
                }
            }
            DESCRIBE => {
                let (kind, name) = frontend::parse_close_or_describe(body)
                    .map_err(|e| ProxyError::Protocol(format!("invalid Describe message: {e}")))?;
                let stmt = if kind == frontend::STATEMENT {
                    self.named(name)
                } else {
                    None
                };
                let held = self.held_mut()?;
                held.unsynced = true;
                let expect = if kind == frontend::STATEMENT {
                    Expect::DescribeStatement
                } else {
                    Expect::DescribePortal
                };
                match stmt {
                    Some(stmt) => {
                        ensure_prepared(held, &stmt, out);
                        held.pending.push(expect);
                        frontend::describe(out, kind, stmt.server_name.as_bytes());
                        Ok(Action::Rewritten)
                    }
                    None => {
                        held.pending.push(expect);
                        Ok(Action::Pass)
                    }
                }
            }
            CLOSE => {
                let (kind, name) = frontend::parse_close_or_describe(body)
                    .map_err(|e| ProxyError::Protocol(format!("invalid Close message: {e}")))?;
                let renamed =
                    self.transaction_mode && kind == frontend::STATEMENT && !name.is_empty();
                if renamed {
                    // The server keeps its copy for other clients; PostgreSQL answers
                    // CloseComplete even for names that do not exist, and so do we.
                    self.statements.remove(name);
                }
                let held = self.held_mut()?;
                held.unsynced = true;
                if renamed {
                    held.pending.push(Expect::SyntheticCloseComplete);
                    Ok(Action::Absorbed)
                } else {
                    held.pending.push(Expect::Close);
                    Ok(Action::Pass)
                }
            }
            EXECUTE => {
                self.clock.query(&self.entry.traffic);
                let held = self.held_mut()?;
                held.unsynced = true;
                held.pending.push(Expect::Execute);
                Ok(Action::Pass)
            }
            SYNC => {
                self.clock.request_sent();
                let held = self.held_mut()?;
                held.unsynced = false;
                push_ready(held, Expect::Sync);
                Ok(Action::Pass)
            }
            FUNCTION_CALL => {
                self.clock.request_sent();
                let transaction_mode = self.transaction_mode;
                let held = self.held_mut()?;
                push_ready(held, Expect::FunctionCall);
                // The function is named by number (set_config among them): whatever it did to
                // the session cannot be read here, so the server is reset after the transaction.
                held.dirty |= transaction_mode;
                Ok(Action::Pass)
            }
            COPY_DONE | COPY_FAIL => {
                let held = self.held_mut()?;
                held.copy_in = false;
                held.pending.push(Expect::CopyEnd);
                Ok(Action::Pass)
            }
            COPY_DATA | FLUSH => Ok(Action::Pass),
            other => Err(ProxyError::Protocol(format!(
                "unknown message type {:?} from client",
                other as char
            ))),
        }
    }

    fn on_parse(
        &mut self,
        body: &[u8],
        out: &mut BytesMut,
        batch_start: bool,
    ) -> Result<Action, ProxyError> {
        let parse = frontend::parse_parse(body)
            .map_err(|e| ProxyError::Protocol(format!("invalid Parse message: {e}")))?;
        self.holder.note.statement_bytes(parse.query);
        let named = self.transaction_mode && !parse.name.is_empty();
        if named && !self.statements.has_room(parse.name, self.max_statements()) {
            // Refused before its text is looked at: nothing of it takes effect.
            return Ok(Action::Refuse {
                error: too_many_statements(self.max_statements()),
                sync_point: false,
            });
        }
        if named && self.statements.get(parse.name).is_some() {
            // As the server answers: the name must be closed before it is used again.
            return Ok(Action::Refuse {
                error: ProxyError::Server(poolguard_pg::backend::ErrorNotice {
                    severity: "ERROR".into(),
                    code: "42P05".into(), // duplicate_prepared_statement
                    message: format!(
                        "prepared statement \"{}\" already exists",
                        String::from_utf8_lossy(parse.name)
                    ),
                    detail: None,
                    hint: None,
                }),
                sync_point: false,
            });
        }
        if self.transaction_mode {
            let findings = self.scan(parse.query, true);
            if let Some(error) = self.apply_findings(&findings, batch_start) {
                return Ok(Action::Refuse {
                    error,
                    sync_point: false,
                });
            }
        } else if crate::pg::features::may_drop_database(parse.query) {
            let findings = self.scan(parse.query, false);
            if let Some(db) = &findings.drops_database {
                self.shared.let_go_of_database(db);
            }
        }
        let executed = if self.transaction_mode {
            self.executed_statement(parse.query)
        } else {
            None
        };
        let stmt = named.then(|| match &executed {
            Some((inner, rest)) => Statement::executing(
                &execute_text(inner, rest),
                &parse.param_types,
                self.entry.statement_epoch(),
                Some(inner.clone()),
            ),
            None => Statement::in_epoch(
                parse.query,
                &parse.param_types,
                self.entry.statement_epoch(),
            ),
        });
        if let Some(stmt) = &stmt {
            if let Err(error) =
                self.statements
                    .define(parse.name, stmt.clone(), self.max_statements())
            {
                return Ok(Action::Refuse {
                    error,
                    sync_point: false,
                });
            }
        }
        let held = self.held_mut()?;
        held.unsynced = true;
        if let Some((stmt, rest)) = executed.filter(|_| !named) {
            held.lease.unnamed.forget();
            ensure_prepared(held, &stmt, out);
            frontend::parse_message(out, b"", execute_text(&stmt, rest), &parse.param_types);
            held.pending.push(Expect::Parse {
                server_name: None,
                client_name: None,
            });
            return Ok(Action::Rewritten);
        }
        match stmt {
            // Nothing outstanding and the server already holds this very unnamed statement:
            // answer for it (see `UnnamedStatement` for why this is safe).
            None if parse.name.is_empty()
                && held.pending.is_empty()
                && !held.pending.server_skipping()
                && held.lease.unnamed.holds(body) =>
            {
                held.pending.push(Expect::SyntheticParseComplete);
                self.entry.traffic.parse_reused();
                Ok(Action::Absorbed)
            }
            None => {
                if parse.name.is_empty() && !held.pending.server_skipping() {
                    held.lease.unnamed.sent(body);
                }
                held.pending.push(Expect::Parse {
                    server_name: None,
                    client_name: None,
                });
                Ok(Action::Pass)
            }
            Some(stmt) => {
                // A client's Parse is a new prepare: the server plans it against today's
                // catalog (parameter types inferred anew, result columns as they are now), as
                // it would directly, even when this server holds the text under the shared
                // name already; other clients sharing it get the fresh statement too.
                if held.pending.server_skipping() {
                    // The server skips to Sync: the definition never happens, as directly.
                    self.statements.remove(parse.name);
                    return Ok(Action::Absorbed);
                }
                if let Some(inner) = &stmt.executes {
                    ensure_prepared(held, inner, out);
                }
                if held.lease.prepared.touch(&stmt) {
                    frontend::close(out, frontend::STATEMENT, stmt.server_name.as_bytes());
                    held.pending.push(Expect::InjectedClose);
                    held.lease.prepared.forget(&stmt.server_name);
                }
                prepare_on_server(held, &stmt, out, Some(parse.name));
                Ok(Action::Rewritten)
            }
        }
    }

    /// Applies what a statement's text reveals: tracked SETs, DEALLOCATE/DISCARD ALL, and the
    /// session-state policy. Returns a refusal under policy "error".
    fn apply_findings(&mut self, f: &Findings, batch_start: bool) -> Option<ProxyError> {
        if let Some(db) = &f.drops_database {
            self.shared.let_go_of_database(db);
        }
        if f.notifies {
            if let Some(h) = self.held.as_ref() {
                self.shared
                    .cancels
                    .note_notifier(&h.key(), self.registration.pid);
            }
        }
        for t in &f.tracked {
            match t {
                // Copied only on a change: the set may be shared (`PgPoolEntry::share_params`).
                TrackedSet::Set { name, value } => {
                    if self.params.get(name) != Some(value.as_ref()) {
                        std::sync::Arc::make_mut(&mut self.params).set(name, value);
                    }
                }
                TrackedSet::Reset { name } => {
                    std::sync::Arc::make_mut(&mut self.params).remove(name)
                }
            }
        }
        if f.deallocate_all {
            self.statements.clear();
            if let Some(h) = self.held.as_mut() {
                h.lease.prepared.clear();
                // DISCARD ALL also resets the session's parameters, which poolguard's record
                // of the server no longer matches: reset before reuse, record renewed.
                h.dirty = true;
            }
        }
        if !f.tracked.is_empty() {
            // Whether the server ends up with the new value is not known here: the statement
            // may fail, or its transaction roll back. Record the value as unknown, so the next
            // client to get this server sets (or resets) it whatever it expects.
            if let Some(h) = self.held.as_mut() {
                for t in &f.tracked {
                    let (TrackedSet::Set { name, .. } | TrackedSet::Reset { name }) = t;
                    h.lease.current.set(name, crate::pg::params::UNKNOWN);
                }
            }
        }
        self.on_features(&f.features, batch_start)
    }

    /// `[postgres] max_client_prepared_statements`.
    pub(super) fn max_statements(&self) -> usize {
        self.shared
            .config()
            .postgres
            .as_ref()
            .map_or(DEFAULT_MAX_CLIENT_PREPARED_STATEMENTS, |p| {
                p.max_client_prepared_statements
            })
    }

    /// SQL `EXECUTE name [(args)]` of a statement this client prepared at protocol level (the
    /// two share one namespace on a server): the statement, and the text after its name.
    pub(super) fn executed_statement<'s>(
        &self,
        sql: &'s [u8],
    ) -> Option<(std::sync::Arc<Statement>, &'s [u8])> {
        let (name, rest) = execute_target(sql)?;
        Some((self.statements.get(&name)?.clone(), rest))
    }

    fn named(&self, name: &[u8]) -> Option<std::sync::Arc<Statement>> {
        if !self.transaction_mode || name.is_empty() {
            return None;
        }
        self.statements.get(name).cloned()
    }

    fn held_mut(&mut self) -> Result<&mut Held, ProxyError> {
        self.held
            .as_deref_mut()
            .ok_or_else(|| ProxyError::Protocol("internal: no server held".into()))
    }
}

fn push_ready(held: &mut Held, e: Expect) {
    if held.pending.is_empty() {
        held.busy_since = Some(tokio::time::Instant::now());
        held.cancel_sent = false;
    }
    held.pending.push(e);
}

/// Makes sure the server has `stmt`, injecting a Parse (swallowed on success) if it does not.
fn ensure_prepared(held: &mut Held, stmt: &std::sync::Arc<Statement>, out: &mut BytesMut) {
    if let Some(inner) = &stmt.executes {
        ensure_prepared(held, inner, out);
    }
    if !held.lease.prepared.touch(stmt) {
        prepare_on_server(held, stmt, out, None);
    }
}

/// Writes Parse under the server-side name (closing an evicted statement first): the client's
/// own Parse defining `client_name`, or else poolguard's (its answer swallowed).
fn prepare_on_server(
    held: &mut Held,
    stmt: &std::sync::Arc<Statement>,
    out: &mut BytesMut,
    client_name: Option<&[u8]>,
) {
    if held.pending.server_skipping() {
        // The server would ignore it, and recording it would claim a statement it lacks.
        return;
    }
    if let Some(evicted) = held.lease.prepared.insert(stmt.clone()) {
        frontend::close(out, frontend::STATEMENT, evicted.as_bytes());
        held.pending.push(Expect::InjectedClose);
    }
    frontend::parse_message(
        out,
        stmt.server_name.as_bytes(),
        &stmt.query,
        &stmt.param_types,
    );
    let server_name = stmt.server_name.clone();
    held.pending.push(match client_name {
        None => Expect::InjectedParse { server_name },
        Some(name) => Expect::Parse {
            server_name: Some(server_name),
            client_name: Some(name.into()),
        },
    });
}
