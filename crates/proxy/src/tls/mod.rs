//! TLS for poolguard's two legs, on rustls with the *ring* provider installed explicitly in each
//! config (no OpenSSL to build against, no process-wide default provider: several proxies with
//! different settings may run in one process, and nothing here is global).
//!
//! - [`accept`]: poolguard as the TLS server, facing its clients (both front doors, admin).
//! - [`connect`]: poolguard as a TLS client of its servers (`[[backends]] server_tls`).
//! - [`socket`]: the server sockets those connections start from (TCP or a Unix socket).

pub mod accept;
pub mod connect;
pub mod socket;
