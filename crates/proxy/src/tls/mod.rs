//! TLS for poolguard's two legs, on rustls with the ring provider (no OpenSSL to build against,
//! no process-global crypto provider: each configuration names its provider, so several proxies
//! in one process never share one by accident).
//!
//! - [`connect`]: poolguard as a TLS client of its servers (`[[backends]] server_tls`).

pub mod connect;
