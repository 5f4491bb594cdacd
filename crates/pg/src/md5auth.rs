//! PostgreSQL's md5 password exchange, both sides.
//!
//! The stored secret is `"md5" + hex(md5(password + user))`; over the wire the client sends
//! `"md5" + hex(md5(hex_part_of_stored + salt))`. Knowing the stored form is therefore enough to
//! log in, which is why a config may hold either the password or the stored form.
//!
//! Invariants: a secret is taken as the stored form exactly when PostgreSQL would (`"md5"` followed
//! by 32 lowercase hex digits); responses are compared in constant time.

use std::fmt::Write as _;

use md5::{Digest, Md5};

/// Lowercase hex of the MD5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `hex(md5(password + user))`: the stored form without its `"md5"` prefix.
fn password_hex(user: &str, password: &str) -> String {
    let mut h = Md5::new();
    h.update(password.as_bytes());
    h.update(user.as_bytes());
    hex(&h.finalize())
}

/// The 32 hex digits of `secret` if it is in the stored form.
fn stored_hex(secret: &str) -> Option<&str> {
    secret.strip_prefix("md5").filter(|h| {
        h.len() == 32
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// PostgreSQL's stored form of `password` for role `user`: `"md5" + md5(password + user)`.
pub fn stored_md5(user: &str, password: &str) -> String {
    format!("md5{}", password_hex(user, password))
}

/// True if `secret` is already in the stored form (`"md5"` + 32 lowercase hex digits).
pub fn is_stored_md5(secret: &str) -> bool {
    stored_hex(secret).is_some()
}

/// What a client sends for `salt`: `"md5" + md5(md5(password + user) + salt)`. `secret` is the
/// password, or its stored form, which is used directly.
pub fn md5_response(user: &str, secret: &str, salt: [u8; 4]) -> String {
    let derived;
    let inner = match stored_hex(secret) {
        Some(inner) => inner,
        None => {
            derived = password_hex(user, secret);
            &derived
        }
    };
    let mut h = Md5::new();
    h.update(inner.as_bytes());
    h.update(salt);
    format!("md5{}", hex(&h.finalize()))
}

/// Checks a client's `response` (PasswordMessage payload, without the NUL) against `secret`
/// (password or stored form), in constant time.
pub fn md5_verify(user: &str, secret: &str, salt: [u8; 4], response: &[u8]) -> bool {
    crate::scram::constant_time_eq(md5_response(user, secret, salt).as_bytes(), response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Cross-checked with Python hashlib, and "postgres2"/"postgres" with a real PostgreSQL 15
        // (`SET password_encryption = 'md5'; CREATE ROLE postgres2 PASSWORD 'postgres'`).
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            stored_md5("postgres", "postgres"),
            "md53175bce1d3201d16594cebf9d7eb3f9d"
        );
        assert_eq!(
            stored_md5("postgres2", "postgres"),
            "md5f2f8915a1d20bb8dcb940115f5bf3c05"
        );
        // python3 -c 'import hashlib; i=hashlib.md5(b"postgrespostgres").hexdigest();
        //   print("md5"+hashlib.md5(i.encode()+bytes([1,2,3,4])).hexdigest())'
        assert_eq!(
            md5_response("postgres", "postgres", [1, 2, 3, 4]),
            "md568be9ed08db75f318087ab337aaea044"
        );
    }

    #[test]
    fn stored_form_is_used_directly() {
        let stored = stored_md5("alice", "s3cret");
        let salt = [9, 8, 7, 6];
        assert_eq!(
            md5_response("alice", &stored, salt),
            md5_response("alice", "s3cret", salt)
        );
        assert!(is_stored_md5(&stored));
        assert!(!is_stored_md5("md5"));
        assert!(!is_stored_md5(
            &stored.to_uppercase().replacen("MD5", "md5", 1)
        ));
        assert!(!is_stored_md5("md5zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"));
        assert!(!is_stored_md5("md5é234567890123456789012345678901"));
        // 35 bytes, byte 3 inside a character: no prefix, so a password, not a stored form.
        let euros = "€".repeat(11) + "ab";
        assert_eq!(euros.len(), 35);
        assert!(!is_stored_md5(&euros));
        assert_eq!(
            md5_response("u", &euros, salt),
            md5_response("u", &stored_md5("u", &euros), salt)
        );
        assert!(!is_stored_md5(""));
    }

    #[test]
    fn verify() {
        let salt = [0xde, 0xad, 0xbe, 0xef];
        let response = md5_response("bob", "hunter2", salt);
        assert!(md5_verify("bob", "hunter2", salt, response.as_bytes()));
        assert!(md5_verify(
            "bob",
            &stored_md5("bob", "hunter2"),
            salt,
            response.as_bytes()
        ));
        assert!(!md5_verify("bob", "hunter3", salt, response.as_bytes()));
        assert!(!md5_verify("bobby", "hunter2", salt, response.as_bytes()));
        assert!(!md5_verify("bob", "hunter2", [0; 4], response.as_bytes()));
        assert!(!md5_verify("bob", "hunter2", salt, b""));
        assert!(!md5_verify(
            "bob",
            "hunter2",
            salt,
            &response.as_bytes()[..34]
        ));
    }
}
