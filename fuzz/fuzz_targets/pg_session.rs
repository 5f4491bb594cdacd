//! The PostgreSQL session state machine: the real proxy between scripted clients and a
//! scripted server (see `poolguard_proxy::fuzzing::session::pg`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    poolguard_proxy::fuzzing::session::pg::pg_session(data);
});
