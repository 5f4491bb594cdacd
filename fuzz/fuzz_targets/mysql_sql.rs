//! Fuzz target: The MySQL SQL scanner (`mysql::sql`).
//! The checks live in `poolguard_proxy::fuzzing::mysql_sql`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::mysql_sql(data));
