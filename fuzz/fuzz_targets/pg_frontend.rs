//! Fuzz target: PostgreSQL frontend (client) messages: framing and body decoders.
//! The checks live in `poolguard_proxy::fuzzing::pg_frontend`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::pg_frontend(data));
