//! A backend's `server_tls` keys into its [`ServerTls`]: the mode parsed, the files read and
//! the rustls configuration built now, so a bad file is refused at start, `check` or reload
//! with the key named, never found at the first connect.

use super::raw::RawBackend;
use super::{invalid, ConfigError};
use crate::tls::connect::{ServerTls, ServerTlsFiles, ServerTlsMode};

/// A backend's `server_tls` keys, their files read now: a bad file is an error at start,
/// `check` or reload, not at the first connect.
pub(super) fn from_raw(key: &str, b: &RawBackend) -> Result<ServerTls, ConfigError> {
    let mode = match b.server_tls.as_deref() {
        None => ServerTlsMode::default(),
        Some(m) => ServerTlsMode::parse(m).ok_or_else(|| {
            invalid(
                format!("{key}.server_tls"),
                format!("{m:?} is not one of {}", ServerTlsMode::NAMES),
            )
        })?,
    };
    let files = ServerTlsFiles {
        ca_file: b.server_tls_ca_file.as_ref().map(Into::into),
        cert_file: b.server_tls_cert_file.as_ref().map(Into::into),
        key_file: b.server_tls_key_file.as_ref().map(Into::into),
    };
    if mode == ServerTlsMode::Disable && files.ca_file.is_some() {
        return Err(invalid(
            format!("{key}.server_tls_ca_file"),
            "is set, but server_tls = \"disable\" never uses it",
        ));
    }
    ServerTls::new(mode, &files).map_err(|e| invalid(format!("{key}.server_tls"), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(extra: &str) -> RawBackend {
        toml::from_str(&format!(
            "name = \"pg\"\nprotocol = \"postgres\"\nhosts = [\"127.0.0.1:5432\"]\nmax_connections = 5\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn default_is_prefer_and_bad_values_name_their_key() {
        let tls = from_raw("backends[0]", &backend("")).unwrap();
        assert_eq!(tls.mode(), ServerTlsMode::Prefer);
        let e = from_raw("backends[0]", &backend("server_tls = \"verify_full\"")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("backends[0].server_tls: \"verify_full\" is not one of"),
            "{e}"
        );
        let e = from_raw(
            "backends[0]",
            &backend("server_tls = \"verify-full\"\nserver_tls_ca_file = \"/nonexistent/ca.pem\""),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("backends[0].server_tls: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        let e = from_raw(
            "backends[0]",
            &backend("server_tls = \"disable\"\nserver_tls_ca_file = \"ca.pem\""),
        )
        .unwrap_err();
        assert!(e.to_string().contains("server_tls_ca_file"), "{e}");
    }
}
