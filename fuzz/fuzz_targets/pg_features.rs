//! Fuzz target: The PostgreSQL SQL scanner that detects session state (`pg::features`).
//! The checks live in `poolguard_proxy::fuzzing::pg_features`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::pg_features(data));
