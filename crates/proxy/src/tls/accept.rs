//! Client-facing TLS: a front door's `tls_cert_file`, `tls_key_file`, `client_tls` and
//! `tls_client_ca_file`, loaded into a rustls server config, and the handshake that turns a
//! plaintext client socket into a [`ClientStream::Tls`].
//!
//! Invariants:
//! - a [`ClientTls`] is built only from files that loaded and agree (the key matches the
//!   certificate, the CA file holds at least one certificate), so `poolguard check`, start and
//!   reload fail with the file and the reason instead of a client finding out;
//! - it lives in the config snapshot: a reload swaps the certificate for the connections that
//!   start after it, while established ones keep the session they negotiated;
//! - with `tls_client_ca_file`, every TLS client must present a certificate signed by that CA,
//!   and plaintext clients are not admitted at all (`client_tls` must be `require`), so the
//!   check cannot be skipped by not asking for TLS;
//! - the channel binding data (`tls-server-end-point`, RFC 5929) is the hash of the certificate
//!   this config serves, computed once at load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256, Sha384, Sha512};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::stream::ClientStream;

/// `client_tls`: whether a front door offers TLS to its clients, and whether it insists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientTlsMode {
    /// No TLS: PostgreSQL's SSLRequest is answered 'N', MySQL's greeting has no CLIENT_SSL.
    Disable,
    /// TLS for clients that ask, plaintext for the others.
    Allow,
    /// TLS only: a plaintext client is refused at its startup/handshake packet.
    Require,
}

/// A configuration key that cannot be honoured, and why (mapped to a config error).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct TlsSetupError {
    pub key: String,
    pub problem: String,
}

/// A front door's TLS keys as written in its table.
#[derive(Debug, Default)]
pub struct TlsKeys<'a> {
    pub cert_file: Option<&'a str>,
    pub key_file: Option<&'a str>,
    pub mode: Option<&'a str>,
    pub client_ca_file: Option<&'a str>,
}

/// A front door's client TLS, validated and loaded.
#[derive(Clone)]
pub struct ClientTls {
    pub mode: ClientTlsMode,
    /// `None` exactly when `mode` is `Disable`.
    served: Option<Served>,
}

#[derive(Clone)]
struct Served {
    acceptor: TlsAcceptor,
    /// `tls-server-end-point` channel binding data of the served certificate.
    end_point: Arc<[u8]>,
    cert_file: PathBuf,
    verifies_clients: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ClientTls");
        d.field("mode", &self.mode);
        if let Some(s) = &self.served {
            d.field("cert_file", &s.cert_file)
                .field("verifies_clients", &s.verifies_clients);
        }
        d.finish()
    }
}

impl ClientTls {
    /// No TLS (a door without TLS keys).
    pub fn disabled() -> Self {
        ClientTls {
            mode: ClientTlsMode::Disable,
            served: None,
        }
    }

    /// Validates and loads `door`'s keys (`door` is the table name, for messages). `alpn` is
    /// the one application protocol the door speaks, if it announces one.
    pub fn load(
        door: &str,
        keys: &TlsKeys<'_>,
        alpn: Option<&[u8]>,
    ) -> Result<Self, TlsSetupError> {
        let err = |key: &str, problem: String| TlsSetupError {
            key: format!("{door}.{key}"),
            problem,
        };
        let has_cert = keys.cert_file.is_some() || keys.key_file.is_some();
        let mode = match keys.mode {
            None if keys.client_ca_file.is_some() => ClientTlsMode::Require,
            None if has_cert => ClientTlsMode::Allow,
            None | Some("disable") => ClientTlsMode::Disable,
            Some("allow") => ClientTlsMode::Allow,
            Some("require") => ClientTlsMode::Require,
            Some(other) => {
                return Err(err(
                    "client_tls",
                    format!("{other:?} is not one of \"disable\", \"allow\", \"require\""),
                ))
            }
        };
        if mode == ClientTlsMode::Disable {
            if keys.client_ca_file.is_some() {
                return Err(err(
                    "tls_client_ca_file",
                    "client certificates need TLS, and client_tls is \"disable\"".into(),
                ));
            }
            return Ok(ClientTls::disabled());
        }
        let (Some(cert_file), Some(key_file)) = (keys.cert_file, keys.key_file) else {
            let missing = if keys.cert_file.is_none() {
                "tls_cert_file"
            } else {
                "tls_key_file"
            };
            return Err(err(
                missing,
                format!(
                    "client_tls = {:?} needs tls_cert_file and tls_key_file",
                    mode_name(mode)
                ),
            ));
        };
        if keys.client_ca_file.is_some() && mode != ClientTlsMode::Require {
            return Err(err(
                "tls_client_ca_file",
                "verifying client certificates needs client_tls = \"require\" (a plaintext client would skip the check)".into(),
            ));
        }
        let certs = load_certs(cert_file).map_err(|p| err("tls_cert_file", p))?;
        let key = PrivateKeyDer::from_pem_file(cert_path(key_file)).map_err(|e| {
            err(
                "tls_key_file",
                format!("{key_file}: no usable private key ({e})"),
            )
        })?;
        let end_point = certs
            .first()
            .map(|c| server_end_point(c.as_ref()))
            .unwrap_or_default();
        // ring, as chosen for the build (no C toolchain beyond cc, no cmake); rustls 0.23.48
        // deprecates this constructor only to point at aws-lc-rs's post-quantum key exchange.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("client_tls", format!("TLS setup failed: {e}")))?;
        let builder = match keys.client_ca_file {
            Some(ca_file) => {
                let verifier =
                    client_verifier(ca_file, provider).map_err(|p| err("tls_client_ca_file", p))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            err(
                "tls_key_file",
                format!("{key_file} does not go with {cert_file}: {e}"),
            )
        })?;
        if let Some(alpn) = alpn {
            config.alpn_protocols = vec![alpn.to_vec()];
        }
        Ok(ClientTls {
            mode,
            served: Some(Served {
                acceptor: TlsAcceptor::from(Arc::new(config)),
                end_point: end_point.into(),
                cert_file: cert_path(cert_file),
                verifies_clients: keys.client_ca_file.is_some(),
            }),
        })
    }

    /// The handshake side of the served certificate (for a listener that is TLS only).
    pub fn acceptor(&self) -> Option<TlsAcceptor> {
        self.served.as_ref().map(|s| s.acceptor.clone())
    }

    /// TLS is offered to clients that ask.
    pub fn offered(&self) -> bool {
        self.served.is_some()
    }

    /// Plaintext clients are refused.
    pub fn required(&self) -> bool {
        self.mode == ClientTlsMode::Require
    }

    /// Runs the TLS handshake on the plaintext client in `slot`, which then holds the TLS
    /// stream; on failure (or when TLS is not offered) the slot is left empty and the socket
    /// closed: a client whose handshake failed cannot be answered in any protocol.
    pub async fn upgrade(&self, slot: &mut Option<ClientStream>) -> std::io::Result<()> {
        let served = self
            .served
            .as_ref()
            .ok_or_else(|| std::io::Error::other("TLS is not offered on this front door"))?;
        let tcp: TcpStream = match slot.take() {
            Some(ClientStream::Plain(tcp)) => tcp,
            Some(tls) => {
                *slot = Some(tls);
                return Err(std::io::Error::other("the client is already on TLS"));
            }
            None => return Err(std::io::ErrorKind::NotConnected.into()),
        };
        let stream = served.acceptor.accept(tcp).await?;
        *slot = Some(ClientStream::tls(stream, served.end_point.clone()));
        Ok(())
    }
}

fn mode_name(mode: ClientTlsMode) -> &'static str {
    match mode {
        ClientTlsMode::Disable => "disable",
        ClientTlsMode::Allow => "allow",
        ClientTlsMode::Require => "require",
    }
}

fn cert_path(file: &str) -> PathBuf {
    Path::new(file).to_path_buf()
}

/// Every certificate in a PEM file; an error names the file and says what is wrong.
fn load_certs(file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path(file))
        .map_err(|e| format!("{file}: cannot read ({e})"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{file}: not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{file}: no certificate in it"));
    }
    Ok(certs)
}

fn client_verifier(
    ca_file: &str,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca_file)? {
        roots
            .add(cert)
            .map_err(|e| format!("{ca_file}: not a usable CA certificate ({e})"))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("{ca_file}: {e}"))
}

/// The `tls-server-end-point` channel binding data of a certificate (RFC 5929 §4.1): its DER
/// hashed with the hash of its signature algorithm, SHA-256 when that is MD5 or SHA-1 (and for
/// any algorithm not named here: SHA-256 signatures, Ed25519, RSA-PSS). PostgreSQL computes it
/// the same way for the algorithms it supports.
pub fn server_end_point(cert_der: &[u8]) -> Vec<u8> {
    // DER of the signature algorithm OIDs hashed with SHA-384 / SHA-512.
    const SHA384: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],       // ecdsa-with-SHA384
    ];
    const SHA512: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], // sha512WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],       // ecdsa-with-SHA512
    ];
    match signature_algorithm(cert_der) {
        Some(oid) if SHA384.contains(&oid) => Sha384::digest(cert_der).to_vec(),
        Some(oid) if SHA512.contains(&oid) => Sha512::digest(cert_der).to_vec(),
        _ => Sha256::digest(cert_der).to_vec(),
    }
}

/// The OID of `Certificate.signatureAlgorithm` (the second element of the outer SEQUENCE).
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (_, cert, _) = der_element(cert)?;
    let (_, _tbs, rest) = der_element(cert)?;
    let (_, algorithm, _) = der_element(rest)?;
    let (tag, oid, _) = der_element(algorithm)?;
    (tag == 0x06).then_some(oid)
}

/// One DER element: `(tag, contents, what follows)`.
fn der_element(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = rest.split_at_checked(n)?;
        let len = bytes.iter().try_fold(0usize, |acc, &b| {
            acc.checked_mul(256)?.checked_add(usize::from(b))
        })?;
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_walk_is_total() {
        assert_eq!(der_element(&[]), None);
        assert_eq!(der_element(&[0x30]), None);
        assert_eq!(der_element(&[0x30, 0x82, 0x01]), None);
        assert_eq!(der_element(&[0x30, 0x05, 1]), None);
        assert_eq!(
            der_element(&[0x06, 0x01, 0x2a, 0xff]),
            Some((0x06, &[0x2a][..], &[0xff][..]))
        );
        assert_eq!(signature_algorithm(&[0x30, 0x00]), None);
        // Anything unparseable hashes with SHA-256.
        assert_eq!(server_end_point(b"junk").len(), 32);
    }

    #[test]
    fn keys_are_checked_before_any_file_is_read() {
        let load = |keys: TlsKeys<'_>| ClientTls::load("postgres", &keys, None);
        assert_eq!(
            load(TlsKeys::default()).unwrap().mode,
            ClientTlsMode::Disable
        );
        let keys = |mode, cert_file, key_file, client_ca_file| TlsKeys {
            mode,
            cert_file,
            key_file,
            client_ca_file,
        };
        let (cert, key) = (
            Some("/nonexistent/server.crt"),
            Some("/nonexistent/server.key"),
        );
        for (bad, named) in [
            (keys(Some("require"), None, None, None), "tls_cert_file"),
            (keys(Some("allow"), cert, None, None), "tls_key_file"),
            (keys(Some("sometimes"), None, None, None), "client_tls"),
            (keys(None, cert, key, None), "tls_cert_file"),
            (
                keys(Some("allow"), cert, key, Some("ca.crt")),
                "tls_client_ca_file",
            ),
            (
                keys(Some("disable"), None, None, Some("ca.crt")),
                "tls_client_ca_file",
            ),
        ] {
            let e = load(bad).unwrap_err();
            assert_eq!(e.key, format!("postgres.{named}"), "{e}");
        }
        let e = load(keys(None, cert, key, None)).unwrap_err();
        assert!(e.problem.contains("/nonexistent/server.crt"), "{e}");
    }
}
