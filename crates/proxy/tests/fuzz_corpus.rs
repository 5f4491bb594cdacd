//! The fuzz corpus as a regression suite on stable Rust, without libFuzzer: every file committed
//! under `fuzz/corpus/<target>/` goes through the same function the fuzz target calls
//! (`poolguard_proxy::fuzzing`), and so do a bounded number of deterministic mutations of each
//! (bit flips, truncations, splices), a small fuzz run that needs no instrumentation. The real
//! coverage-guided campaign is `scripts/fuzz`; see docs/fuzzing.md.
//!
//! The session targets (`pg_session`, `mysql_session`: the real proxy between scripted clients
//! and a scripted server, `poolguard_proxy::fuzzing::session`) replay their corpus and a few
//! hundred seeded random scripts instead: each input there is a whole conversation, not bytes
//! to mutate.

use std::path::{Path, PathBuf};

use poolguard_proxy::fuzzing::{session, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("corpus file");
            (p, bytes)
        })
        .collect();
    // Directory order differs between machines; mutations must not.
    files.sort();
    files
}

/// Runs `f` on `input`, naming the input and the target if it panics.
fn check(target: &str, what: &dyn std::fmt::Display, f: fn(&[u8]), input: &[u8]) {
    if std::panic::catch_unwind(|| f(input)).is_err() {
        panic!(
            "fuzz target {target} failed on {what} ({} bytes: {input:02x?})",
            input.len()
        );
    }
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in TARGETS {
        assert!(
            !corpus(name).is_empty(),
            "fuzz/corpus/{name} is empty: run scripts/fuzz {name}"
        );
    }
}

#[test]
fn committed_corpus_replays_cleanly() {
    for (name, f) in TARGETS {
        for (path, input) in corpus(name) {
            check(name, &path.display(), *f, &input);
        }
    }
}

/// xorshift64*: deterministic, so a failure here reproduces on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `input`, spliced with `other` sometimes, as libFuzzer's simplest mutators do.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 0xff, 0x7f, 0x80, b';', b'\'', b'$'][rng.below(7)];
            }
            2 => v.truncate(rng.below(v.len() + 1)),
            3 if !other.is_empty() => {
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                let to = from + rng.below(other.len() - from + 1);
                v.splice(at..at, other[from..to].iter().copied());
            }
            4 if !v.is_empty() => {
                let i = rng.below(v.len());
                v.remove(i);
            }
            _ => {
                let at = rng.below(v.len() + 1);
                v.insert(at, rng.next() as u8);
            }
        }
    }
    v
}

/// Mutations per corpus file: enough to exercise the targets' error paths, small enough that
/// the suite stays fast in a debug build.
const MUTATIONS: usize = 32;

#[test]
fn mutated_corpus_never_breaks_an_invariant() {
    for (name, f) in TARGETS {
        let files = corpus(name);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for (i, (path, input)) in files.iter().enumerate() {
            let other = &files[(i + 1) % files.len()].1;
            for round in 0..MUTATIONS {
                let m = mutate(&mut rng, input, other);
                let what = format!("mutation {round} of {}", path.display());
                check(name, &what, *f, &m);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session targets

/// Random scripts per target: a few hundred, each up to 48 bytes (a dozen steps or so), which
/// keeps a debug build's run to seconds.
const SCRIPTS: usize = 300;

/// The committed corpus, then [`SCRIPTS`] random scripts.
fn replay_session(target: &str, f: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    for (path, input) in &files {
        check(target, &path.display(), f, input);
    }
    let mut rng = Rng(0x5e55_10f0_22ed_c0de ^ target.len() as u64);
    for i in 0..SCRIPTS {
        let len = (rng.next() % 48) as usize;
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(target, &format!("random script {i}"), f, &input);
    }
}

#[test]
fn pg_sessions_hand_over_only_clean_servers() {
    replay_session("pg_session", session::pg::pg_session);
}

#[test]
fn mysql_sessions_hand_over_only_clean_servers() {
    replay_session("mysql_session", session::mysql::mysql_session);
}

/// Regression: a ReadyForQuery without its status byte was taken for 'I' (idle) by the
/// session (`pg/session/from_server.rs`), so a server that had said nothing about its
/// transaction went back to the pool and served the next client. Found by this harness
/// (random script 11). One client gets that answer and leaves; then clients of the same pool
/// must find every server clean.
#[test]
fn pg_ready_for_query_without_status_is_not_idle() {
    // 1 client, database tx; Query with plan ShortReady (status byte 0, kind 14), copy byte;
    // then Disconnect (step 13).
    session::pg::pg_session(&[0, 0, 0, 0, 0, 14, 0, 0, 13]);
    // 3 clients on tx, two plain queries each (Rows, 0 rows, status I): between them they
    // lease both servers of the pool.
    let query = [0u8, 0, 0, 0, 0, 0];
    let mut script = vec![2, 0, 0, 0];
    for round in 0..6u8 {
        script.push(round % 3);
        script.extend_from_slice(&query);
    }
    for _ in 0..4 {
        session::pg::pg_session(&script);
    }
}

/// Regression: a result set ended by a one-byte (pre-4.1) EOF, which carries no status flags,
/// was taken for "status unchanged" by the response tracker (`end_marker_status`), so in
/// transaction mode a server whose transaction status nobody knew went back to the pool and
/// served the next client. Found by this harness while writing its malformed-packet plans.
#[test]
fn mysql_eof_without_status_is_not_idle() {
    // 2 clients on tx; client 0: a query answered with a text result set ending in a one-byte
    // EOF (plan: no transaction, Broken kind 3); then both run plain queries (plan OK, no
    // transaction), so the server, were it released, would reach client 1.
    let mut script = vec![1, 0, 0, 0, 0, 0, 14, 3, 0];
    for c in [1u8, 1, 0, 1] {
        script.extend_from_slice(&[c, 0, 0, 0, 0, 0]);
    }
    for _ in 0..4 {
        session::mysql::mysql_session(&script);
    }
}
