//! What one pool logs in to its PostgreSQL server with: a plain password, or, when poolguard
//! holds no password, what it can prove without one (passthrough).
//!
//! - A password answers every method the server may ask for (cleartext, md5, SCRAM).
//! - An md5 hash (`md5` + 32 hex digits, PostgreSQL's stored form) answers md5 only: the md5
//!   response is computed from the hash, as PgBouncer does.
//! - A SCRAM verifier (`SCRAM-SHA-256$...`) answers SCRAM only, and only once a client has
//!   logged in with SCRAM against that same verifier: its proof yields the ClientKey
//!   ([`ScramServer::client_key`](poolguard_pg::scram::ScramServer::client_key)), which with the
//!   verifier's ServerKey logs in to a server storing that verifier
//!   ([`ScramClient::passthrough`]). Before the first such login the pool cannot open a server
//!   connection.
//!
//! Invariants: the keys live here, in memory, per pool, and nowhere else: never logged, never
//! shown (no `Debug`), never written; a learned ClientKey is kept only beside the verifier it
//! was proved against (`SHA-256(ClientKey) = StoredKey`), so a changed verifier drops it.
//! Every refusal names the user and why passthrough cannot work.

use arc_swap::ArcSwap;
use poolguard_pg::md5auth;
use poolguard_pg::scram::{ScramClient, ScramVerifier};

/// A pool's secret towards its server.
enum Secret {
    Password(String),
    Md5(String),
    Scram {
        verifier: ScramVerifier,
        /// ClientKey proved by a client against `verifier`; `None` until one logs in.
        client_key: Option<[u8; 32]>,
    },
    /// A `SCRAM-SHA-256$` secret that does not parse (the reason).
    Unusable(String),
}

impl Secret {
    fn from_text(secret: &str) -> Secret {
        if secret.starts_with("SCRAM-SHA-256$") {
            match ScramVerifier::parse(secret) {
                Ok(verifier) => Secret::Scram {
                    verifier,
                    client_key: None,
                },
                Err(e) => Secret::Unusable(e.to_string()),
            }
        } else if md5auth::is_stored_md5(secret) {
            Secret::Md5(secret.to_owned())
        } else {
            Secret::Password(secret.to_owned())
        }
    }
}

/// The secret of one pool's user, replaced by reloads, lookups and client logins.
pub struct ServerCredential {
    current: ArcSwap<Secret>,
}

impl ServerCredential {
    /// From a configured or looked-up secret: a password, an md5 hash or a SCRAM verifier.
    pub fn new(secret: &str) -> Self {
        ServerCredential {
            current: ArcSwap::from_pointee(Secret::from_text(secret)),
        }
    }

    /// A new configured or looked-up secret. A ClientKey learned for the same verifier stays.
    pub fn set(&self, secret: &str) {
        let mut next = Secret::from_text(secret);
        let now = self.current.load();
        match (&mut next, &**now) {
            (Secret::Password(a), Secret::Password(b)) | (Secret::Md5(a), Secret::Md5(b))
                if a == b =>
            {
                return
            }
            (
                Secret::Scram {
                    verifier,
                    client_key,
                },
                Secret::Scram {
                    verifier: was,
                    client_key: known,
                },
            ) if verifier == was => *client_key = *known,
            _ => {}
        }
        self.current.store(std::sync::Arc::new(next));
    }

    /// A client proved ClientKey `client_key` against `verifier`: the pool may log in with it
    /// by SCRAM passthrough. Ignored while the pool holds a password (which works against any
    /// verifier the server has) and for a key that does not belong to the verifier.
    pub fn learn(&self, verifier: &ScramVerifier, client_key: [u8; 32]) {
        if matches!(&**self.current.load(), Secret::Password(_)) {
            return;
        }
        if !verifier.holds_client_key(&client_key) {
            return;
        }
        self.current.store(std::sync::Arc::new(Secret::Scram {
            verifier: verifier.clone(),
            client_key: Some(client_key),
        }));
    }

    /// The password for a server asking for it in cleartext.
    pub fn cleartext(&self, user: &str) -> Result<String, String> {
        match &**self.current.load() {
            Secret::Password(p) => Ok(p.clone()),
            other => Err(cannot(user, "a cleartext password", other)),
        }
    }

    /// The answer to a server's md5 challenge (from the password or the md5 hash).
    pub fn md5_response(&self, user: &str, salt: [u8; 4]) -> Result<String, String> {
        match &**self.current.load() {
            Secret::Password(p) | Secret::Md5(p) => Ok(md5auth::md5_response(user, p, salt)),
            other => Err(cannot(user, "md5", other)),
        }
    }

    /// A SCRAM-SHA-256 exchange: with the password, or by passthrough.
    pub fn scram_client(&self, user: &str) -> Result<ScramClient, String> {
        match &**self.current.load() {
            Secret::Password(p) => Ok(ScramClient::new(p)),
            Secret::Scram {
                verifier,
                client_key: Some(key),
            } => Ok(ScramClient::passthrough(*key, verifier)),
            other => Err(cannot(user, "SCRAM-SHA-256", other)),
        }
    }
}

/// Why the server's `method` cannot be answered with `secret`, for the log and the client.
fn cannot(user: &str, method: &str, secret: &Secret) -> String {
    let why = match secret {
        Secret::Password(_) => "poolguard holds a password for it".to_owned(),
        Secret::Md5(_) => "poolguard holds only the md5 hash of its password, which answers md5 \
             and nothing else (md5 passthrough: the server must store md5 too, or give \
             poolguard the password)"
            .to_owned(),
        Secret::Scram {
            client_key: None, ..
        } if method == "SCRAM-SHA-256" => {
            "poolguard holds only its SCRAM verifier and no client has logged in as this user \
             since: SCRAM passthrough uses the key a client's login proves, so server \
             connections open after the first client login"
                .to_owned()
        }
        Secret::Scram { .. } => "poolguard holds only a SCRAM verifier, which answers \
             SCRAM-SHA-256 and nothing else (passthrough needs SCRAM on both sides: make the \
             server store a SCRAM verifier, or give poolguard the password)"
            .to_owned(),
        Secret::Unusable(reason) => format!("its configured secret is unusable: {reason}"),
    };
    format!("cannot log in as user {user:?}: the server asks for {method}, but {why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use poolguard_pg::scram::ScramServer;

    /// A client's SCRAM login against `verifier`: the ClientKey it proves.
    fn client_login(verifier: &ScramVerifier, password: &str) -> [u8; 32] {
        let mut server = ScramServer::new(verifier.clone());
        let mut client = ScramClient::new(password);
        let sf = server.handle_client_first(&client.client_first()).unwrap();
        server
            .handle_client_final(&client.handle_server_first(&sf).unwrap())
            .unwrap();
        server.client_key().unwrap()
    }

    #[test]
    fn scram_verifier_waits_for_a_client_then_passes_through() {
        let v = ScramVerifier::from_password("pw", b"salt-salt", 16);
        let c = ServerCredential::new(&v.to_string());
        let e = c.scram_client("app").unwrap_err();
        assert!(
            e.contains("\"app\"") && e.contains("no client has logged in"),
            "{e}"
        );
        assert!(c
            .md5_response("app", [1; 4])
            .unwrap_err()
            .contains("SCRAM on both sides"));
        assert!(c.cleartext("app").is_err());
        // A key that is not the verifier's is not taken.
        c.learn(&v, [3; 32]);
        assert!(c.scram_client("app").is_err());
        c.learn(&v, client_login(&v, "pw"));
        assert!(c.scram_client("app").is_ok());
        // The same verifier again (a reload, a lookup) keeps the key; another drops it.
        c.set(&v.to_string());
        assert!(c.scram_client("app").is_ok());
        let w = ScramVerifier::from_password("pw2", b"salt-salt", 16);
        c.set(&w.to_string());
        assert!(c.scram_client("app").is_err());
    }

    #[test]
    fn md5_hash_answers_md5_only_and_password_everything() {
        let hash = md5auth::stored_md5("app", "pw");
        let c = ServerCredential::new(&hash);
        assert_eq!(
            c.md5_response("app", [1, 2, 3, 4]).unwrap(),
            md5auth::md5_response("app", "pw", [1, 2, 3, 4])
        );
        assert!(c.scram_client("app").unwrap_err().contains("md5 hash"));
        let p = ServerCredential::new("pw");
        assert_eq!(p.cleartext("app").unwrap(), "pw");
        assert!(p.scram_client("app").is_ok() && p.md5_response("app", [0; 4]).is_ok());
        // A password is better than passthrough: a learned key does not replace it.
        let v = ScramVerifier::from_password("pw", b"salt-salt", 16);
        p.learn(&v, client_login(&v, "pw"));
        assert_eq!(p.cleartext("app").unwrap(), "pw");
        let bad = ServerCredential::new("SCRAM-SHA-256$nonsense");
        assert!(bad.scram_client("app").unwrap_err().contains("unusable"));
    }
}
