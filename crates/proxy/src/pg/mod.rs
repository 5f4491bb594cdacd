//! The PostgreSQL front door: client login, the relay session, server connections, cancel-key
//! mapping and reclaiming servers from departed clients.

pub mod cancel;
pub mod login;
pub mod reclaim;
pub mod scan;
pub mod server;
pub mod session;
