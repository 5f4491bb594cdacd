//! The PostgreSQL front door: client login, the relay session, server connections, cancel-key
//! mapping and reclaiming servers from departed clients.
//!
//! Fail closed: bytes from a client or a server must never panic a session, so indexing,
//! string slicing and unchecked arithmetic are refused here outside tests (as in poolguard-pg).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::arithmetic_side_effects
    )
)]

pub mod authquery;
pub mod cancel;
pub mod console;
pub mod credential;
pub mod features;
pub mod login;
pub mod negotiate;
pub mod params;
pub mod pending;
pub mod prepared;
pub mod reclaim;
pub mod scan;
pub mod server;
pub mod session;
