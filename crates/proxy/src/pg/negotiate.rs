//! Before a PostgreSQL client's startup packet: encryption negotiation on a door that offers
//! TLS (`client_tls` allow/require). A door without TLS skips this; [`super::login`] answers
//! SSLRequest and GSSENCRequest with 'N' as before.
//!
//! - SSLRequest: answered 'S', then the TLS handshake; the startup packet follows over TLS.
//! - GSSENCRequest: answered 'N' (libpq then tries SSLRequest, or plaintext).
//! - Direct TLS (PostgreSQL 17's `sslnegotiation=direct`): the first byte is a TLS handshake
//!   record (0x16); the handshake starts at once and must agree on ALPN "postgresql", as the
//!   server requires.
//! - Anything else (a StartupMessage, a CancelRequest) is left in the buffer for the login.
//!
//! Invariant: bytes a client sent after its SSLRequest and before the handshake are refused
//! (08P01), never read as part of the encrypted session (the injection PostgreSQL fixed as
//! CVE-2021-23214).

use bytes::{Buf, BytesMut};
use poolguard_pg::startup::{GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::ProxyError;
use crate::stream::ClientStream;
use crate::tls::accept::ClientTls;

/// The ALPN protocol PostgreSQL clients announce (and direct TLS requires).
pub const POSTGRES_ALPN: &[u8] = b"postgresql";

/// First byte of a TLS record carrying a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Negotiates encryption for the client in `slot`. `Ok(true)`: go on with the login (the slot
/// holds the client, on TLS or not); `Ok(false)`: the client left or its handshake failed, and
/// there is no one to answer (the slot may be empty).
pub async fn negotiate(
    slot: &mut Option<ClientStream>,
    buf: &mut BytesMut,
    tls: &ClientTls,
) -> Result<bool, ProxyError> {
    if !tls.offered() {
        return Ok(true);
    }
    let Some(ClientStream::Plain(tcp)) = slot.as_mut() else {
        return Ok(true);
    };
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) | Err(_) => return Ok(false), // port probes that connect and leave
        Ok(_) => {}
    }
    if first == [TLS_HANDSHAKE_RECORD] {
        if !handshake(slot, tls).await {
            return Ok(false);
        }
        // Direct TLS has no SSLRequest to say what follows: ALPN is what says it.
        let alpn = slot.as_ref().and_then(ClientStream::alpn_protocol);
        if alpn != Some(POSTGRES_ALPN) {
            tracing::info!(
                "direct TLS connection without ALPN \"postgresql\" refused, as PostgreSQL does"
            );
            return Ok(false);
        }
        return Ok(true);
    }
    loop {
        while buf.len() < 8 {
            buf.reserve(64);
            match tcp.read_buf(buf).await {
                Ok(0) | Err(_) => return Ok(false),
                Ok(_) => {}
            }
        }
        let header = buf.get(..8).and_then(|h| <[u8; 8]>::try_from(h).ok());
        let Some([l0, l1, l2, l3, c0, c1, c2, c3]) = header else {
            return Ok(true);
        };
        if u32::from_be_bytes([l0, l1, l2, l3]) != 8 {
            return Ok(true); // a StartupMessage or CancelRequest: the login reads it
        }
        match u32::from_be_bytes([c0, c1, c2, c3]) {
            GSSENC_REQUEST_CODE => {
                buf.advance(8);
                tcp.write_all(b"N").await.map_err(ProxyError::client_io)?;
            }
            SSL_REQUEST_CODE => {
                buf.advance(8);
                if !buf.is_empty() {
                    return Err(ProxyError::Protocol(
                        "received unencrypted data after SSL request".into(),
                    ));
                }
                tcp.write_all(b"S").await.map_err(ProxyError::client_io)?;
                return Ok(handshake(slot, tls).await);
            }
            _ => return Ok(true),
        }
    }
}

/// The TLS handshake; logged and `false` when it fails (the client sees the TLS alert).
async fn handshake(slot: &mut Option<ClientStream>, tls: &ClientTls) -> bool {
    let peer = slot.as_ref().and_then(|c| c.peer_addr().ok());
    match tls.upgrade(slot).await {
        Ok(()) => true,
        Err(e) => {
            tracing::info!(client = ?peer, error = %e, "client TLS handshake failed");
            false
        }
    }
}
