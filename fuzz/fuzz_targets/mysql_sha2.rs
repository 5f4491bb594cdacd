//! Fuzz target: caching_sha2_password full authentication, both sides (the client's packet after
//! 0x04 on poolguard's door; the server's AuthMoreData, PEM keys included, towards MySQL 8).
//! The checks live in `poolguard_proxy::fuzzing::mysql_sha2`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::mysql_sha2(data));
