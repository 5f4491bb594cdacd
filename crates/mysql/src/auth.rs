//! Password authentication, both sides: `mysql_native_password` and the fast path of
//! `caching_sha2_password`, plus the nonces a server hands out.
//!
//! poolguard verifies clients (acting as a server) and logs in to servers (acting as a client).
//! A configured password may be plaintext or, for native auth, a `*<40 hex>` hash as stored in
//! `mysql.user` (SHA1(SHA1(password))), which is enough to verify a client but not to log in.
//!
//! Invariants: comparisons of secrets are constant-time in the secret's content (lengths are
//! public); nothing here allocates from, or panics on, client-supplied data.

use std::fmt::Write as _;

use rand::Rng;
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Plugin name of the SHA1 challenge-response method.
pub const MYSQL_NATIVE_PASSWORD: &str = "mysql_native_password";
/// Plugin name of MySQL 8's default method.
pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
/// Plugin name of the cleartext method (only ever over TLS or a local socket).
pub const MYSQL_CLEAR_PASSWORD: &str = "mysql_clear_password";

/// Length of the nonce (a.k.a. scramble, auth-plugin-data) both methods use.
pub const NONCE_LEN: usize = 20;

/// caching_sha2_password: the client asks for the server's RSA public key (client -> server, 1 byte).
pub const CACHING_SHA2_REQUEST_PUBLIC_KEY: u8 = 0x02;
/// caching_sha2_password: sent as AuthMoreData `0x01 0x03`: the scramble matched the server's cache;
/// an OK packet follows.
pub const CACHING_SHA2_FAST_AUTH_SUCCESS: u8 = 0x03;
/// caching_sha2_password: sent as AuthMoreData `0x01 0x04`: the client must send the password in
/// full (cleartext + NUL over TLS, or RSA-encrypted after requesting the key).
pub const CACHING_SHA2_PERFORM_FULL_AUTH: u8 = 0x04;

/// `SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))`, the native client response.
/// `nonce` is the 20-byte auth-plugin-data without its trailing NUL.
pub fn native_scramble(password: &[u8], nonce: &[u8]) -> [u8; 20] {
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(stage2);
    let mask: [u8; 20] = h.finalize().into();
    xor(&stage1, &mask)
}

/// What a client sends for native auth: empty for an empty password (as libmysqlclient does),
/// the 20-byte scramble otherwise.
pub fn native_auth_response(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        Vec::new()
    } else {
        native_scramble(password, nonce).to_vec()
    }
}

/// The `mysql.user` form of a native password: `*` + uppercase hex of SHA1(SHA1(password)).
pub fn native_password_hash(password: &[u8]) -> String {
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut s = String::with_capacity(41);
    s.push('*');
    for b in stage2 {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Parses a `*<40 hex>` native hash (either case) into SHA1(SHA1(password)).
pub fn parse_native_hash(stored: &str) -> Option<[u8; 20]> {
    let hex = stored.strip_prefix('*')?.as_bytes();
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let &[hi, lo] = pair else {
            return None;
        };
        *o = hex_val(hi)? << 4 | hex_val(lo)?;
    }
    Some(out)
}

/// The value of one hex digit, either case.
fn hex_val(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Verifies a client's native response. `stored` is either the plaintext password or a native hash
/// (`*` + 40 hex digits; a plaintext password of exactly that shape is read as a hash). From the
/// hash: `SHA1(password) = response XOR SHA1(nonce + hash)`, then `SHA1` of that must equal the hash.
/// An empty stored password accepts only an empty response.
pub fn native_verify(stored: &str, nonce: &[u8], response: &[u8]) -> bool {
    if let Some(stage2) = parse_native_hash(stored) {
        return native_verify_hash(&stage2, nonce, response);
    }
    if stored.is_empty() {
        return response.is_empty();
    }
    constant_time_eq(&native_scramble(stored.as_bytes(), nonce), response)
}

/// Verifies a native response against SHA1(SHA1(password)).
pub fn native_verify_hash(stage2: &[u8; 20], nonce: &[u8], response: &[u8]) -> bool {
    let Ok(response) = <[u8; 20]>::try_from(response) else {
        return false;
    };
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(stage2);
    let mask: [u8; 20] = h.finalize().into();
    let candidate_stage1 = xor(&response, &mask);
    let candidate_stage2: [u8; 20] = Sha1::digest(candidate_stage1).into();
    constant_time_eq(&candidate_stage2, stage2)
}

/// `SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce)`, the caching_sha2_password
/// client response (fast path).
pub fn sha2_scramble(password: &[u8], nonce: &[u8]) -> [u8; 32] {
    let stage1: [u8; 32] = Sha256::digest(password).into();
    let stage2: [u8; 32] = Sha256::digest(stage1).into();
    xor(&stage1, &sha2_mask(&stage2, nonce))
}

fn sha2_mask(stage2: &[u8; 32], nonce: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(nonce);
    h.finalize().into()
}

/// What a client sends for caching_sha2_password: empty for an empty password, the 32-byte
/// scramble otherwise.
pub fn sha2_auth_response(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        Vec::new()
    } else {
        sha2_scramble(password, nonce).to_vec()
    }
}

/// Verifies a caching_sha2_password fast-path response against the plaintext password. An empty
/// password accepts only an empty response.
pub fn sha2_verify(password: &[u8], nonce: &[u8], response: &[u8]) -> bool {
    if password.is_empty() {
        return response.is_empty();
    }
    constant_time_eq(&sha2_scramble(password, nonce), response)
}

/// Verifies a caching_sha2_password fast-path response against SHA256(SHA256(password)) (what the
/// server keeps in its cache), without knowing the password.
pub fn sha2_verify_stage2(stage2: &[u8; 32], nonce: &[u8], response: &[u8]) -> bool {
    let Ok(response) = <[u8; 32]>::try_from(response) else {
        return false;
    };
    let candidate_stage1 = xor(&response, &sha2_mask(stage2, nonce));
    let candidate_stage2: [u8; 32] = Sha256::digest(candidate_stage1).into();
    constant_time_eq(&candidate_stage2, stage2)
}

/// SHA256(SHA256(password)), for [`sha2_verify_stage2`].
pub fn sha2_stage2(password: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(password)).into()
}

/// The password in a cleartext response (caching_sha2 full auth over TLS, mysql_clear_password):
/// the payload without its trailing NUL.
pub fn cleartext_password(payload: &[u8]) -> &[u8] {
    payload.strip_suffix(&[0]).unwrap_or(payload)
}

/// A fresh 20-byte nonce from the thread-local CSPRNG.
pub fn generate_nonce() -> [u8; NONCE_LEN] {
    generate_nonce_with(&mut rand::thread_rng())
}

/// A 20-byte nonce of printable ASCII (0x21..=0x7E) excluding `$`, like the servers' own: never
/// NUL, because the greeting and AuthSwitchRequest NUL-terminate it, and never `$`, which MySQL
/// reserves as a separator in stored caching_sha2 hashes.
pub fn generate_nonce_with<R: Rng + ?Sized>(rng: &mut R) -> [u8; NONCE_LEN] {
    let mut out = [0u8; NONCE_LEN];
    for b in &mut out {
        *b = loop {
            let c = rng.gen_range(0x21u8..=0x7e);
            if c != b'$' {
                break c;
            }
        };
    }
    out
}

/// Compares in time independent of where the first difference is (lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

fn xor<const N: usize>(a: &[u8; N], b: &[u8; N]) -> [u8; N] {
    let mut out = [0u8; N];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `!"#$%&'()*+,-./01234`: 20 bytes from 0x21.
    fn nonce() -> Vec<u8> {
        (0x21u8..0x21 + 20).collect()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    // Vectors computed independently with Python's hashlib (see the module docs for formulas).
    #[test]
    fn native_scramble_known_vector() {
        assert_eq!(
            hex(&native_scramble(b"secret", &nonce())),
            "1f44f306295a10870fd7895d358cb5f975d7d47f"
        );
    }

    #[test]
    fn native_hash_known_vectors() {
        // MySQL's PASSWORD('password') and PASSWORD('secret').
        assert_eq!(
            native_password_hash(b"password"),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
        assert_eq!(
            native_password_hash(b"secret"),
            "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
        );
    }

    #[test]
    fn native_hash_parsing_rejects_non_hex_and_multi_byte_text() {
        let hash = native_password_hash(b"password");
        assert!(parse_native_hash(&hash).is_some());
        assert_eq!(
            parse_native_hash(&hash.to_lowercase()),
            parse_native_hash(&hash)
        );
        assert_eq!(parse_native_hash(&hash[..40]), None);
        assert_eq!(parse_native_hash(""), None);
        assert_eq!(parse_native_hash("*"), None);
        // 40 bytes after '*', the last two being "é" (C3 A9): not hex, and no panic.
        let cut = format!("{}é", &hash[1..39]);
        assert_eq!(cut.len(), 40);
        assert_eq!(parse_native_hash(&format!("*{cut}")), None);
        // An odd split: "é" straddling a byte pair.
        let odd = format!("*{}é{}", &hash[1..2], &hash[4..41]);
        assert_eq!(odd.len(), 41);
        assert_eq!(parse_native_hash(&odd), None);
        // Latin-1 lookalikes of hex digits are not digits.
        assert_eq!(hex_val(0xc3), None);
        assert_eq!(
            (hex_val(b'f'), hex_val(b'F'), hex_val(b'g')),
            (Some(15), Some(15), None)
        );
    }

    #[test]
    fn native_verify_plaintext_and_hash() {
        let n = nonce();
        let resp = native_scramble(b"secret", &n);
        assert!(native_verify("secret", &n, &resp));
        assert!(native_verify(
            "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7",
            &n,
            &resp
        ));
        assert!(native_verify(
            "*14e65567abdb5135d0cfd9a70b3032c179a49ee7",
            &n,
            &resp
        ));
        assert!(!native_verify("secreT", &n, &resp));
        assert!(!native_verify(
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19",
            &n,
            &resp
        ));
        assert!(!native_verify("secret", &n, &resp[..19]));
        assert!(!native_verify("secret", &n, &[]));
        // Wrong nonce.
        assert!(!native_verify("secret", &[0x41; 20], &resp));
        // Empty password: only the empty response.
        assert!(native_verify("", &n, &[]));
        assert!(!native_verify("", &n, &resp));
        assert!(native_auth_response(b"", &n).is_empty());
        // Not a hash: wrong length or non-hex is treated as plaintext.
        assert_eq!(parse_native_hash("*ABC"), None);
        assert_eq!(
            parse_native_hash("*G470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"),
            None
        );
    }

    #[test]
    fn sha2_scramble_known_vector() {
        assert_eq!(
            hex(&sha2_scramble(b"secret", &nonce())),
            "3e6e1d1225dfe8531b46e47caf897453dba8211b1e2fdca5e10ef0f98718b18e"
        );
    }

    #[test]
    fn sha2_verify_paths() {
        let n = nonce();
        let resp = sha2_auth_response(b"secret", &n);
        assert!(sha2_verify(b"secret", &n, &resp));
        assert!(!sha2_verify(b"Secret", &n, &resp));
        assert!(!sha2_verify(b"secret", &n, &resp[1..]));
        assert!(sha2_verify_stage2(&sha2_stage2(b"secret"), &n, &resp));
        assert!(!sha2_verify_stage2(&sha2_stage2(b"other"), &n, &resp));
        assert!(sha2_verify(b"", &n, &[]));
        assert!(!sha2_verify(b"", &n, &resp));
    }

    #[test]
    fn cleartext_strips_one_nul() {
        assert_eq!(cleartext_password(b"pw\0"), b"pw");
        assert_eq!(cleartext_password(b"pw"), b"pw");
        assert_eq!(cleartext_password(b""), b"");
    }

    #[test]
    fn nonces_are_printable_and_vary() {
        let a = generate_nonce();
        let b = generate_nonce();
        assert_ne!(a, b);
        for c in a.iter().chain(&b) {
            assert!((0x21..=0x7e).contains(c) && *c != b'$', "{c:#x}");
        }
    }

    #[test]
    fn constant_time_eq_semantics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    proptest! {
        #[test]
        fn round_trips_for_any_password(pw in proptest::collection::vec(any::<u8>(), 1..40), n in proptest::array::uniform20(any::<u8>())) {
            let r = native_scramble(&pw, &n);
            prop_assert!(native_verify_hash(&parse_native_hash(&native_password_hash(&pw)).unwrap(), &n, &r));
            let s = sha2_scramble(&pw, &n);
            prop_assert!(sha2_verify(&pw, &n, &s));
            prop_assert!(sha2_verify_stage2(&sha2_stage2(&pw), &n, &s));
        }

        #[test]
        fn random_responses_never_panic(stored in ".{0,45}", resp in proptest::collection::vec(any::<u8>(), 0..40)) {
            let n = nonce();
            let _ = native_verify(&stored, &n, &resp);
            let _ = sha2_verify(stored.as_bytes(), &n, &resp);
            let _ = sha2_verify_stage2(&[0; 32], &n, &resp);
        }
    }
}
