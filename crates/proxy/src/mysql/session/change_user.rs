//! COM_CHANGE_USER, answered by poolguard: the client re-authenticates (always through an
//! AuthSwitchRequest with a fresh nonce, as MariaDB does), its session is reset (the server it
//! held is rolled back, reset and returned; statements, settings and pins are forgotten), and
//! it moves to the pool of the new (database, user). A failed re-authentication closes the
//! connection with 1045, as servers do.

use std::time::Duration;

use poolguard_mysql::consts::*;
use poolguard_mysql::handshake::{AuthMoreData, AuthSwitchRequest, ChangeUser};
use poolguard_mysql::packet::encode_with;
use poolguard_mysql::response::OkPacket;
use poolguard_mysql::Packet;
use tokio::io::AsyncReadExt;

use super::{End, Session};
use crate::config::{MysqlAuth, PoolMode};
use crate::error::ProxyError;
use crate::mysql::auth;
use crate::mysql::login::choose_database;
use crate::mysql::reclaim::{reclaim, Reclaim};
use crate::mysql::sync::SessionState;

/// How long the client has to answer the auth switch.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

impl Session {
    pub(super) async fn change_user(&mut self, p: Packet) -> Option<End> {
        let cu = match ChangeUser::decode(&p.payload, self.caps) {
            Ok(c) => c,
            Err(e) => {
                let e = ProxyError::Protocol(format!("poolguard: malformed COM_CHANGE_USER: {e}"));
                return Some(End::Kicked(e, p.next_seq()));
            }
        };
        let mut seq = match self.reauthenticate(&p, &cu.username).await {
            Ok(seq) => seq,
            Err(end) => return Some(end),
        };
        let (db, db_slot) = match choose_database(&self.shared, Some(cu.database.as_str())) {
            Ok(d) => d,
            Err(e) => return Some(End::Kicked(e, seq)),
        };
        if auth::method(&self.shared.config()) == MysqlAuth::CachingSha2 {
            let mut out = bytes::BytesMut::new();
            encode_with(&mut out, seq, |b| {
                AuthMoreData::fast_auth_success().encode(b)
            });
            seq = seq.wrapping_add(1);
            if let Some(end) = self.write_client(&out).await {
                return Some(end);
            }
        }
        self.release_for_change_user().await;
        // The client's wire choices are those it logged in with, as its pool has them.
        let leg = self.entry.pool.connector().leg;
        self.entry = self.shared.mysql.pool(&self.shared, &db, &cu.username, leg);
        self.db_slot = db_slot;
        // A new holder (its note starts over, as the session does), shown by SHOW CLIENTS too.
        let names = self
            .entry
            .names_for(&cu.username, &db.name, &self.holder.application);
        self.holder = poolguard_pool::Holder::with_names(self.holder.client.clone(), names);
        self.shared
            .observe
            .clients
            .rename(&self._slot, &self.holder, self.entry.name());
        self.registration.target.set_user(self.holder.user.clone());
        self.transaction_mode = db.pool_mode == PoolMode::Transaction;
        if let Some(c) = cu.charset {
            self.login_charset = c;
        }
        self.wait_timeout = None;
        self.state = SessionState::new(
            self.entry.login_schema(&db),
            self.login_charset,
            self.state.multi_statements,
        );
        if db.pool_mode == PoolMode::Session {
            if let Err(r) = self.prepare_server(seq, false).await {
                return match r {
                    super::command::Refusal::End(end) => Some(end),
                    super::command::Refusal::Answer(e) => Some(End::Kicked(e, seq)),
                };
            }
        }
        tracing::info!(client = %self.holder.client, user = %cu.username, database = %db.name, "COM_CHANGE_USER");
        let mut out = bytes::BytesMut::new();
        encode_with(&mut out, seq, |b| {
            OkPacket::with_status(SERVER_STATUS_AUTOCOMMIT).encode(b, CLIENT_PROTOCOL_41)
        });
        self.write_client(&out).await
    }

    /// Sends an AuthSwitchRequest with a fresh nonce and checks the answer for `user`.
    /// Returns the sequence id of poolguard's next packet; a failure ends the session (1045).
    async fn reauthenticate(&mut self, p: &Packet, user: &str) -> Result<u8, End> {
        let method = auth::method(&self.shared.config());
        let nonce = poolguard_mysql::auth::generate_nonce();
        let switch = AuthSwitchRequest {
            plugin_name: auth::plugin_name(method).to_owned(),
            plugin_data: nonce.to_vec(),
        };
        let mut out = bytes::BytesMut::new();
        encode_with(&mut out, p.next_seq(), |b| switch.encode(b));
        if let Some(end) = self.write_client(&out).await {
            return Err(end);
        }
        let answer = self.read_client_packet().await?;
        let seq = answer.next_seq();
        let peer_ip = self
            .holder
            .client
            .rsplit_once(':')
            .map_or(&*self.holder.client, |(ip, _)| ip)
            .to_owned();
        auth::verify(
            &self.shared.config(),
            method,
            user,
            &peer_ip,
            &nonce,
            &answer.payload,
        )
        .map_err(|e| End::Kicked(e, seq))?;
        Ok(seq)
    }

    /// Gives back the server of the old session, rolled back and reset.
    async fn release_for_change_user(&mut self) {
        self.stmts.clear();
        self.deferred_error = None;
        self.pinned = None;
        if let Some(held) = self.held.take() {
            self.registration.target.stop.set(None).await;
            let entry = self.entry.clone();
            let shared = self.shared.clone();
            let reset = async move {
                let how = Reclaim::Clean { reset: true };
                reclaim(held, None, how, &entry, &shared.faults).await;
            };
            tokio::spawn(crate::contain::contain(
                reset,
                "mysql server reset",
                self.shared.clone(),
            ));
        }
    }

    /// Reads one whole client packet in the middle of a command (auth switch answers).
    pub(super) async fn read_client_packet(&mut self) -> Result<Packet, End> {
        loop {
            match self.next_packet() {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => return Err(End::Kicked(e, 1)),
            }
            self.cbuf.reserve(1024);
            match tokio::time::timeout(ANSWER_TIMEOUT, self.client.read_buf(&mut self.cbuf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return Err(End::ClientGone),
            }
        }
    }
}
