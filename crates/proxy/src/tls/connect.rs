//! poolguard as a TLS client of its servers: a backend's `server_tls` settings made into a
//! rustls configuration once (at config load), and the stream a server connection then uses.
//!
//! Modes, as libpq means them:
//! - `disable`: never TLS.
//! - `prefer` (default): TLS if the server offers it, plain if it says no. No verification.
//! - `require`: TLS or no connection. No verification.
//! - `verify-ca`: TLS, and the certificate chains to the CA (any name).
//! - `verify-full`: TLS, the chain, and the certificate is for the configured host's name (an
//!   IP address is matched against the certificate's IP SANs).
//!
//! As libpq does, a `server_tls_ca_file` given with `prefer` or `require` makes them verify the
//! chain too: the file says which servers are trusted, so it is never ignored silently.
//! Without a CA file, `verify-*` trust the system's roots (`rustls-native-certs`: on Debian
//! /etc/ssl/certs/ca-certificates.crt, honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`), so an
//! organisation's CA installed there is trusted and a managed service's public CA is too.
//!
//! Invariants:
//! - A configuration that cannot be built (unreadable file, no certificate in it, a key that does
//!   not match) is a config error naming the key: found at `check`, start and reload, never at
//!   the first connect.
//! - [`ServerStream`] is what every server connection reads and writes; its plain variant adds
//!   one `match` to a read or write. Under TLS, [`ServerStream::write_all`] also flushes: rustls
//!   may still hold encrypted records when a write returns, and a request left there would
//!   never reach the server.
//! - A handshake failure says why (`TLS certificate verify failed: UnknownIssuer`); the callers
//!   put the host in front and count it as a failure of the host.

use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// `server_tls`: how a backend's connections use TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerTlsMode {
    Disable,
    /// What libpq and PgBouncer (since 1.20) do by default.
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl ServerTlsMode {
    pub const NAMES: &'static str = "disable, prefer, require, verify-ca or verify-full";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// A server that does not do TLS is refused (every mode but `disable` and `prefer`).
    pub fn required(self) -> bool {
        !matches!(self, Self::Disable | Self::Prefer)
    }
}

impl fmt::Display for ServerTlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The files of a backend's `server_tls_*` keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerTlsFiles {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Why a backend's TLS settings cannot be used (a config error: the caller names the key).
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("no system CA certificates found ({0}); set server_tls_ca_file")]
    NoSystemRoots(String),
    #[error("{0}")]
    Rustls(String),
    #[error("server_tls_cert_file and server_tls_key_file go together")]
    HalfClientCert,
}

/// Why TLS to one server failed (the caller says which server).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate verify failed: {0}")]
    Verify(String),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("server does not accept TLS, and server_tls = {0} requires it")]
    NotOffered(ServerTlsMode),
    #[error("{0:?} is not a usable TLS server name")]
    BadName(String),
}

/// A backend's TLS settings, built once: cheap to clone (the rustls config is shared).
#[derive(Clone)]
pub struct ServerTls {
    mode: ServerTlsMode,
    files: ServerTlsFiles,
    /// `None` exactly when `mode` is `disable`.
    config: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Never TLS (one-off connections that have no backend to follow).
    pub fn disabled() -> Self {
        ServerTls {
            mode: ServerTlsMode::Disable,
            files: ServerTlsFiles::default(),
            config: None,
        }
    }

    /// Reads the files and builds the rustls configuration for `mode`.
    pub fn new(mode: ServerTlsMode, files: &ServerTlsFiles) -> Result<Self, TlsConfigError> {
        if mode == ServerTlsMode::Disable {
            return Ok(Self::disabled());
        }
        // ring, as the build asks (no C toolchain beyond what ring needs, no OpenSSL); rustls
        // marks its provider deprecated only because it lacks post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?;
        let roots = match (mode, &files.ca_file) {
            (ServerTlsMode::Prefer | ServerTlsMode::Require, None) => None,
            (_, ca) => Some(roots(ca.as_deref())?),
        };
        let verifier = Verifier::new(provider, roots, mode == ServerTlsMode::VerifyFull)?;
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let config = match (&files.cert_file, &files.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError::Read {
                    path: key.display().to_string(),
                    reason: e.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(rustls_error)?
            }
            _ => return Err(TlsConfigError::HalfClientCert),
        };
        Ok(ServerTls {
            mode,
            files: files.clone(),
            config: Some(Arc::new(config)),
        })
    }

    pub fn mode(&self) -> ServerTlsMode {
        self.mode
    }

    /// Same mode and files (a reload that changes either retires the backend's connections).
    pub fn same_settings(&self, other: &ServerTls) -> bool {
        self.mode == other.mode && self.files == other.files
    }

    /// How to reach `host` (`host:port` as configured) with TLS; `None` under `disable`.
    pub fn dest(&self, host: &str) -> Result<Option<TlsDest>, TlsError> {
        let Some(config) = &self.config else {
            return Ok(None);
        };
        let name = host_name(host);
        let name = ServerName::try_from(name.to_owned())
            .map_err(|_| TlsError::BadName(name.to_owned()))?;
        Ok(Some(TlsDest {
            config: config.clone(),
            name,
            mode: self.mode,
        }))
    }
}

/// The host part of `host:port`, `[v6]:port`, or a bare host.
fn host_name(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(h, _)| h);
    }
    match addr.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address.
        Some((h, _)) if !h.contains(':') => h,
        _ => addr,
    }
}

/// One server's TLS: the shared configuration and the name to verify. Kept by a connection so
/// side connections to the same server (a PostgreSQL cancel) use TLS the same way.
#[derive(Clone)]
pub struct TlsDest {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    mode: ServerTlsMode,
}

impl fmt::Debug for TlsDest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsDest")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl TlsDest {
    /// Whether a server that does not do TLS must be refused.
    pub fn required(&self) -> bool {
        self.mode.required()
    }

    /// The error for a server that declined TLS when it is required.
    pub fn not_offered(&self) -> TlsError {
        TlsError::NotOffered(self.mode)
    }

    /// The TLS handshake over `tcp` (the protocol's own "let us talk TLS" is done already).
    pub async fn handshake(&self, tcp: TcpStream) -> Result<ServerStream, TlsError> {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        match connector.connect(self.name.clone(), tcp).await {
            Ok(s) => Ok(ServerStream::Tls(Box::new(s))),
            Err(e) => Err(handshake_error(e)),
        }
    }
}

/// tokio-rustls reports a rejected certificate as an io::Error wrapping rustls' error: the
/// reason (UnknownIssuer, NotValidForName, Expired...) is what an operator needs.
fn handshake_error(e: io::Error) -> TlsError {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => TlsError::Verify(c.to_string()),
        _ => TlsError::Handshake(e),
    }
}

fn rustls_error(e: impl fmt::Display) -> TlsConfigError {
    TlsConfigError::Rustls(e.to_string())
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let read_error = |e: rustls::pki_types::pem::Error| TlsConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// The CA file's certificates, or the system's roots.
fn roots(ca_file: Option<&Path>) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                store.add(cert).map_err(rustls_error)?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            // Some unparsable system certificates are normal (old formats); only an empty
            // store is a problem.
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(TlsConfigError::NoSystemRoots(why.join("; ")));
            }
        }
    }
    Ok(Arc::new(store))
}

/// What a backend's connections check of the server's certificate. One verifier for every
/// mode, so the handshake signatures are always checked the same way (with the provider's
/// algorithms, as WebPKI's own verifier does): the peer holds the key of the certificate it
/// sent, whatever else is verified.
#[derive(Debug)]
struct Verifier {
    provider: Arc<CryptoProvider>,
    /// The chain (and the name) through WebPKI; `None`: nothing (`prefer`/`require` without
    /// a CA file: encryption without authentication, as libpq).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// `verify-full`. Without it a name mismatch is accepted: WebPKI checks the chain before
    /// the name, so that error means the chain was good (`verify-ca`).
    check_name: bool,
}

impl Verifier {
    fn new(
        provider: Arc<CryptoProvider>,
        roots: Option<Arc<RootCertStore>>,
        check_name: bool,
    ) -> Result<Self, TlsConfigError> {
        let webpki = match roots {
            Some(roots) => Some(
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(rustls_error)?,
            ),
            None => None,
        };
        Ok(Verifier {
            provider,
            webpki,
            check_name,
        })
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A server connection's byte stream: plain TCP, TLS over it, or a Unix socket (see
/// [`super::socket`]).
pub enum ServerStream {
    Plain(TcpStream),
    Unix(tokio::net::UnixStream),
    /// Boxed: rustls' connection state is a few KiB, the plain path should not carry it.
    Tls(Box<TlsStream<TcpStream>>),
}

impl ServerStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ServerStream::Tls(_))
    }

    /// Writes all of `buf`. Under TLS it also flushes (see the module invariants). Named like
    /// `AsyncWriteExt::write_all` on purpose: as an inherent method it is the one every
    /// `stream.write_all(..)` call on a server connection resolves to.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            ServerStream::Plain(s) => s.write_all(buf).await,
            ServerStream::Unix(s) => s.write_all(buf).await,
            ServerStream::Tls(s) => {
                s.write_all(buf).await?;
                s.flush().await
            }
        }
    }

    /// Whether an idle connection is still open and silent: one read is polled, without
    /// waiting. Nothing to read means alive; anything else (end of stream, an error, or bytes
    /// the server sent unasked, such as a MariaDB "connection killed" notice) means the
    /// connection is not fit for reuse. Under TLS the read goes through rustls, so records
    /// that carry no data (a TLS 1.3 session ticket) do not count as data.
    ///
    /// Polled with a waker that does nothing: whoever reads this stream next polls it with its
    /// own, and tokio keeps the readiness itself, so nothing that arrives meanwhile is missed.
    /// Polled outside tokio's cooperative budget: a task that spent its budget would get
    /// `Pending` before the socket is even looked at, and a dead connection would pass.
    pub fn idle_and_open(&mut self) -> bool {
        let mut probe = [0u8; 1];
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let read = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut probe);
            Pin::new(&mut *self).poll_read(cx, &mut buf)
        });
        let mut read = std::pin::pin!(tokio::task::unconstrained(read));
        std::future::Future::poll(read.as_mut(), &mut cx).is_pending()
    }

    /// Best-effort goodbye without waiting: `bytes` (a Terminate, a COM_QUIT) and, under TLS,
    /// a close_notify, written only as far as the socket takes them now.
    pub fn send_now(&mut self, bytes: &[u8]) {
        match self {
            ServerStream::Plain(s) => {
                let _ = s.try_write(bytes);
            }
            ServerStream::Unix(s) => {
                let _ = s.try_write(bytes);
            }
            ServerStream::Tls(s) => {
                let (tcp, conn) = s.get_mut();
                let _ = conn.writer().write_all(bytes);
                conn.send_close_notify();
                let mut out = crate::stream::TryWrite(tcp);
                while conn.wants_write() {
                    match conn.write_tls(&mut out) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerStream::Plain(s) => s.is_write_vectored(),
            ServerStream::Unix(s) => s.is_write_vectored(),
            ServerStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(host_name("db.example.com:5432"), "db.example.com");
        assert_eq!(host_name("[::1]:5432"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("localhost"), "localhost");
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [
            ServerTlsMode::Disable,
            ServerTlsMode::Prefer,
            ServerTlsMode::Require,
            ServerTlsMode::VerifyCa,
            ServerTlsMode::VerifyFull,
        ] {
            assert_eq!(ServerTlsMode::parse(m.as_str()), Some(m));
        }
        assert_eq!(ServerTlsMode::parse("verify_full"), None);
        assert!(ServerTlsMode::Require.required() && !ServerTlsMode::Prefer.required());
    }

    #[test]
    fn bad_files_are_config_errors() {
        let files = ServerTlsFiles {
            ca_file: Some("/nonexistent/ca.crt".into()),
            ..Default::default()
        };
        let e = ServerTls::new(ServerTlsMode::VerifyCa, &files).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
        let half = ServerTlsFiles {
            cert_file: Some("/x.crt".into()),
            ..Default::default()
        };
        assert!(matches!(
            ServerTls::new(ServerTlsMode::Require, &half),
            Err(TlsConfigError::HalfClientCert)
        ));
        // prefer without files needs nothing from disk.
        let tls = ServerTls::new(ServerTlsMode::Prefer, &ServerTlsFiles::default()).unwrap();
        assert!(tls.dest("127.0.0.1:5432").unwrap().is_some());
        assert!(ServerTls::disabled().dest("h:1").unwrap().is_none());
    }
}
