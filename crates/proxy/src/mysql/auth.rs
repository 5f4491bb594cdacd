//! Verifying MySQL clients against `[[users]]`: mysql_native_password, the fast path of
//! caching_sha2_password (used at login and by COM_CHANGE_USER), and the password a client
//! sent in full through caching_sha2's full path ([`verify_cleartext`], see [`super::sha2`]).
//!
//! A user configured with a stored `*HEX` native hash cannot be checked on a SHA-256 scramble:
//! logins take the full path for it; COM_CHANGE_USER, which only does the fast path, refuses it
//! with 1045 and poolguard's log says what to change. Unknown users go through the same
//! computation against a random password, and every refusal reads the same ("Access denied for
//! user ..."), so the answer does not reveal which user names exist.

use poolguard_mysql::auth::{self, CACHING_SHA2_PASSWORD, MYSQL_NATIVE_PASSWORD};
use rand::Rng;

use crate::config::{Config, MysqlAuth};
use crate::error::ProxyError;

/// The plugin poolguard asks clients to use.
pub fn plugin_name(method: MysqlAuth) -> &'static str {
    match method {
        MysqlAuth::NativePassword => MYSQL_NATIVE_PASSWORD,
        MysqlAuth::CachingSha2 => CACHING_SHA2_PASSWORD,
    }
}

/// The method configured for the front door.
pub fn method(config: &Config) -> MysqlAuth {
    config
        .mysql
        .as_ref()
        .map_or(MysqlAuth::NativePassword, |m| m.auth)
}

/// Checks `response` (computed by the client with `nonce` and plugin `method`) for `user`.
/// `peer_ip` only goes into the message, which reads like the server's own.
pub fn verify(
    config: &Config,
    method: MysqlAuth,
    user: &str,
    peer_ip: &str,
    nonce: &[u8],
    response: &[u8],
) -> Result<(), ProxyError> {
    let (configured, password) = stored(config, user);
    let denied = || denied(user, peer_ip, !response.is_empty());
    let ok = match method {
        MysqlAuth::NativePassword => auth::native_verify(&password, nonce, response),
        MysqlAuth::CachingSha2 => {
            if configured && auth::parse_native_hash(&password).is_some() {
                // The explanation goes to the operator only: told to the client, it would
                // single out a user name that exists.
                tracing::warn!(user = %user, client = %peer_ip, "MySQL COM_CHANGE_USER refused: poolguard has only a mysql_native_password hash for this user, and COM_CHANGE_USER takes caching_sha2_password's fast path, which needs the plain password; configure the plain password, or set [mysql] auth_method = \"mysql_native_password\"");
                return Err(denied());
            }
            auth::sha2_verify(password.as_bytes(), nonce, response)
        }
    };
    if ok && configured {
        Ok(())
    } else {
        Err(denied())
    }
}

/// The one refusal every failed check gives, whatever the reason (1045).
pub fn denied(user: &str, peer_ip: &str, using_password: bool) -> ProxyError {
    ProxyError::AuthRefused(format!(
        "Access denied for user '{user}'@'{peer_ip}' (using password: {}) (poolguard)",
        if using_password { "YES" } else { "NO" }
    ))
}

/// Checks a password a client sent in full (caching_sha2's full path) for `user`: equal to the
/// configured plain password, or hashing to the configured native `*HEX` hash. An unknown user
/// is compared with a random password, as in [`verify`].
pub fn verify_cleartext(
    config: &Config,
    user: &str,
    peer_ip: &str,
    password: &[u8],
) -> Result<(), ProxyError> {
    let (configured, stored) = stored(config, user);
    let ok = match auth::parse_native_hash(&stored) {
        Some(stage2) => {
            let candidate = auth::native_password_hash(password);
            auth::parse_native_hash(&candidate).is_some_and(|c| auth::constant_time_eq(&c, &stage2))
        }
        None => auth::constant_time_eq(stored.as_bytes(), password),
    };
    if ok && configured {
        Ok(())
    } else {
        Err(denied(user, peer_ip, true))
    }
}

/// Whether `user` is configured, and its stored password (a random one if not, so an unknown
/// user costs the same check).
fn stored(config: &Config, user: &str) -> (bool, String) {
    match config.user(user) {
        Some(u) => (true, u.password.clone()),
        None => (false, random_password()),
    }
}

fn random_password() -> String {
    let n: u128 = rand::thread_rng().gen();
    format!("{n:x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(password: &str) -> Config {
        Config::parse(&format!(
            r#"
[mysql]
listen = "127.0.0.1:0"
[[backends]]
name = "my"
protocol = "mysql"
hosts = ["127.0.0.1:3306"]
max_connections = 5
[[databases]]
name = "bank"
backend = "my"
pool_size = 1
[[users]]
name = "app"
password = "{password}"
"#
        ))
        .unwrap()
    }

    #[test]
    fn native_and_sha2_fast_path() {
        let c = config("app-secret");
        let nonce = auth::generate_nonce();
        let native = auth::native_auth_response(b"app-secret", &nonce);
        assert!(verify(&c, MysqlAuth::NativePassword, "app", "ip", &nonce, &native).is_ok());
        let sha2 = auth::sha2_auth_response(b"app-secret", &nonce);
        assert!(verify(&c, MysqlAuth::CachingSha2, "app", "ip", &nonce, &sha2).is_ok());
        let wrong = auth::native_auth_response(b"nope", &nonce);
        let e = verify(&c, MysqlAuth::NativePassword, "app", "ip", &nonce, &wrong).unwrap_err();
        assert_eq!(e.mysql_code(true), 1045);
        let unknown =
            verify(&c, MysqlAuth::NativePassword, "bob", "ip", &nonce, &native).unwrap_err();
        assert_eq!(unknown.mysql_code(true), 1045);
        assert_eq!(
            e.to_string().replace("'app'", "'bob'"),
            unknown.to_string(),
            "an unknown user reads like a wrong password"
        );
    }

    #[test]
    fn cleartext_against_plain_and_hash() {
        let c = config("app-secret");
        assert!(verify_cleartext(&c, "app", "ip", b"app-secret").is_ok());
        let e = verify_cleartext(&c, "app", "ip", b"app-secreT").unwrap_err();
        assert_eq!(e.mysql_code(true), 1045);
        let unknown = verify_cleartext(&c, "bob", "ip", b"app-secret").unwrap_err();
        assert_eq!(e.to_string().replace("'app'", "'bob'"), unknown.to_string());
        let c = config(&auth::native_password_hash(b"app-secret"));
        assert!(verify_cleartext(&c, "app", "ip", b"app-secret").is_ok());
        assert!(verify_cleartext(&c, "app", "ip", b"other").is_err());
        assert!(verify_cleartext(&c, "app", "ip", b"").is_err());
    }

    #[test]
    fn stored_native_hash_cannot_do_sha2() {
        let hash = auth::native_password_hash(b"app-secret");
        let c = config(&hash);
        let nonce = auth::generate_nonce();
        let native = auth::native_auth_response(b"app-secret", &nonce);
        assert!(verify(&c, MysqlAuth::NativePassword, "app", "ip", &nonce, &native).is_ok());
        let sha2 = auth::sha2_auth_response(b"app-secret", &nonce);
        let e = verify(&c, MysqlAuth::CachingSha2, "app", "ip", &nonce, &sha2).unwrap_err();
        assert_eq!(e.mysql_code(true), 1045);
        let unknown = verify(&c, MysqlAuth::CachingSha2, "bob", "ip", &nonce, &sha2).unwrap_err();
        assert_eq!(
            e.to_string().replace("'app'", "'bob'"),
            unknown.to_string(),
            "reads like an unknown user's refusal"
        );
    }
}
