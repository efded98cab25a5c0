//! Parsers for the value syntaxes of `WEFT_PROXY_*` variables (durations, ports, lists, names).

use std::{net::SocketAddr, time::Duration};

use super::{ForwardPort, PortSet, Upstream, Workload};

/// `250us`, `500ms`, `3s`, `2m`, `1h`, or `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a duration like 500ms, 3s, 2m or 1h";
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| HINT.to_string())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| HINT.to_string())?;
    let us_per = match unit {
        "us" | "µs" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        _ => return Err(HINT.into()),
    };
    n.checked_mul(us_per)
        .map(Duration::from_micros)
        .ok_or_else(|| "duration too large".into())
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

pub(super) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| "expected IP:PORT (e.g. 127.0.0.1:4140 or [::1]:4140)".into())
}

/// `host:port` where host is an IP or a DNS name; returns the port.
pub(super) fn parse_host_port(s: &str) -> Result<u16, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a.port());
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected HOST:PORT".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| "expected HOST:PORT with a numeric port".to_string())?;
    if !is_dns_name(host) {
        return Err("expected HOST:PORT with a valid host".into());
    }
    Ok(port)
}

/// A comma-separated list of `host:port` (at least one).
pub(super) fn parse_addr_list(s: &str) -> Result<(), String> {
    let entries: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err("expected HOST:PORT[,HOST:PORT...]".into());
    }
    for e in entries {
        parse_host_port(e).map_err(|reason| format!("{e:?}: {reason}"))?;
    }
    Ok(())
}

/// A DNS-like identity (`*_SVC_NAME`), lowercased, without a trailing dot.
pub(super) fn parse_identity_name(s: &str) -> Result<Option<String>, String> {
    let name = s.trim_end_matches('.');
    if !is_dns_name(name) {
        return Err("must be a DNS-like identity (the control plane's)".into());
    }
    Ok(Some(name.to_ascii_lowercase()))
}

/// A comma-separated list of DNS-like identities (trusted gateways), each as
/// [`parse_identity_name`] normalises it.
pub(super) fn parse_identity_list(s: &str) -> Result<Vec<String>, String> {
    items(s)
        .map(|item| {
            let name = item.trim_end_matches('.');
            if is_dns_name(name) {
                Ok(name.to_ascii_lowercase())
            } else {
                Err(format!("{item:?} is not a DNS-like identity"))
            }
        })
        .collect()
}

/// Whether a control-plane service may be reached as configured: with a name it is TLS, which
/// needs identity (the trust anchors to verify it); without one it is plaintext, which only a
/// loopback address may carry. The error names the variable to fix.
pub(super) fn check_control_tls(
    addr_var: &'static str,
    addrs: &str,
    name_var: &'static str,
    name: Option<&str>,
    has_identity: bool,
) -> Result<(), (&'static str, String)> {
    match name {
        Some(_) if !has_identity => Err((
            name_var,
            "TLS to the control plane needs identity (WEFT_PROXY_IDENTITY_*): its certificate \
             is verified against the trust anchors"
                .into(),
        )),
        Some(_) => Ok(()),
        None => match addrs
            .split(',')
            .map(str::trim)
            .find(|a| !a.is_empty() && !is_loopback(a))
        {
            Some(remote) => Err((
                addr_var,
                format!(
                    "{remote} is not a loopback address: set {name_var} to the control plane's \
                     identity so the connection is TLS (plaintext only on loopback)"
                ),
            )),
            None => Ok(()),
        },
    }
}

/// `host:port` whose host is a loopback IP or `localhost`.
fn is_loopback(host_port: &str) -> bool {
    if let Ok(a) = host_port.parse::<SocketAddr>() {
        return a.ip().is_loopback();
    }
    host_port
        .rsplit_once(':')
        .is_some_and(|(h, _)| h.eq_ignore_ascii_case("localhost"))
}

pub(super) fn parse_workload(s: &str) -> Result<Workload, String> {
    match s.split_once(':') {
        Some((ns, name)) if is_dns_label(ns) && is_dns_label(name) => Ok(Workload {
            namespace: ns.to_string(),
            name: name.to_string(),
        }),
        _ => Err("expected NS:NAME (two DNS labels)".into()),
    }
}

pub(super) fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

pub(super) fn parse_port(s: &str, allow_zero: bool) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) if !allow_zero => Err(format!("port {s:?} must be 1..65535")),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("{s:?} is not a port (1..65535)")),
    }
}

/// `25,3306,5000-5010`.
pub fn parse_port_set(s: &str) -> Result<PortSet, String> {
    let mut ranges = Vec::new();
    for item in items(s) {
        let range = match item.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (parse_port(lo.trim(), false)?, parse_port(hi.trim(), false)?);
                if lo > hi {
                    return Err(format!("range {item:?} is reversed"));
                }
                lo..=hi
            }
            None => {
                let p = parse_port(item, false)?;
                p..=p
            }
        };
        ranges.push(range);
    }
    Ok(PortSet(ranges))
}

/// `8080,9090=19090`.
pub(super) fn parse_forward_ports(s: &str) -> Result<Vec<ForwardPort>, String> {
    let mut out: Vec<ForwardPort> = Vec::new();
    for item in items(s) {
        let (app, proxy) = match item.split_once('=') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (item, None),
        };
        let app_port = parse_port(app, false)?;
        let proxy_port = proxy.map(|p| parse_port(p, true)).transpose()?.unwrap_or(0);
        if out.iter().any(|f| f.app_port == app_port) {
            return Err(format!("app port {app_port} listed twice"));
        }
        out.push(ForwardPort {
            app_port,
            proxy_port,
        });
    }
    Ok(out)
}

/// `catalog.default.svc.cluster.local:9090=15000,web`.
pub(super) fn parse_upstreams(s: &str) -> Result<Vec<Upstream>, String> {
    let mut out = Vec::new();
    for item in items(s) {
        let (authority, local) = match item.rsplit_once('=') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (item, None),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, parse_port(p, false)?),
            None => (authority, 80),
        };
        let host = host.trim_end_matches('.');
        if !is_dns_name(host) {
            return Err(format!("{authority:?} is not HOST[:PORT]"));
        }
        let local_port = local.map(|p| parse_port(p, true)).transpose()?.unwrap_or(0);
        out.push(Upstream {
            authority: authority.to_string(),
            host: host.to_ascii_lowercase(),
            port,
            local_port,
        });
    }
    Ok(out)
}

/// Suffixes normalised to end with a dot (`.` alone = every name).
pub(super) fn parse_suffixes(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in items(s) {
        let bare = item.trim_matches('.');
        if !bare.is_empty() && !is_dns_name(bare) {
            return Err(format!("{item:?} is not a DNS suffix"));
        }
        out.push(if bare.is_empty() {
            ".".to_string()
        } else {
            format!("{}.", bare.to_ascii_lowercase())
        });
    }
    Ok(out)
}

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(super) fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}
