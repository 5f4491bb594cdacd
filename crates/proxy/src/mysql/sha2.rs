//! caching_sha2_password's full authentication with real sockets, both sides. The exchange
//! itself (what to send, what a packet means) is `poolguard_mysql::full_auth`; this module
//! decides when it runs, holds the keys, and does the reads and writes.
//!
//! **poolguard as the server** (MySQL 8 clients). poolguard knows the plain password, so it can
//! always check the fast-path scramble; `[mysql] caching_sha2_full_auth` says when it asks for
//! the full password instead (AuthMoreData 0x04), like a MySQL 8 server with a cold cache:
//! - `when_needed` (default): only for users configured as a native `*HEX` hash, which cannot
//!   check a SHA-256 scramble (the password sent in full is hashed and compared);
//! - `first_login`: like MySQL, a user's logins take the full path until one succeeds; from
//!   then on the fast path, until poolguard restarts or the user's password changes (the
//!   "cache" holds SHA256(SHA256(password)) per user name, so a reload with a new password
//!   makes the entry stale by itself);
//! - `always`: every login, so drivers' full-auth code runs on each connection.
//!
//! An empty scramble (empty password) never takes the full path, as on MySQL. Over TLS the
//! client sends the password in clear; without TLS it asks for poolguard's RSA public key
//! (0x02) or sends a ciphertext for a key it already has. The key pair is `[mysql]
//! rsa_private_key_file`, else one generated in memory the first time a client needs it (once
//! per process, off the runtime's threads) and kept for the process's life.
//!
//! **poolguard as the client** (MySQL 8 servers, see [`super::server`]): [`client_for`] builds
//! the client-side state for a scramble; over TLS the password goes in clear, without TLS
//! encrypted with the backend's `server_rsa_public_key_file`, or with the key the server sends
//! when asked (which a man in the middle could replace: configure the file, or use TLS).
//!
//! Invariants: every failure of the full path is the same 1045 as a wrong password (the reason
//! goes to the log only), and the exchange is bounded: at most one key request per login, and
//! every read is a bounded handshake packet under the login timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use poolguard_mysql::auth::{parse_native_hash, sha2_stage2};
use poolguard_mysql::full_auth::{server_full_auth, RsaKeyPair, ServerStep, Sha2Client};
use poolguard_mysql::handshake::AuthMoreData;
use tokio::sync::OnceCell;

use crate::config::front::FullAuth;
use crate::error::ProxyError;
use crate::mysql::auth;
use crate::mysql::login::ClientIo;
use crate::mysql::server::{MyConnector, ServerConn};
use crate::state::Shared;

/// Per-process state of the server side: the warm users and the generated key pair.
#[derive(Default)]
pub struct Sha2State {
    /// User name -> SHA256(SHA256(password)) of a full authentication that succeeded. Only
    /// configured users get here, so it is bounded by the configuration.
    warm: Mutex<HashMap<String, [u8; 32]>>,
    generated: OnceCell<Option<Arc<RsaKeyPair>>>,
}

impl Sha2State {
    /// Whether a login with `answer` (the client's scramble) is asked for its full password.
    /// `stored` is the user's configured password, `None` for an unknown user.
    pub fn wants_full_auth(
        &self,
        policy: FullAuth,
        user: &str,
        stored: Option<&str>,
        answer: &[u8],
    ) -> bool {
        if answer.is_empty() {
            return false;
        }
        if stored.is_some_and(|pw| parse_native_hash(pw).is_some()) {
            return true;
        }
        match (policy, stored) {
            (FullAuth::WhenNeeded, _) => false,
            (FullAuth::Always, _) | (FullAuth::FirstLogin, None) => true,
            (FullAuth::FirstLogin, Some(pw)) => !self.is_warm(user, pw),
        }
    }

    fn is_warm(&self, user: &str, password: &str) -> bool {
        let warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        warm.get(user) == Some(&sha2_stage2(password.as_bytes()))
    }

    /// Notes a successful full authentication (plain passwords only: a native hash can never
    /// take the fast path).
    pub(crate) fn remember(&self, user: &str, stored: &str) {
        if parse_native_hash(stored).is_some() {
            return;
        }
        let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
        warm.insert(user.to_owned(), sha2_stage2(stored.as_bytes()));
    }

    /// The key pair for clients without TLS: the configured one, else the generated one.
    async fn key(&self, configured: Option<Arc<RsaKeyPair>>) -> Option<Arc<RsaKeyPair>> {
        if configured.is_some() {
            return configured;
        }
        self.generated
            .get_or_init(|| async {
                match tokio::task::spawn_blocking(RsaKeyPair::generate).await {
                    Ok(Ok(pair)) => {
                        tracing::info!(bits = pair.bits(), "generated an RSA key pair for caching_sha2_password clients without TLS");
                        Some(Arc::new(pair))
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot generate an RSA key pair: caching_sha2_password full authentication without TLS is refused");
                        None
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "RSA key generation did not finish");
                        None
                    }
                }
            })
            .await
            .clone()
    }
}

/// Runs the full path for a client whose scramble was not checked: sends 0x04, answers a key
/// request, and checks the password the client sends. `seq` is kept at the sequence id
/// poolguard sends next (the OK after this, or the ERR).
pub async fn full_auth(
    io: &mut ClientIo<'_>,
    shared: &Shared,
    user: &str,
    peer_ip: &str,
    scramble: &[u8],
    seq: &mut u8,
) -> Result<(), ProxyError> {
    io.write(*seq, |b| AuthMoreData::perform_full_auth().encode(b))
        .await?;
    *seq = seq.wrapping_add(1);
    let secure = io.is_tls();
    let key = match secure {
        true => None,
        false => {
            let configured = shared
                .config()
                .mysql
                .as_ref()
                .and_then(|m| m.rsa_key.clone());
            shared.mysql.sha2.key(configured).await
        }
    };
    let mut key_sent = false;
    loop {
        let packet = io
            .read()
            .await?
            .ok_or_else(|| ProxyError::client_io(std::io::ErrorKind::UnexpectedEof.into()))?;
        *seq = packet.next_seq();
        match server_full_auth(&packet.payload, secure, key_sent, key.as_deref(), scramble) {
            ServerStep::SendKey => {
                let pem = key.as_ref().map(|k| k.public_pem().as_bytes().to_vec());
                let more = AuthMoreData {
                    data: pem.unwrap_or_default(),
                };
                io.write(*seq, |b| more.encode(b)).await?;
                *seq = seq.wrapping_add(1);
                key_sent = true;
            }
            ServerStep::Password(password) => {
                let config = shared.config();
                auth::verify_cleartext(&config, user, peer_ip, &password)?;
                if let Some(u) = config.user(user) {
                    shared.mysql.sha2.remember(user, &u.password);
                }
                tracing::debug!(user = %user, client = %peer_ip, tls = secure, "caching_sha2_password full authentication");
                return Ok(());
            }
            ServerStep::Refuse(why) => {
                tracing::info!(user = %user, client = %peer_ip, reason = why, "caching_sha2_password full authentication failed");
                return Err(auth::denied(user, peer_ip, true));
            }
        }
    }
}

/// The client side's state for a caching_sha2 scramble made with `scramble` on `conn`.
pub fn client_for(connector: &MyConnector, conn: &ServerConn, scramble: &[u8]) -> Sha2Client {
    Sha2Client::new(
        scramble,
        conn.is_tls(),
        connector.server_rsa_key.as_deref().cloned(),
    )
}

#[cfg(test)]
#[path = "sha2_tests.rs"]
mod tests;
