//! Fuzz target: The relay's PostgreSQL message scanner (`pg::scan::Scanner`).
//! The checks live in `poolguard_proxy::fuzzing::pg_scanner`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::pg_scanner(data));
