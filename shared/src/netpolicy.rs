//! Which network addresses camrec may connect to on a user's behalf (camera URLs; webhook URLs
//! use the same rules). A URL is untrusted input: without a policy, anyone who may add a camera
//! could make a worker connect to the cloud metadata service or to the host's own PostgreSQL,
//! and read from the error which ports are open.
//!
//! By default every address is allowed except loopback, link-local (cloud metadata lives at
//! 169.254.169.254), unspecified and multicast ones. A list of networks (`CAMERA_ALLOWED_NETWORKS`,
//! CIDRs separated by commas) allows addresses inside them even when the default refuses them
//! (a camera on the worker's own host is `127.0.0.0/8`). Host names are resolved and every address
//! they resolve to must be allowed, each time the URL is used, not only when it is stored.

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// How long resolving a host name may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The networks allowed beyond the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    allowed: Vec<IpNet>,
}

/// Why an address may not be used. The messages name the kind of address, never a credential.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("is not a list of networks (CIDR, comma-separated): {0:?}")]
    BadList(String),
    #[error("points to a {kind} address ({ip}), which is refused unless the allowed networks include it")]
    Refused { kind: &'static str, ip: IpAddr },
    #[error("names a host that does not resolve")]
    Unresolved,
}

/// What kind of address the default policy refuses `ip` as, if any.
fn refused_kind(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() => Some("unspecified"),
        IpAddr::V4(v4) if v4.is_multicast() => Some("multicast"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_multicast() => Some("multicast"),
        _ => None,
    }
}

impl NetworkPolicy {
    /// Reads a comma-separated list of CIDRs (a bare address is its own /32 or /128); empty
    /// means the default alone.
    pub fn parse(list: &str) -> Result<Self, PolicyError> {
        let allowed = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| PolicyError::BadList(s.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }

    /// Whether `ip` may be connected to.
    pub fn check(&self, ip: IpAddr) -> Result<(), PolicyError> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match refused_kind(ip) {
            Some(kind) => Err(PolicyError::Refused { kind, ip }),
            None => Ok(()),
        }
    }

    /// Resolves `host` (an address or a name, IPv6 possibly in brackets) and checks every
    /// address it resolves to.
    pub async fn check_host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, PolicyError> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((bare, port)))
                .await
                .ok()
                .and_then(Result::ok)
                .map(Iterator::collect)
                .unwrap_or_default(),
        };
        if addrs.is_empty() {
            return Err(PolicyError::Unresolved);
        }
        for a in &addrs {
            self.check(a.ip())?;
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_default_refuses_loopback_link_local_unspecified_and_multicast() {
        let p = NetworkPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "::",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(p.check(ip(bad)).is_err(), "{bad}");
        }
        for good in ["10.0.0.5", "192.168.1.64", "8.8.8.8", "2001:db8::5"] {
            assert!(p.check(ip(good)).is_ok(), "{good}");
        }
    }

    #[test]
    fn allowed_networks_open_what_the_default_refuses() {
        let p = NetworkPolicy::parse(" 127.0.0.0/8, ::1 ,169.254.169.254/32").unwrap();
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::1")).is_ok());
        assert!(p.check(ip("169.254.169.254")).is_ok());
        assert!(p.check(ip("169.254.0.1")).is_err());
        assert_eq!(NetworkPolicy::parse("").unwrap(), NetworkPolicy::default());
        assert!(matches!(
            NetworkPolicy::parse("10.0.0.0/33"),
            Err(PolicyError::BadList(_))
        ));
    }

    #[tokio::test]
    async fn host_names_are_resolved_and_every_address_checked() {
        let p = NetworkPolicy::default();
        let refused = p.check_host("localhost", 554).await;
        assert!(
            matches!(
                refused,
                Err(PolicyError::Refused {
                    kind: "loopback",
                    ..
                })
            ),
            "{refused:?}"
        );
        assert!(p.check_host("[::1]", 554).await.is_err());
        assert!(p.check_host("10.1.2.3", 554).await.is_ok());
        assert_eq!(
            p.check_host("no-such-host.invalid", 554).await,
            Err(PolicyError::Unresolved)
        );
        let open = NetworkPolicy::parse("127.0.0.0/8,::1").unwrap();
        assert!(open.check_host("localhost", 554).await.is_ok());
    }
}
