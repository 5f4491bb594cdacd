//! The MySQL session state machine: the real proxy between scripted clients and a scripted
//! server (see `poolguard_proxy::fuzzing::session::mysql`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    poolguard_proxy::fuzzing::session::mysql::mysql_session(data);
});
