//! HTTPS on the admin listener (`[admin] tls_cert_file` / `tls_key_file`): each accepted
//! connection goes through a TLS handshake, then the same router as plain HTTP.
//!
//! Invariants: the listener is HTTPS only once started so (a plaintext request fails its
//! handshake and is closed); the certificate is taken from the [`Source`] per connection, so a
//! reload changes it for new connections only; at most [`MAX_CONNECTIONS`] connections are
//! served at once and a handshake has [`HANDSHAKE_TIMEOUT`] to finish, so clients that open
//! connections and send nothing cost a bounded number of tasks, never the listener.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::Source;

/// Admin connections served at once (scrapers, dashboards and operators; not clients).
const MAX_CONNECTIONS: usize = 64;
/// Time a connection has to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn serve(listener: TcpListener, app: axum::Router, source: Arc<dyn Source>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // never closed
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors, typically: wait instead of spinning on the error.
                tracing::warn!(error = %e, "admin HTTPS accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(acceptor) = source.tls() else {
            continue; // a reload removed the keys: HTTPS stays required until a restart
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "admin TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "admin TLS handshake timed out");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "admin HTTPS connection ended with an error");
            }
        });
    }
}
