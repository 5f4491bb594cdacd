//! Fuzz target: The MySQL response tracker fed arbitrary frames.
//! The checks live in `poolguard_proxy::fuzzing::mysql_tracker`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::mysql_tracker(data));
