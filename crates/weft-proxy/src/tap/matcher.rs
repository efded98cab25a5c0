//! An `ObserveRequest.match`, compiled once when the tap starts and evaluated per request.

use std::net::{IpAddr, SocketAddr};

use linkerd2_proxy_api::{
    http_types,
    tap::observe_request::{
        self,
        r#match::{self as m, http::string_match, tcp},
    },
};

use super::{Head, Peers};

/// A compiled match. No match at all (`match` unset) is [`Match::All`] of nothing: every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    All(Vec<Match>),
    Any(Vec<Match>),
    Not(Box<Match>),
    Source(TcpMatch),
    Destination(TcpMatch),
    /// Lowercase scheme name.
    Scheme(String),
    Method(http::Method),
    /// Case-insensitive (authorities are host names).
    Authority(StrMatch),
    Path(StrMatch),
    DestinationLabel {
        key: String,
        value: String,
    },
    RouteLabel {
        key: String,
        value: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TcpMatch {
    /// The address's first `bits` bits equal `ip`'s.
    Net { ip: IpAddr, bits: u8 },
    /// Inclusive; `max` 0 means `min` only.
    Ports { min: u16, max: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatchError {
    #[error("a match has no condition")]
    Empty,
    #[error("invalid netmask: {0}")]
    Netmask(String),
    #[error("invalid port range {0}-{1}")]
    Ports(u32, u32),
    #[error("invalid method or scheme")]
    Http,
}

impl Match {
    /// Compiles `ObserveRequest.match` (`None`: every request).
    pub fn new(m: Option<observe_request::Match>) -> Result<Match, MatchError> {
        match m {
            None => Ok(Match::All(Vec::new())),
            Some(m) => Match::compile(m),
        }
    }

    fn compile(m: observe_request::Match) -> Result<Match, MatchError> {
        let seq = |s: m::Seq| -> Result<Vec<Match>, MatchError> {
            s.matches.into_iter().map(Match::compile).collect()
        };
        Ok(match m.r#match.ok_or(MatchError::Empty)? {
            m::Match::All(s) => Match::All(seq(s)?),
            m::Match::Any(s) => Match::Any(seq(s)?),
            m::Match::Not(inner) => Match::Not(Box::new(Match::compile(*inner)?)),
            m::Match::Source(t) => Match::Source(TcpMatch::compile(t)?),
            m::Match::Destination(t) => Match::Destination(TcpMatch::compile(t)?),
            m::Match::Http(h) => match h.r#match.ok_or(MatchError::Empty)? {
                m::http::Match::Scheme(s) => Match::Scheme(scheme_name(s)?),
                m::http::Match::Method(meth) => {
                    Match::Method(http::Method::try_from(meth).map_err(|_| MatchError::Http)?)
                }
                m::http::Match::Authority(s) => Match::Authority(StrMatch::compile(s, true)?),
                m::http::Match::Path(s) => Match::Path(StrMatch::compile(s, false)?),
            },
            m::Match::DestinationLabel(l) => Match::DestinationLabel {
                key: l.key,
                value: l.value,
            },
            m::Match::RouteLabel(l) => Match::RouteLabel {
                key: l.key,
                value: l.value,
            },
        })
    }

    pub fn matches(&self, peers: &Peers, head: &Head<'_>) -> bool {
        match self {
            Match::All(ms) => ms.iter().all(|m| m.matches(peers, head)),
            Match::Any(ms) => ms.iter().any(|m| m.matches(peers, head)),
            Match::Not(m) => !m.matches(peers, head),
            Match::Source(t) => t.matches(peers.source),
            Match::Destination(t) => t.matches(peers.destination),
            Match::Scheme(s) => head.scheme.eq_ignore_ascii_case(s),
            Match::Method(meth) => head.method == meth,
            Match::Authority(s) => s.matches(&head.authority.to_ascii_lowercase()),
            Match::Path(s) => s.matches(head.path),
            Match::DestinationLabel { key, value } => {
                peers.destination_labels.get(key) == Some(value)
            }
            Match::RouteLabel { key, value } => peers.route_labels.get(key) == Some(value),
        }
    }
}

fn scheme_name(s: http_types::Scheme) -> Result<String, MatchError> {
    use http_types::scheme::{Registered, Type};
    Ok(match s.r#type.ok_or(MatchError::Http)? {
        Type::Registered(r) => match Registered::try_from(r).map_err(|_| MatchError::Http)? {
            Registered::Http => "http".into(),
            Registered::Https => "https".into(),
        },
        Type::Unregistered(name) => name.to_ascii_lowercase(),
    })
}

impl TcpMatch {
    fn compile(t: m::Tcp) -> Result<TcpMatch, MatchError> {
        match t.r#match.ok_or(MatchError::Empty)? {
            tcp::Match::Netmask(n) => {
                let ip =
                    n.ip.ok_or(MatchError::Netmask("no address".into()))
                        .and_then(|ip| {
                            IpAddr::try_from(ip).map_err(|e| MatchError::Netmask(e.to_string()))
                        })?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                if n.mask > max {
                    return Err(MatchError::Netmask(format!("/{} for {ip}", n.mask)));
                }
                Ok(TcpMatch::Net {
                    ip,
                    bits: n.mask as u8,
                })
            }
            tcp::Match::Ports(p) => {
                let max = if p.max == 0 { p.min } else { p.max };
                match (u16::try_from(p.min), u16::try_from(max)) {
                    (Ok(min), Ok(max)) if min <= max => Ok(TcpMatch::Ports { min, max }),
                    _ => Err(MatchError::Ports(p.min, p.max)),
                }
            }
        }
    }

    fn matches(&self, addr: SocketAddr) -> bool {
        match *self {
            TcpMatch::Ports { min, max } => (min..=max).contains(&addr.port()),
            TcpMatch::Net { ip, bits } => match (ip, addr.ip()) {
                (IpAddr::V4(net), IpAddr::V4(a)) => {
                    prefix_eq(u32::from(net) as u128, u32::from(a) as u128, bits, 32)
                }
                (IpAddr::V6(net), IpAddr::V6(a)) => {
                    prefix_eq(u128::from(net), u128::from(a), bits, 128)
                }
                _ => false,
            },
        }
    }
}

/// Whether the first `bits` of two `width`-bit numbers are equal.
fn prefix_eq(a: u128, b: u128, bits: u8, width: u32) -> bool {
    let shift = width - bits as u32;
    if shift >= 128 {
        return true;
    }
    (a >> shift) == (b >> shift)
}

impl StrMatch {
    fn compile(s: m::http::StringMatch, lowercase: bool) -> Result<StrMatch, MatchError> {
        let norm = |v: String| if lowercase { v.to_ascii_lowercase() } else { v };
        Ok(match s.r#match.ok_or(MatchError::Empty)? {
            string_match::Match::Exact(v) => StrMatch::Exact(norm(v)),
            string_match::Match::Prefix(v) => StrMatch::Prefix(norm(v)),
        })
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
        }
    }
}
