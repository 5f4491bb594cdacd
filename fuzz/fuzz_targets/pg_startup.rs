//! Fuzz target: PostgreSQL startup packets: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.
//! The checks live in `poolguard_proxy::fuzzing::pg_startup`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::pg_startup(data));
