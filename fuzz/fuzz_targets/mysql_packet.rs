//! Fuzz target: MySQL packet framing: `PacketCodec` and `FrameDecoder`.
//! The checks live in `poolguard_proxy::fuzzing::mysql_packet`, shared with the corpus replay test.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| poolguard_proxy::fuzzing::mysql_packet(data));
