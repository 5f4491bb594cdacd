//! TLS for poolguard, built on rustls with the *ring* provider installed explicitly in each
//! config (no process-wide default provider: several proxies with different settings may run in
//! one process, and nothing here is global).
//!
//! [`accept`]: poolguard as the TLS server, facing its clients (both front doors).

pub mod accept;
