//! `[fleet]` validated into [`poolguard_fleet::FleetConfig`].
//!
//! Invariants: at least one etcd endpoint, each a plain `host:port` (optionally `http://`:
//! the client speaks no TLS, so `https://` is refused rather than silently sent in clear); a
//! non-empty instance name without `/` (it is a key segment); a lease TTL of at least 2 s
//! (etcd's leases count whole seconds, and keep-alives go every third of it).

use std::time::Duration;

use poolguard_fleet::FleetConfig;

use super::raw::RawFleet;
use super::{invalid, required_duration, ConfigError};

/// The lease TTL when `lease_ttl` is absent.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

pub fn from_raw(raw: &RawFleet) -> Result<FleetConfig, ConfigError> {
    if raw.etcd_endpoints.is_empty() {
        return Err(invalid(
            "fleet.etcd_endpoints",
            "name at least one etcd endpoint",
        ));
    }
    for e in &raw.etcd_endpoints {
        let plain = e.trim_start_matches("http://");
        if plain.starts_with("https://") || !plain.contains(':') {
            return Err(invalid(
                "fleet.etcd_endpoints",
                format!(
                    "{e:?}: write host:port (or http://host:port); TLS to etcd is not supported"
                ),
            ));
        }
    }
    let segment = |key: &str, v: &str| {
        if v.is_empty() || v.contains('/') {
            Err(invalid(
                key,
                format!("{v:?} must be non-empty and without '/'"),
            ))
        } else {
            Ok(v.to_owned())
        }
    };
    let lease_ttl = match &raw.lease_ttl {
        Some(t) => required_duration("fleet.lease_ttl", t)?,
        None => DEFAULT_LEASE_TTL,
    };
    if lease_ttl < Duration::from_secs(2) {
        return Err(invalid("fleet.lease_ttl", "must be at least 2s"));
    }
    Ok(FleetConfig {
        etcd_endpoints: raw.etcd_endpoints.clone(),
        instance: segment("fleet.instance", &raw.instance)?,
        lease_ttl,
        patroni_scope: raw
            .patroni_scope
            .as_deref()
            .map(|s| segment("fleet.patroni_scope", s))
            .transpose()?,
        name: segment("fleet.name", raw.name.as_deref().unwrap_or("default"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(endpoints: &[&str], instance: &str, ttl: Option<&str>) -> RawFleet {
        RawFleet {
            etcd_endpoints: endpoints.iter().map(|s| (*s).to_owned()).collect(),
            instance: instance.into(),
            lease_ttl: ttl.map(str::to_owned),
            patroni_scope: None,
            name: None,
        }
    }

    #[test]
    fn fleet_keys_are_checked() {
        let ok = from_raw(&raw(&["127.0.0.1:2379"], "a", None)).unwrap();
        assert_eq!(
            (ok.lease_ttl, ok.name.as_str()),
            (DEFAULT_LEASE_TTL, "default")
        );
        assert!(from_raw(&raw(&[], "a", None)).is_err());
        assert!(from_raw(&raw(&["https://x:1"], "a", None)).is_err());
        assert!(from_raw(&raw(&["x:1"], "a/b", None)).is_err());
        assert!(from_raw(&raw(&["x:1"], "a", Some("1s"))).is_err());
    }
}
