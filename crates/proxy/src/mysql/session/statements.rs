//! Prepared-statement commands under poolguard's own statement ids (see
//! [`crate::mysql::stmts`]): COM_STMT_PREPARE is forwarded and its STMT_PREPARE_OK rewritten
//! to the client's id; COM_STMT_EXECUTE, _SEND_LONG_DATA and _FETCH are rewritten for the
//! held server, preparing the statement there first when it lacks it; COM_STMT_CLOSE is
//! answered by poolguard (servers keep their statements for other clients); COM_STMT_RESET goes
//! to the server only if it has the statement.
//!
//! COM_STMT_SEND_LONG_DATA has no response and its data lives on the server statement, so it
//! holds the server until the statement is executed, reset or closed.

use bytes::{Bytes, BytesMut};
use poolguard_mysql::consts::*;
use poolguard_mysql::packet::{begin_packet, finish_packet, HEADER_LEN};
use poolguard_mysql::stmt::{rewrite_statement_id, statement_id};
use poolguard_mysql::Packet;

use super::command::{command_body, After, Refusal, SyncFail};
use super::{End, Session};
use crate::error::ProxyError;
use crate::mysql::sql;
use crate::mysql::stmts::{rewrite_execute, ClientStmt};

impl Session {
    pub(super) async fn prepare(&mut self, p: Packet) -> Option<End> {
        let sql_text = Bytes::copy_from_slice(command_body(&p.payload));
        let findings = sql::scan(&sql_text, || self.ascii_in_multibyte());
        if let Some(reason) = &findings.pin {
            self.pin(reason);
        } else if !findings.settings.is_empty() {
            self.pin("SET in a prepared statement");
        }
        let stmt = ClientStmt {
            sql: sql_text.clone(),
            num_params: 0,
            num_columns: 0,
            types: None,
            reads_insert_id: findings.reads_insert_id,
        };
        let Some(client_id) = self.stmts.define(stmt) else {
            let e = ProxyError::MysqlServer {
                code: 1461,
                sqlstate: "42000".into(),
                message: format!(
                    "poolguard: this connection already holds {} prepared statements; close some (COM_STMT_CLOSE)",
                    self.stmts.len()
                ),
            };
            return self.reply_err(p.next_seq(), &e).await;
        };
        let after = After::Prepare {
            sql: sql_text,
            client_id,
        };
        self.forward(p, None, after, false).await
    }

    pub(super) async fn stmt_close(&mut self, p: &Packet) -> Option<End> {
        let Ok(id) = statement_id(&p.payload) else {
            return None; // COM_STMT_CLOSE has no response, not even to a malformed one
        };
        let id = self.stmts.resolve(id);
        let stmt = self.stmts.remove(id)?;
        let held = self.held.as_mut()?;
        if !held.long_data.contains(&stmt.sql) {
            return None;
        }
        // Its server copy holds long data nobody will execute: close it there, so the next
        // client preparing the same text does not inherit the data.
        held.long_data.retain(|s| *s != stmt.sql);
        let server_id = held.lease.stmts.get(&stmt.sql)?;
        held.lease.stmts.forget(&stmt.sql);
        if let Err(e) = close_on_server(held, &[server_id]).await {
            return self.server_lost(&e.to_string()).await;
        }
        None
    }

    pub(super) async fn stmt_reset(&mut self, p: Packet) -> Option<End> {
        let Ok(id) = statement_id(&p.payload) else {
            let e = ProxyError::Protocol("poolguard: malformed COM_STMT_RESET".into());
            return Some(End::Kicked(e, p.next_seq()));
        };
        let id = self.stmts.resolve(id);
        let Some(stmt) = self.stmts.get(id) else {
            return self
                .reply_err(p.next_seq(), &unknown_statement(id, "mysqld_stmt_reset"))
                .await;
        };
        let stmt_sql = stmt.sql.clone();
        let server_id = self
            .held
            .as_mut()
            .and_then(|h| h.lease.stmts.get(&stmt.sql));
        let Some(server_id) = server_id else {
            // The held server (if any) never saw it: nothing to reset.
            return self.reply_ok(p.next_seq()).await;
        };
        let mut payload = p.payload.to_vec();
        let _ = rewrite_statement_id(&mut payload, server_id);
        if let Some(h) = self.held.as_mut() {
            h.long_data.retain(|s| *s != stmt_sql);
        }
        self.deferred_error = None;
        self.send_command(&p, &payload, After::Plain).await
    }

    /// COM_STMT_EXECUTE, COM_STMT_SEND_LONG_DATA, COM_STMT_FETCH (`cmd`, the first byte of `p`).
    pub(super) async fn stmt_command(&mut self, cmd: u8, p: Packet) -> Option<End> {
        let silent = cmd == COM_STMT_SEND_LONG_DATA;
        let Ok(id) = statement_id(&p.payload) else {
            let e = ProxyError::Protocol(format!("poolguard: malformed {}", command_name(cmd)));
            return Some(End::Kicked(e, p.next_seq()));
        };
        let id = self.stmts.resolve(id);
        let Some(stmt) = self.stmts.get(id).cloned() else {
            if silent {
                return None;
            }
            let e = unknown_statement(id, "mysqld_stmt_execute");
            return self.reply_err(p.next_seq(), &e).await;
        };
        if !silent {
            if let Some(e) = self.deferred_error.take() {
                return self.reply_err(p.next_seq(), &e).await;
            }
        }
        // The common case (a server leased at once, in line with the session, holding the
        // statement) takes no await; the rest is boxed, as in `Session::forward`, so that every
        // execute's future is not sized for it.
        if !self.ready_now(stmt.reads_insert_id) {
            if let Err(r) = Box::pin(self.prepare_server(p.next_seq(), stmt.reads_insert_id)).await
            {
                return Box::pin(self.refuse_maybe_silently(p.next_seq(), r, silent)).await;
            }
        }
        let known = self
            .held
            .as_mut()
            .and_then(|h| h.lease.stmts.get(&stmt.sql));
        let server_id = match known {
            Some(sid) => sid,
            None => match Box::pin(self.prepare_on_server(&stmt.sql, p.next_seq(), silent)).await {
                Ok(sid) => sid,
                Err(answered) => return answered,
            },
        };
        // Built in place as the packet for the server: one buffer, one copy of the command
        // (room for the header and for the parameter types an execute may get back).
        let types = usize::from(stmt.num_params).saturating_mul(2);
        let mut out = BytesMut::with_capacity(
            p.payload
                .len()
                .saturating_add(HEADER_LEN)
                .saturating_add(types)
                .saturating_add(1),
        );
        begin_packet(&mut out);
        match cmd {
            COM_STMT_EXECUTE => {
                let s = self.stmts.get_mut(id)?;
                if let Err(e) = rewrite_execute(&p.payload, server_id, s, &mut out) {
                    let e =
                        ProxyError::Protocol(format!("poolguard: malformed COM_STMT_EXECUTE: {e}"));
                    return Some(End::Kicked(e, p.next_seq()));
                }
            }
            _ => {
                out.extend_from_slice(&p.payload);
                let _ = rewrite_statement_id(out.get_mut(HEADER_LEN..)?, server_id);
            }
        }
        let server_next = finish_packet(&mut out, 0);
        if let Some(h) = self.held.as_mut() {
            match cmd {
                COM_STMT_SEND_LONG_DATA if !h.long_data.contains(&stmt.sql) => {
                    h.long_data.push(stmt.sql.clone())
                }
                COM_STMT_EXECUTE => h.long_data.retain(|s| *s != stmt.sql),
                _ => {}
            }
        }
        let after = if cmd == COM_STMT_EXECUTE {
            After::Execute { sql: stmt.sql }
        } else {
            After::Plain
        };
        self.send_packet(&p, &out, server_next, after).await
    }

    /// Refuses a command; one without a response (SEND_LONG_DATA) keeps the error for the
    /// statement's next execute, as servers do.
    async fn refuse_maybe_silently(&mut self, seq: u8, r: Refusal, silent: bool) -> Option<End> {
        match r {
            Refusal::Answer(e) if silent => {
                self.deferred_error = Some(Box::new(e));
                None
            }
            r => self.refuse(seq, r).await,
        }
    }

    /// [`Session::ensure_prepared`], and the refusal answered if it fails (`Err`: what the
    /// command's handling returns then).
    async fn prepare_on_server(
        &mut self,
        sql: &Bytes,
        seq: u8,
        silent: bool,
    ) -> Result<u32, Option<End>> {
        let r = match self.ensure_prepared(sql).await {
            Ok(Ok(sid)) => return Ok(sid),
            Ok(Err(e)) | Err(SyncFail::Refused(e)) => Refusal::Answer(e),
            Err(SyncFail::Lost(why)) => self.lose_server(&why).await,
        };
        Err(self.refuse_maybe_silently(seq, r, silent).await)
    }

    /// The held server's id for `sql`, preparing it there (response swallowed) if missing.
    /// `Ok(Err(e))`: the server refused the prepare (e.g. a table was dropped since).
    async fn ensure_prepared(
        &mut self,
        sql_text: &Bytes,
    ) -> Result<Result<u32, ProxyError>, SyncFail> {
        let Some(held) = self.held.as_mut() else {
            return Err(SyncFail::Lost("no server held".into()));
        };
        if let Some(id) = held.lease.stmts.get(sql_text) {
            return Ok(Ok(id));
        }
        let mut payload = Vec::with_capacity(sql_text.len().saturating_add(1));
        payload.push(COM_STMT_PREPARE);
        payload.extend_from_slice(sql_text);
        let reply = held
            .lease
            .exec(&payload)
            .await
            .map_err(|e| SyncFail::Lost(e.to_string()))?;
        if let Some(err) = reply.error {
            return Ok(Err(ProxyError::MysqlServer {
                code: err.code,
                sqlstate: err.sql_state_str().to_owned(),
                message: err.message,
            }));
        }
        let Some(ok) = reply.prepare_ok else {
            return Err(SyncFail::Lost(
                "prepare answered without STMT_PREPARE_OK".into(),
            ));
        };
        let closes = held.lease.stmts.insert(sql_text.clone(), ok.statement_id);
        close_on_server(held, &closes)
            .await
            .map_err(|e| SyncFail::Lost(e.to_string()))?;
        Ok(Ok(ok.statement_id))
    }
}

/// COM_STMT_CLOSE for server statements poolguard no longer uses (no response to wait for).
pub(super) async fn close_on_server(held: &mut super::Held, ids: &[u32]) -> std::io::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut out = bytes::BytesMut::new();
    for id in ids {
        let mut payload = bytes::BytesMut::new();
        poolguard_mysql::stmt::encode_stmt_close(&mut payload, *id);
        poolguard_mysql::packet::encode_packet(&mut out, 0, &payload);
    }
    held.lease.stream.write_all(&out).await
}

fn unknown_statement(id: u32, function: &str) -> ProxyError {
    ProxyError::MysqlServer {
        code: 1243,
        sqlstate: "HY000".into(),
        message: format!("Unknown prepared statement handler ({id}) given to {function}"),
    }
}
