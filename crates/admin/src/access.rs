//! Who may use the admin HTTP side, checked before any handler runs.
//!
//! Three checks, in order:
//! 1. **Host.** The `Host` header must name this listener: a loopback name or address, the
//!    address it is bound to, or one of `[admin] allowed_hosts`. A page on another site that
//!    makes its own name resolve to 127.0.0.1 (DNS rebinding) sends its own name here, and is
//!    refused (421).
//! 2. **Origin.** A request that carries an `Origin` (browsers add it to cross-site and to
//!    state-changing requests) must come from this same host and port: no other site's page
//!    can make a visitor's browser reload, pause or read poolguard (CSRF), 403.
//! 3. **Token.** `Authorization: Bearer <token>`. The *read* token (or the admin token) opens
//!    the read routes (`/metrics`, `/api/...`); only the *admin* token opens the routes that
//!    change state (`POST`). Tokens come from files or environment variables, never from the
//!    TOML file. Without any token configured, a loopback listener serves the read routes to
//!    anyone who can reach it (the host's own users, as before) and refuses every state
//!    change; a listener on any other address must have tokens (the config check refuses it).
//!
//! `/healthz` and `/readyz` need no token (a load balancer or an orchestrator probes them) and
//! say nothing but a status word; `/` is the dashboard's static page, which holds no data: it
//! reads the token from the URL's fragment (`/#token=...`, never sent to the server) and sends
//! it with each API call.
//!
//! Tokens are compared in constant time.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap, Method, StatusCode};

/// What the listener accepts; replaced on reload (the [`crate::Source`] hands out the current).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// May read and change state.
    pub admin_token: Option<String>,
    /// May read.
    pub read_token: Option<String>,
    /// Host names (or `host:port`) accepted besides loopback and the bound address.
    pub allowed_hosts: Vec<String>,
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Probes and the static page.
    Nothing,
    Read,
    Admin,
}

/// The route's need, from its method and path.
pub fn need(method: &Method, path: &str) -> Need {
    match path {
        "/healthz" | "/readyz" | "/" => Need::Nothing,
        _ if method == Method::GET || method == Method::HEAD => Need::Read,
        _ => Need::Admin,
    }
}

/// Why a request is refused: the status and a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Access {
    /// Checks one request to the listener bound at `bound`.
    pub fn check(
        &self,
        bound: SocketAddr,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<(), Refusal> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !self.host_allowed(bound, host) {
            return Err(Refusal {
                status: StatusCode::MISDIRECTED_REQUEST,
                reason: "Host is not this admin listener (add it to [admin] allowed_hosts)",
            });
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let same = origin
                .to_str()
                .ok()
                .and_then(|o| o.split_once("://"))
                .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host));
            if !same {
                return Err(Refusal {
                    status: StatusCode::FORBIDDEN,
                    reason: "cross-origin request refused",
                });
            }
        }
        let need = need(method, path);
        if need == Need::Nothing {
            return Ok(());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim);
        let is = |token: &Option<String>| match (token, presented) {
            (Some(t), Some(p)) => constant_time_eq(t.as_bytes(), p.as_bytes()),
            _ => false,
        };
        let admin = is(&self.admin_token);
        let read = admin || is(&self.read_token);
        let open_read = self.admin_token.is_none() && self.read_token.is_none();
        match need {
            Need::Admin if admin => Ok(()),
            Need::Admin if self.admin_token.is_none() => Err(Refusal {
                status: StatusCode::FORBIDDEN,
                reason: "no admin token is configured ([admin] admin_token_file or POOLGUARD_ADMIN_TOKEN), so nothing may change state over HTTP",
            }),
            Need::Admin => Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                reason: "this route changes state: send the admin token (Authorization: Bearer ...)",
            }),
            Need::Read if read || open_read => Ok(()),
            _ => Err(Refusal {
                status: StatusCode::UNAUTHORIZED,
                reason: "send the read or admin token (Authorization: Bearer ...)",
            }),
        }
    }

    fn host_allowed(&self, bound: SocketAddr, host: &str) -> bool {
        if host.is_empty() {
            return false;
        }
        let name = strip_port(host);
        let loopback = name.eq_ignore_ascii_case("localhost")
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let bound_ip = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip == bound.ip());
        loopback
            || bound_ip
            || self
                .allowed_hosts
                .iter()
                .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
    }
}

/// `host:port` -> `host`; `[v6]:port` -> `[v6]`; a bare host stays.
fn strip_port(host: &str) -> &str {
    if let Some(end) = host.find(']') {
        return host.get(..=end).unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Equal, taking the same time whatever the first differing byte (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, origin: Option<&str>, token: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, o.parse().unwrap());
        }
        if let Some(t) = token {
            h.insert(
                header::AUTHORIZATION,
                format!("Bearer {t}").parse().unwrap(),
            );
        }
        h
    }

    const BOUND: &str = "127.0.0.1:9930";

    fn tokens() -> Access {
        Access {
            admin_token: Some("adm".into()),
            read_token: Some("rd".into()),
            allowed_hosts: vec!["pool.internal".into()],
        }
    }

    fn check(a: &Access, m: Method, path: &str, h: &HeaderMap) -> Result<(), StatusCode> {
        a.check(BOUND.parse().unwrap(), &m, path, h)
            .map_err(|r| r.status)
    }

    #[test]
    fn roles() {
        let a = tokens();
        let host = "127.0.0.1:9930";
        assert_eq!(
            check(&a, Method::GET, "/metrics", &req(host, None, Some("rd"))),
            Ok(())
        );
        assert_eq!(
            check(&a, Method::GET, "/metrics", &req(host, None, Some("adm"))),
            Ok(())
        );
        assert_eq!(
            check(&a, Method::GET, "/metrics", &req(host, None, None)),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            check(
                &a,
                Method::GET,
                "/api/leases",
                &req(host, None, Some("rdx"))
            ),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            check(
                &a,
                Method::POST,
                "/api/reload",
                &req(host, None, Some("rd"))
            ),
            Err(StatusCode::UNAUTHORIZED),
            "the read token changes nothing"
        );
        assert_eq!(
            check(
                &a,
                Method::POST,
                "/api/reload",
                &req(host, None, Some("adm"))
            ),
            Ok(())
        );
        for probe in ["/healthz", "/readyz", "/"] {
            assert_eq!(
                check(&a, Method::GET, probe, &req(host, None, None)),
                Ok(())
            );
        }
    }

    #[test]
    fn without_tokens_reads_are_open_on_loopback_and_changes_refused() {
        let a = Access::default();
        let host = "localhost:9930";
        assert_eq!(
            check(&a, Method::GET, "/api/pools", &req(host, None, None)),
            Ok(())
        );
        assert_eq!(
            check(&a, Method::POST, "/api/reload", &req(host, None, None)),
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn foreign_hosts_and_origins_are_refused() {
        let a = tokens();
        let rebinding = req("evil.example:9930", None, Some("adm"));
        assert_eq!(
            check(&a, Method::GET, "/metrics", &rebinding),
            Err(StatusCode::MISDIRECTED_REQUEST)
        );
        let csrf = req("127.0.0.1:9930", Some("http://evil.example"), Some("adm"));
        assert_eq!(
            check(&a, Method::POST, "/api/reload", &csrf),
            Err(StatusCode::FORBIDDEN)
        );
        let same = req("127.0.0.1:9930", Some("http://127.0.0.1:9930"), Some("adm"));
        assert_eq!(check(&a, Method::POST, "/api/reload", &same), Ok(()));
        let named = req("pool.internal:9930", None, Some("rd"));
        assert_eq!(check(&a, Method::GET, "/metrics", &named), Ok(()));
        for host in ["[::1]:9930", "127.0.0.1", "LOCALHOST"] {
            assert_eq!(
                check(&a, Method::GET, "/metrics", &req(host, None, Some("rd"))),
                Ok(())
            );
        }
        let mut none = HeaderMap::new();
        none.insert(header::AUTHORIZATION, "Bearer rd".parse().unwrap());
        assert_eq!(
            check(&a, Method::GET, "/metrics", &none),
            Err(StatusCode::MISDIRECTED_REQUEST),
            "no Host header"
        );
    }

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
