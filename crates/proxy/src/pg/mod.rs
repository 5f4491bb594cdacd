//! The PostgreSQL front door: client login, the relay session, server connections, cancel-key
//! mapping and reclaiming servers from departed clients.

pub mod cancel;
pub mod console;
pub mod features;
pub mod login;
pub mod params;
pub mod pending;
pub mod prepared;
pub mod reclaim;
pub mod scan;
pub mod server;
pub mod session;
