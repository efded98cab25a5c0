//! Value types of the inbound policy variables: the default policy's name and IP networks.

use std::{fmt, net::IpAddr, str::FromStr};

use super::parse::items;

/// A default inbound policy (Linkerd's `config.linkerd.io/default-inbound-policy` values): what a
/// port gets while the control plane has never answered for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DefaultPolicy {
    AllUnauthenticated,
    AllAuthenticated,
    ClusterUnauthenticated,
    ClusterAuthenticated,
    Deny,
    /// Allows everyone, logging and counting each client as `authz_name="audit"`.
    Audit,
}

impl DefaultPolicy {
    pub const ALL: [DefaultPolicy; 6] = [
        DefaultPolicy::AllUnauthenticated,
        DefaultPolicy::AllAuthenticated,
        DefaultPolicy::ClusterUnauthenticated,
        DefaultPolicy::ClusterAuthenticated,
        DefaultPolicy::Deny,
        DefaultPolicy::Audit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DefaultPolicy::AllUnauthenticated => "all-unauthenticated",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterUnauthenticated => "cluster-unauthenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
            DefaultPolicy::Audit => "audit",
        }
    }

    /// The policy for a port that requires identity: the same clients, authenticated (Linkerd
    /// tightens `all-*` to `all-authenticated` and `cluster-*` to `cluster-authenticated`; an
    /// audit port requiring identity audits nothing: `all-authenticated`).
    pub fn authenticated(self) -> DefaultPolicy {
        match self {
            DefaultPolicy::AllUnauthenticated | DefaultPolicy::Audit => {
                DefaultPolicy::AllAuthenticated
            }
            DefaultPolicy::ClusterUnauthenticated => DefaultPolicy::ClusterAuthenticated,
            other => other,
        }
    }
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DefaultPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        DefaultPolicy::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = DefaultPolicy::ALL.iter().map(|p| p.name()).collect();
                format!("expected one of {}", names.join(", "))
            })
    }
}

/// An IP network (`10.0.0.0/8`, `fd00::/8`); the address is stored with its host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `None` when `prefix` is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = addr.to_canonical();
        let bits = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        (prefix <= bits).then(|| Cidr {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// Every IPv4 address (`0.0.0.0/0`).
    pub const ALL_V4: Cidr = Cidr {
        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        prefix: 0,
    };
    /// Every IPv6 address (`::/0`).
    pub const ALL_V6: Cidr = Cidr {
        addr: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        prefix: 0,
    };

    /// Does the network hold `ip`? An IPv4-mapped IPv6 address counts as its IPv4 address.
    /// Allocation-free (the request path calls it per request).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(_), ip @ IpAddr::V4(_)) | (IpAddr::V6(_), ip @ IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `ADDR/PREFIX`; a bare address is a single host.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not a network (e.g. 10.0.0.0/8 or fd00::/8)");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

/// A comma-separated list of networks.
pub fn parse_networks(s: &str) -> Result<Vec<Cidr>, String> {
    items(s).map(str::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_masks_and_contains() {
        let n: Cidr = "10.1.2.3/8".parse().expect("cidr");
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains("10.255.0.1".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        // IPv4-mapped IPv6 counts as IPv4.
        assert!(n.contains("::ffff:10.0.0.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::ALL_V4.contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::ALL_V6.contains("::1".parse().unwrap()));
        let host: Cidr = "198.18.0.5".parse().expect("host");
        assert_eq!(host.prefix(), 32);
        for bad in ["10.0.0.0/33", "fd00::/129", "nope/8", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_policy_names_roundtrip() {
        for p in DefaultPolicy::ALL {
            assert_eq!(p.name().parse::<DefaultPolicy>(), Ok(p));
        }
        assert!("allow".parse::<DefaultPolicy>().is_err());
    }
}
