//! PostgreSQL wire protocol (v3) codec and authentication exchanges, with **no I/O at all**.
//!
//! The proxy owns sockets and buffers; this crate only turns bytes into values and back:
//! - [`framing`]: "is a whole tagged message here?" and splitting it off a buffer;
//! - [`startup`]: the untagged packets a client sends first (StartupMessage, SSLRequest, ...);
//! - [`backend`] / [`frontend`]: encoders and body decoders for what servers / clients send;
//! - [`scram`] and [`md5auth`]: the two password exchanges, both sides;
//! - [`tags`]: message type bytes.
//!
//! Invariants: every length read from the network is bounded before it is trusted, nothing panics
//! on any input, and no allocation is sized by a length field before the bytes it announces are
//! present. Decoders return `Ok(None)` when more bytes are needed, which is normal and not an
//! error.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
// Fail closed: bytes from the network must never panic the proxy. Tests may index freely.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::arithmetic_side_effects
    )
)]

pub mod backend;
pub mod framing;
pub mod frontend;
pub mod md5auth;
pub mod scram;
pub mod startup;
pub mod tags;

mod wire;

pub use framing::{decode_frame, frame_len, Frame, DEFAULT_MAX_MESSAGE_LEN};
pub use scram::ScramError;
pub use startup::{decode_startup, StartupRequest};

/// Why bytes could not be decoded. Any of these means the peer is broken or hostile: the connection
/// should be closed (after an ErrorResponse, when talking to a client).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The body ended before a field it must contain.
    #[error("message too short: {what} needs {needed} byte(s) but only {available} remain")]
    TooShort {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        available: usize,
    },
    /// A length field announces more than the configured limit.
    #[error("message length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// The announced length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// A length field is negative or too small to cover the header it is part of
    /// (4 for tagged messages, 8 for startup packets).
    #[error("invalid length field {0}: too small to cover the message header")]
    BadLength(i64),
    /// The bytes do not follow the message's layout.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// A string field is not valid UTF-8.
    #[error("string field is not valid UTF-8")]
    Utf8,
    /// A startup packet asks for a protocol other than 3.x.
    #[error(
        "unsupported frontend protocol {}.{} (code {0}); only protocol 3.x is supported",
        .0 >> 16,
        .0 & 0xffff
    )]
    UnsupportedProtocol(u32),
    /// A startup packet lacks the mandatory `user` parameter.
    #[error("startup packet has no \"user\" parameter")]
    MissingUser,
}
