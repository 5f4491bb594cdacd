//! Empty: the differential test is `tests/features.rs`.
