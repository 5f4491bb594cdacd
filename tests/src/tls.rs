//! Certificates for the TLS tests, made with the `openssl` CLI in a temporary directory: a CA,
//! a server certificate for `localhost` and `127.0.0.1` signed by it, and a client certificate
//! (CN `app`) signed by it. [`Pki::new`] again gives an unrelated CA and server certificate
//! (a reload to a new certificate).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and the certificates it signed, in its own temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName = DNS:localhost, IP:127.0.0.1\nextendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("client.ext"), "extendedKeyUsage = clientAuth\n").unwrap();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=poolguard test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
        );
        for (name, cn) in [("server", "localhost"), ("client", "app")] {
            let subject = format!("/CN={cn}");
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            openssl(
                d,
                &[
                    "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key,
                    "-out", &csr,
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-sha256",
                    "-extfile",
                    &ext,
                    "-out",
                    &crt,
                ],
            );
        }
        // libpq refuses a client key that others may read.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("client.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `path` as a string for configs and command lines.
    pub fn file(&self, file: &str) -> String {
        self.path(file).display().to_string()
    }

    /// The `[postgres]` / `[mysql]` lines serving this PKI's server certificate.
    pub fn front(&self, client_tls: &str) -> String {
        format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\nclient_tls = \"{client_tls}\"\n",
            self.file("server.crt"),
            self.file("server.key")
        )
    }
}

impl Pki {
    /// [`Pki::front`] under `require`, with client certificates checked against this CA.
    pub fn front_verifying_clients(&self) -> String {
        format!(
            "{}tls_client_ca_file = \"{}\"\n",
            self.front("require"),
            self.file("ca.crt")
        )
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}
