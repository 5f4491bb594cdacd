//! `auth_query`: the secret of a user missing from `[[users]]`, looked up in the server.
//!
//! The query runs with the extended protocol (`$1` bound to the user name as text, never
//! spliced into SQL) on a server connection of the `auth_user`'s own pool for the client's
//! database: it counts against the backend budget like any connection, waits under the same
//! acquire deadline, and goes back to that pool only proven clean (ReadyForQuery 'I', nothing
//! unread); anything else closes it.
//!
//! Answers are cached per (database, user) for `auth_query_cache`, the unknown users' too, and
//! concurrent logins of one user share one lookup: a storm of connecting clients costs the
//! server one query per user per period. A changed password counts from the next lookup.
//!
//! Invariants: an unknown user and a NULL password give the same answer (`None`), which the
//! login treats exactly as a wrong password; a failed lookup (server down, query refused) is
//! not cached; the cache holds at most [`MAX_ENTRIES`] names (expired ones are pruned first,
//! then all), so made-up names cannot grow it without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use poolguard_pg::backend;
use poolguard_pg::scram::ScramVerifier;
use poolguard_pg::{frontend, tags};
use poolguard_pool::{Clean, DiscardReason, Holder};

use crate::config::authquery::AuthQuery;
use crate::config::Database;
use crate::error::ProxyError;
use crate::pg::server::{ServerConn, ServerError};
use crate::pg::session::acquire_error;
use crate::state::Shared;

/// Cached names at most.
pub const MAX_ENTRIES: usize = 10_000;

/// A looked-up user's secret, as the server stores it.
#[derive(Clone)]
pub struct Found {
    /// A SCRAM verifier, an md5 hash, or (from a custom query) a password.
    pub secret: String,
    /// Its SCRAM verifier: parsed, or derived once from a password; `None` for an md5 hash.
    pub verifier: Option<ScramVerifier>,
}

impl Found {
    fn new(secret: String) -> Found {
        let verifier = if poolguard_pg::md5auth::is_stored_md5(&secret) {
            None
        } else {
            ScramVerifier::for_secret(&secret).ok()
        };
        Found { secret, verifier }
    }
}

type Answer = Option<Found>;

struct Slot {
    at: Instant,
    answer: tokio::sync::OnceCell<Answer>,
}

/// The lookups' cache, one per proxy.
#[derive(Default)]
pub struct AuthCache {
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
}

impl AuthCache {
    /// The secret of `user`, looked up with `auth` in database `db` (the client's, or its
    /// `auth_dbname`): cached, or asked of the server. `Ok(None)`: no such user, or no
    /// password (refuse as a wrong password).
    pub async fn lookup(
        &self,
        shared: &Shared,
        db: &Database,
        auth: &AuthQuery,
        user: &str,
    ) -> Result<Answer, ProxyError> {
        let slot = self.slot(db, auth, user);
        slot.answer
            .get_or_try_init(|| ask_server(shared, db, auth, user))
            .await
            .cloned()
    }

    /// The slot whose answer is still fresh (or still coming), else a new one.
    fn slot(&self, db: &Database, auth: &AuthQuery, user: &str) -> Arc<Slot> {
        let now = Instant::now();
        let fresh = |s: &Slot| {
            !s.answer.initialized()
                || auth
                    .cache
                    .is_some_and(|ttl| now.saturating_duration_since(s.at) < ttl)
        };
        let key = (db.name.clone(), user.to_owned());
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(&key).filter(|s| fresh(s)) {
            return s.clone();
        }
        if slots.len() >= MAX_ENTRIES {
            slots.retain(|_, s| fresh(s));
            if slots.len() >= MAX_ENTRIES {
                slots.clear();
            }
        }
        let slot = Arc::new(Slot {
            at: now,
            answer: Default::default(),
        });
        slots.insert(key, slot.clone());
        slot
    }
}

/// Runs the lookup on a connection of `auth.user`'s pool for `db`.
async fn ask_server(
    shared: &Shared,
    db: &Database,
    auth: &AuthQuery,
    user: &str,
) -> Result<Answer, ProxyError> {
    let entry = shared.pg_pool(db, &auth.user);
    let holder = Holder::new(
        "poolguard".into(),
        auth.user.as_str().into(),
        db.name.as_str().into(),
        "poolguard auth_query".into(),
    );
    let mut lease = entry.pool.acquire(holder).await.map_err(acquire_error)?;
    let limit = db.limits.acquire_timeout;
    let outcome = tokio::time::timeout(limit, run_query(&mut lease, &auth.query, user)).await;
    let failed = |why: String| {
        tracing::warn!(database = %db.name, auth_user = %auth.user, error = %why, "auth_query failed");
        ProxyError::BackendUnavailable(format!(
            "poolguard could not look up user {user:?} with auth_query (as {:?}): {why}",
            auth.user
        ))
    };
    match outcome {
        Ok(Ok((reply, status))) => {
            let proof = Clean {
                no_transaction: status == b'I',
                ..lease.untouched()
            };
            lease.release(proof);
            match reply {
                Reply::Rows(secret) => Ok(secret.map(Found::new)),
                Reply::Error(message) => Err(failed(message)),
            }
        }
        Ok(Err(e)) => {
            lease.discard(DiscardReason::Broken);
            Err(failed(e.to_string()))
        }
        Err(_) => {
            lease.discard(DiscardReason::Unfinished);
            Err(failed(format!("no answer within {limit:?}")))
        }
    }
}

/// What the query answered: the first row's second column, or the server's error.
enum Reply {
    Rows(Option<String>),
    Error(String),
}

/// Parse, Bind (`$1` = `user`, text), Execute, Sync; reads up to ReadyForQuery, whose status
/// it returns beside the reply.
async fn run_query(
    conn: &mut ServerConn,
    sql: &str,
    user: &str,
) -> Result<(Reply, u8), ServerError> {
    let mut out = BytesMut::new();
    frontend::parse_message(&mut out, "", sql, &[]);
    let params = bind_one_text(user).ok_or_else(|| ServerError::Protocol {
        addr: conn.addr.to_string(),
        problem: "user name too long for a Bind".into(),
    })?;
    frontend::bind_with_rest(&mut out, "", "", &params);
    frontend::execute(&mut out, "", 0);
    frontend::sync(&mut out);
    // The unnamed statement is ours now: whatever the pool knew of it is gone.
    conn.unnamed.forget();
    conn.stream.write_all(&out).await?;
    let mut secret = None;
    let mut rows = 0usize;
    let mut error = None;
    loop {
        let f = conn.read_frame().await?;
        match f.tag {
            tags::backend::DATA_ROW => {
                rows = rows.saturating_add(1);
                if rows == 1 {
                    secret = second_column(&f.body).ok_or_else(|| ServerError::Protocol {
                        addr: conn.addr.to_string(),
                        problem: "auth_query must answer two columns: name, password".into(),
                    })?;
                }
            }
            tags::backend::ERROR_RESPONSE => {
                error = Some(
                    backend::parse_error_notice(&f.body)
                        .map(|n| format!("{} (SQLSTATE {})", n.message, n.code))
                        .unwrap_or_else(|e| e.to_string()),
                );
            }
            tags::backend::PARAMETER_STATUS => conn.note_parameter_status(&f.body),
            tags::backend::READY_FOR_QUERY => {
                let status =
                    backend::parse_ready_for_query(&f.body).map_err(|e| ServerError::Protocol {
                        addr: conn.addr.to_string(),
                        problem: e.to_string(),
                    })?;
                let reply = match error {
                    Some(e) => Reply::Error(e),
                    None => Reply::Rows(secret),
                };
                return Ok((reply, status));
            }
            // ParseComplete, BindComplete, CommandComplete, notices.
            _ => {}
        }
    }
}

/// The second column of a DataRow as text; `Some(None)` for NULL, `None` with fewer columns.
fn second_column(body: &[u8]) -> Option<Option<String>> {
    let row = backend::parse_data_row(body).ok()?;
    let value = row.get(1)?;
    Some(value.map(|v| String::from_utf8_lossy(v).into_owned()))
}

/// A Bind body after the two names: no parameter format codes (all text), one parameter,
/// no result format codes (all text).
/// `None` past the protocol's 2 GiB (a user name is bounded far below by the startup packet).
fn bind_one_text(value: &str) -> Option<BytesMut> {
    let len = i32::try_from(value.len()).ok()?;
    let mut rest = BytesMut::with_capacity(value.len().saturating_add(10));
    rest.put_i16(0);
    rest.put_i16(1);
    rest.put_i32(len);
    rest.put_slice(value.as_bytes());
    rest.put_i16(0);
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_column_reads_text_and_null() {
        let mut row = BytesMut::new();
        backend::data_row(&mut row, &[Some("newapp"), Some("md5abc")]);
        // The encoder writes the whole message; the body follows the tag and length.
        assert_eq!(second_column(&row[5..]), Some(Some("md5abc".into())));
        let mut row = BytesMut::new();
        backend::data_row(&mut row, &[Some("newapp"), None]);
        assert_eq!(second_column(&row[5..]), Some(None));
        let mut row = BytesMut::new();
        backend::data_row(&mut row, &[Some("newapp")]);
        assert_eq!(second_column(&row[5..]), None);
    }

    #[test]
    fn bind_body_layout() {
        let rest = bind_one_text("ab").unwrap();
        assert_eq!(&rest[..], b"\0\0\0\x01\0\0\0\x02ab\0\0");
    }

    #[test]
    fn found_secrets() {
        let md5 = poolguard_pg::md5auth::stored_md5("u", "p");
        assert!(Found::new(md5).verifier.is_none());
        let v = ScramVerifier::from_password("p", b"0123456789abcdef", 16);
        assert_eq!(Found::new(v.to_string()).verifier, Some(v));
        assert!(Found::new("plain".into()).verifier.is_some());
    }
}
