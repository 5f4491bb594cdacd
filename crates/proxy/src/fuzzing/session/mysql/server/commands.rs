//! The fake MySQL server's answers: each command from poolguard dispatched, marked commands
//! checked against the connection's account ([`FakeConn::arrived_from`]) and answered as their
//! [`Plan`] says (with MySQL's meaning of the statement on top), poolguard's own commands as
//! MySQL would.

use bytes::{BufMut, BytesMut};
use poolguard_mysql::consts::*;
use poolguard_mysql::lenenc::put_lenenc_int;
use poolguard_mysql::stmt::StmtPrepareOk;
use poolguard_mysql::Packet;

use super::{marker, FakeConn, Stmt};
use crate::fuzzing::session::mysql::client::execute_plan;
use crate::fuzzing::session::mysql::{plans, Plan};

impl FakeConn {
    /// Handles one packet from poolguard; `false` to close the connection.
    pub(super) async fn on_packet(&mut self, p: Packet) -> bool {
        self.seq = p.next_seq();
        if let Some(trans) = self.infile {
            if p.payload.is_empty() {
                self.infile = None;
                self.view.infile = false;
                self.ok(trans, 0);
            }
            return true;
        }
        let Some((&command, body)) = p.payload.split_first() else {
            self.err(1047, "08S01", "empty packet");
            return true;
        };
        match command {
            COM_QUIT => return false,
            COM_QUERY => {
                let text = String::from_utf8_lossy(body).into_owned();
                let (who, plan) = marker(&text);
                self.arrived_from(who);
                match plan.and_then(|id| plans().get(&id).copied()) {
                    Some(plan) => {
                        let plan = self.as_mysql_would(plan, &text);
                        return self.answer(plan, false).await;
                    }
                    None => self.internal_query(&text),
                }
            }
            COM_STMT_PREPARE => {
                let text = String::from_utf8_lossy(body).into_owned();
                let (who, plan) = marker(&text);
                self.arrived_from(who.clone());
                match plan.and_then(|id| plans().get(&id).copied()) {
                    None
                    | Some(Plan::Ok { .. } | Plan::Rows { .. } | Plan::Multi { .. })
                    | Some(Plan::Infile { .. }) => self.prepare_ok(who),
                    Some(Plan::Err { .. }) => self.err(1146, "42S02", "scripted error"),
                    Some(plan) => return self.answer(plan, false).await,
                }
            }
            COM_STMT_EXECUTE => {
                let id = body
                    .get(..4)
                    .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let Some(stmt) = self.stmts.get(&id) else {
                    self.err(1243, "HY000", "Unknown prepared statement handler");
                    return true;
                };
                let who = stmt.owner.clone();
                self.arrived_from(who);
                let plan = execute_plan(&p.payload).and_then(|id| plans().get(&id).copied());
                let plan = plan.unwrap_or(Plan::Rows {
                    rows: 1,
                    trans: self.view.in_trans,
                });
                let plan = self.as_mysql_would(plan, "");
                return self.answer(plan, true).await;
            }
            COM_STMT_CLOSE => {
                if let Some(b) = body.get(..4) {
                    self.stmts
                        .remove(&u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            COM_STMT_RESET | COM_PING | COM_INIT_DB => {
                let s = self.status;
                self.ok_packet(s, 0);
            }
            COM_SET_OPTION => {
                let s = self.status;
                self.eof(s);
            }
            COM_RESET_CONNECTION => {
                self.stmts.clear();
                self.status = SERVER_STATUS_AUTOCOMMIT;
                self.ok(false, 0);
            }
            _ => self.err(1047, "08S01", "Unknown command"),
        }
        true
    }

    fn prepare_ok(&mut self, owner: Option<String>) {
        let id = self.next_stmt;
        self.next_stmt += 1;
        self.stmts.insert(id, Stmt { owner });
        let mut p = BytesMut::new();
        StmtPrepareOk {
            statement_id: id,
            num_columns: 1,
            num_params: 1,
            warnings: 0,
        }
        .encode(&mut p);
        self.push(&p);
        let s = self.status;
        self.column("?");
        if self.caps & CLIENT_DEPRECATE_EOF == 0 {
            self.eof(s);
        }
        self.column("a");
        if self.caps & CLIENT_DEPRECATE_EOF == 0 {
            self.eof(s);
        }
    }

    /// poolguard's own queries (sync SETs, ROLLBACK, KILL QUERY, polls), answered as MySQL
    /// would.
    fn internal_query(&mut self, text: &str) {
        let upper = text.trim_start().to_ascii_uppercase();
        if upper.starts_with("ROLLBACK") || upper.starts_with("COMMIT") {
            self.ok(false, 0);
        } else if let Some(id) = upper.strip_prefix("KILL QUERY ") {
            if let Some(line) = id
                .trim()
                .parse::<u32>()
                .ok()
                .and_then(|id| self.server.kills().get(&id).cloned())
            {
                let _ = line.send(());
            }
            let s = self.status;
            self.ok_packet(s, 0);
        } else if upper.starts_with("SELECT") {
            let value = if upper.contains("MAX_CONNECTIONS") {
                "100"
            } else if upper.contains("DATABASE()") {
                "fz"
            } else {
                "0"
            };
            let s = self.status;
            self.result_set(&[value], false, s);
        } else if upper.starts_with("BEGIN") || upper.starts_with("START TRANSACTION") {
            self.ok(true, 0);
        } else {
            if upper.contains("SET AUTOCOMMIT = 0") {
                self.status &= !SERVER_STATUS_AUTOCOMMIT;
            } else if upper.contains("SET AUTOCOMMIT = 1") {
                self.status |= SERVER_STATUS_AUTOCOMMIT;
                self.set_trans(false);
            }
            let s = self.status;
            self.ok_packet(s, 0);
        }
    }

    /// The plan with MySQL's meaning of `text` on top, for a command that succeeds: START
    /// TRANSACTION opens a transaction, COMMIT and `SET autocommit = 1` end it, and with
    /// autocommit off every statement leaves one open.
    fn as_mysql_would(&mut self, plan: Plan, text: &str) -> Plan {
        let succeeds = matches!(
            plan,
            Plan::Ok { .. } | Plan::Rows { .. } | Plan::Multi { .. } | Plan::Infile { .. }
        );
        if !succeeds {
            return plan;
        }
        let upper = text.to_ascii_uppercase();
        if upper.contains("SET AUTOCOMMIT = 0") {
            self.status &= !SERVER_STATUS_AUTOCOMMIT;
        }
        let forced = if upper.contains("SET AUTOCOMMIT = 1") {
            self.status |= SERVER_STATUS_AUTOCOMMIT;
            Some(false)
        } else if upper.contains("COMMIT") {
            Some(false)
        } else if upper.contains("START TRANSACTION") || self.status & SERVER_STATUS_AUTOCOMMIT == 0
        {
            Some(true)
        } else {
            None
        };
        let Some(forced) = forced else { return plan };
        match plan {
            Plan::Ok { warn, .. } => Plan::Ok {
                trans: forced,
                warn,
            },
            Plan::Rows { rows, .. } => Plan::Rows {
                rows,
                trans: forced,
            },
            Plan::Multi { .. } => Plan::Multi { trans: forced },
            Plan::Infile { .. } => Plan::Infile { trans: forced },
            other => other,
        }
    }

    /// Answers a marked command as its plan says (`binary`: a COM_STMT_EXECUTE); `false` to
    /// close.
    async fn answer(&mut self, plan: Plan, binary: bool) -> bool {
        match plan {
            Plan::Ok { trans, warn } => self.ok(trans, u16::from(warn)),
            Plan::Err { rollback } => {
                if rollback {
                    self.set_trans(false);
                }
                self.err(1213, "40001", "scripted error");
            }
            Plan::Rows { rows, trans } => {
                self.set_trans(trans);
                let values: Vec<String> = (0..rows).map(|i| i.to_string()).collect();
                let values: Vec<&str> = values.iter().map(String::as_str).collect();
                let s = self.status;
                self.result_set(&values, binary, s);
            }
            Plan::Multi { trans } => {
                let s = self.status | SERVER_MORE_RESULTS_EXISTS;
                self.result_set(&["m"], binary, s);
                self.ok(trans, 0);
            }
            Plan::Infile { trans } => {
                if binary {
                    self.ok(trans, 0);
                } else {
                    let mut p = BytesMut::new();
                    p.put_u8(LOCAL_INFILE_HEADER);
                    p.put_slice(b"/tmp/fz.tsv");
                    self.push(&p);
                    self.infile = Some(trans);
                    self.view.infile = true;
                }
            }
            Plan::Stall { partial } => self.stall(partial),
            Plan::Close { partial } => {
                if partial {
                    let mut p = BytesMut::new();
                    put_lenenc_int(&mut p, 1);
                    self.push(&p);
                    self.flush().await;
                }
                return false;
            }
            Plan::Broken { kind } => {
                match kind {
                    // An OK cut short: no status flags.
                    0 => self.push(&[OK_HEADER, 0]),
                    // An ERR cut short: no error code.
                    1 => self.push(&[ERR_HEADER, 0x10]),
                    // A result set of no columns.
                    2 => self.push(&[0xfc, 0, 0]),
                    // A result set ending with a pre-4.1 EOF, which has no status flags:
                    // under CLIENT_PROTOCOL_41 nothing says whether a transaction is open.
                    _ => {
                        self.result_head();
                        self.push(&[EOF_HEADER]);
                    }
                }
                self.view.broken = true;
            }
        }
        true
    }
}
