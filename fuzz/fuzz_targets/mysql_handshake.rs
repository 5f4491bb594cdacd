//! Fuzz target: MySQL connection-phase and response payload decoders (handshake response, COM_CHANGE_USER, greeting, auth switch, OK/ERR/EOF).
//! The checks live in `poolguard_proxy::fuzzing::mysql_handshake`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::mysql_handshake(data));
