//! Messages a server (backend) sends: encoders, used when the proxy speaks as a server to its
//! clients, and body decoders, used when it reads real servers.
//!
//! Invariants: encoders append one complete message to the caller's buffer (tag, length, body) and
//! never panic; string arguments are cut at a NUL, which the protocol cannot carry. Decoders take
//! the body of a frame (see [`crate::framing`]), read it with bounds checks, reject trailing bytes,
//! and allocate only in proportion to bytes actually present.

mod decode;
mod encode;

pub use decode::*;
pub use encode::*;

/// ReadyForQuery status: idle, not in a transaction block.
pub const IDLE: u8 = b'I';
/// ReadyForQuery status: in a transaction block.
pub const IN_TRANSACTION: u8 = b'T';
/// ReadyForQuery status: in a failed transaction block (queries rejected until it ends).
pub const IN_FAILED_TRANSACTION: u8 = b'E';

/// Authentication request codes (the Int32 after the `R` length).
pub mod auth_code {
    /// AuthenticationOk.
    pub const OK: i32 = 0;
    /// AuthenticationKerberosV5 (unsupported since PostgreSQL 9.4).
    pub const KERBEROS_V5: i32 = 2;
    /// AuthenticationCleartextPassword.
    pub const CLEARTEXT_PASSWORD: i32 = 3;
    /// AuthenticationMD5Password.
    pub const MD5_PASSWORD: i32 = 5;
    /// AuthenticationGSS.
    pub const GSS: i32 = 7;
    /// AuthenticationGSSContinue.
    pub const GSS_CONTINUE: i32 = 8;
    /// AuthenticationSSPI.
    pub const SSPI: i32 = 9;
    /// AuthenticationSASL.
    pub const SASL: i32 = 10;
    /// AuthenticationSASLContinue.
    pub const SASL_CONTINUE: i32 = 11;
    /// AuthenticationSASLFinal.
    pub const SASL_FINAL: i32 = 12;
}

/// Oid of type `text`, the only column type the proxy's own result sets use.
pub const TEXT_OID: u32 = 25;
