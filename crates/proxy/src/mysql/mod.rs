//! The MySQL/MariaDB front door: client login, the relay session, server connections,
//! session-state synchronisation, prepared statements under transaction pooling, KILL routing
//! and reclaiming servers from departed clients.
//!
//! Data flows as on the PostgreSQL side: [`login`] -> [`session`] -> pool lease ([`pools`]) ->
//! [`server`] connection -> back to the client. The codec and authentication primitives live in
//! `poolguard-mysql` (no I/O); this module owns sockets, pools and policy.
// Fail closed: bytes from a client or a server must never panic the proxy. Tests may index freely.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::arithmetic_side_effects
    )
)]

pub mod auth;
pub mod caps;
pub mod kill;
pub mod login;
pub mod pools;
pub mod reclaim;
pub mod server;
pub mod session;
pub mod sha2;
pub mod sql;
pub mod stmts;
pub mod sync;
pub mod wire;
