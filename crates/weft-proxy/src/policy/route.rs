//! Which route and rule a request takes: pure functions over the policy and the request head.
//!
//! Precedence (Gateway API, as Linkerd's proxy applies it): a route must match the request's
//! host (no hosts = any; an exact host beats a wildcard, a longer wildcard a shorter one); then
//! among every rule of every such route the most specific match wins:
//! 1. path: an exact match beats any other; otherwise the longer match wins. A regular
//!    expression must match the whole path and counts as long as the path (Linkerd's rule; the
//!    Gateway API leaves regex precedence to the implementation);
//! 2. a method match beats none;
//! 3. more header matches beat fewer;
//! 4. more query-parameter matches beat fewer.
//!
//! Ties go to the earlier route in the policy (the control plane sends routes oldest first),
//! then to the earlier rule. gRPC: `POST /SERVICE/METHOD`, ranked by the length of the matched
//! service, then method, then the number of header matches.
//!
//! TLS routes ([`find_sni`]) rank by their SNI matches alone, as HTTP routes by their hosts: an
//! exact name beats a wildcard, a longer wildcard a shorter one, a route without SNI matches
//! takes any ClientHello (one without SNI included) with the lowest precedence; ties go to the
//! earlier route.

use super::{
    GrpcMatch, HeaderMatch, HostMatch, HttpMatch, OpaqueRoute, PathMatch, Route, ValueMatch,
};
use http::{HeaderMap, Method, Uri};

/// What the matchers read from a request (its head; never the body).
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// The `:authority` / `Host` host, without port.
    pub host: Option<&'a str>,
}

impl<'a> RequestHead<'a> {
    pub fn of<B>(req: &'a http::Request<B>) -> RequestHead<'a> {
        let host = req.uri().host().or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(strip_port)
        });
        RequestHead {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            host,
        }
    }
}

fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The route and rule a request takes (indices into the policy's routes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched {
    pub route: usize,
    pub rule: usize,
    /// For a prefix match: how many bytes of the path it matched (a redirect's prefix
    /// replacement needs it).
    pub prefix_len: Option<usize>,
}

/// Host specificity: no host list < wildcard (by length) < exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum HostRank {
    Any,
    Suffix(usize),
    Exact,
}

fn host_rank(hosts: &[HostMatch], host: Option<&str>) -> Option<HostRank> {
    if hosts.is_empty() {
        return Some(HostRank::Any);
    }
    let host = host?.trim_end_matches('.');
    hosts
        .iter()
        .filter_map(|h| match h {
            HostMatch::Exact(e) => e.eq_ignore_ascii_case(host).then_some(HostRank::Exact),
            HostMatch::Suffix(s) => {
                let n = host.len().checked_sub(s.len())?;
                // `*.example.com` needs at least one label before the suffix.
                (n > 0 && host.is_char_boundary(n) && host[n..].eq_ignore_ascii_case(s))
                    .then_some(HostRank::Suffix(s.len()))
            }
        })
        .max()
}

/// The connection route a TLS ClientHello takes (an index into `routes`), or `None`. `sni`:
/// the ClientHello's server name; without one only routes without SNI matches can take it.
pub fn find_sni(routes: &[OpaqueRoute], sni: Option<&str>) -> Option<usize> {
    // An empty name is no name (and must not meet the never-matching empty exact match a
    // route whose SNI matches were all invalid is given).
    let sni = sni
        .map(|s| s.trim_end_matches('.'))
        .filter(|s| !s.is_empty());
    let mut found: Option<(HostRank, usize)> = None;
    for (i, route) in routes.iter().enumerate() {
        let Some(rank) = host_rank(&route.snis, sni) else {
            continue;
        };
        // Strictly better only: ties stay with the earlier route.
        if found.is_none_or(|(best, _)| rank > best) {
            found = Some((rank, i));
        }
    }
    found.map(|(_, i)| i)
}

/// How specific an HTTP match was; compared field by field, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct HttpRank {
    exact_path: bool,
    path_len: usize,
    method: bool,
    headers: usize,
    query: usize,
}

/// The best route and rule for an HTTP request, or `None` (no route: 404), weighing every rule
/// (the reference the index is tested against; the request path uses [`PathIndex`]).
pub fn find_http(routes: &[Route<HttpMatch>], req: &RequestHead<'_>) -> Option<Matched> {
    best(routes, all_rules(routes), req, http_match)
}

/// [`find_http`] weighing only the rules `index` says could match the request's path: the same
/// answer, without scanning routes whose literal paths start elsewhere.
pub fn find_http_indexed(
    routes: &[Route<HttpMatch>],
    index: &PathIndex,
    req: &RequestHead<'_>,
) -> Option<Matched> {
    best(routes, index.candidates(req.uri.path()), req, http_match)
}

/// The best route and rule for a gRPC request, or `None`.
pub fn find_grpc(routes: &[Route<GrpcMatch>], req: &RequestHead<'_>) -> Option<Matched> {
    if req.method != Method::POST {
        return None;
    }
    best(routes, all_rules(routes), req, |m, req| {
        grpc_match(m, req).map(|r| (r, None))
    })
}

/// Every (route, rule) in policy order.
fn all_rules<M>(routes: &[Route<M>]) -> impl Iterator<Item = (usize, usize)> + '_ {
    routes
        .iter()
        .enumerate()
        .flat_map(|(ri, r)| (0..r.rules.len()).map(move |ui| (ri, ui)))
}

/// Which rules of a route list can match a path, built once per policy version. A request's
/// path can only match a literal path (an exact path, or a prefix other than `/`) that starts
/// with the same first segment, so rules whose every match is literal are filed under those
/// segments; the others (a regex, a `/` prefix, no path match, no matches at all) are weighed
/// for every request.
#[derive(Clone, Debug, Default)]
pub struct PathIndex {
    /// (route, rule) in policy order.
    any: Vec<(u32, u32)>,
    by_segment: std::collections::HashMap<Box<str>, Vec<(u32, u32)>>,
}

impl PathIndex {
    pub fn build(routes: &[Route<HttpMatch>]) -> PathIndex {
        let mut index = PathIndex::default();
        for (ri, route) in routes.iter().enumerate() {
            for (ui, rule) in route.rules.iter().enumerate() {
                let at = (ri as u32, ui as u32);
                let literal: Option<Vec<&str>> = if rule.matches.is_empty() {
                    None
                } else {
                    rule.matches.iter().map(literal_segment).collect()
                };
                match literal {
                    None => index.any.push(at),
                    Some(mut segments) => {
                        segments.sort_unstable();
                        segments.dedup();
                        for segment in segments {
                            index.by_segment.entry(segment.into()).or_default().push(at);
                        }
                    }
                }
            }
        }
        index
    }

    /// The rules to weigh for `path`, in policy order (so ties resolve as in a full scan).
    fn candidates(&self, path: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
        let filed = self
            .by_segment
            .get(first_segment(path))
            .map_or(&[][..], Vec::as_slice);
        Merged {
            a: self.any.as_slice(),
            b: filed,
        }
        .map(|(ri, ui)| (ri as usize, ui as usize))
    }
}

/// Two policy-ordered lists as one.
struct Merged<'a> {
    a: &'a [(u32, u32)],
    b: &'a [(u32, u32)],
}

impl Iterator for Merged<'_> {
    type Item = (u32, u32);

    fn next(&mut self) -> Option<(u32, u32)> {
        let take_a = match (self.a.first(), self.b.first()) {
            (Some(a), Some(b)) => a <= b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let list = if take_a { &mut self.a } else { &mut self.b };
        let (first, rest) = list.split_first()?;
        *list = rest;
        Some(*first)
    }
}

/// The first segment every path a match accepts starts with, if the match is literal.
fn literal_segment(m: &HttpMatch) -> Option<&str> {
    match &m.path {
        Some(PathMatch::Exact(e)) => Some(first_segment(e)),
        Some(PathMatch::Prefix(p)) if !p.trim_end_matches('/').is_empty() => Some(first_segment(p)),
        _ => None,
    }
}

/// `/a/b` → `a`; `/` → ``.
fn first_segment(path: &str) -> &str {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split('/').next().unwrap_or(path)
}

/// Weighs the given rules (in policy order) and keeps the strictly better match, so ties stay
/// with the earlier route and rule.
fn best<M, R: Ord + Copy + Default>(
    routes: &[Route<M>],
    rules: impl Iterator<Item = (usize, usize)>,
    req: &RequestHead<'_>,
    rank: impl Fn(&M, &RequestHead<'_>) -> Option<(R, Option<usize>)>,
) -> Option<Matched> {
    let mut found: Option<((HostRank, R), Matched)> = None;
    // The host rank of the route last looked at (rules come grouped by route).
    let mut host_of: Option<(usize, Option<HostRank>)> = None;
    for (ri, ui) in rules {
        let Some(route) = routes.get(ri) else {
            continue;
        };
        let host = match host_of {
            Some((r, host)) if r == ri => host,
            _ => {
                let host = host_rank(&route.hosts, req.host);
                host_of = Some((ri, host));
                host
            }
        };
        let (Some(host), Some(rule)) = (host, route.rules.get(ui)) else {
            continue;
        };
        let here = if rule.matches.is_empty() {
            Some((R::default(), None))
        } else {
            rule.matches
                .iter()
                .filter_map(|m| rank(m, req))
                // Within a rule the most specific of its matches counts.
                .fold(None, |acc: Option<(R, Option<usize>)>, m| match acc {
                    Some(a) if a.0 >= m.0 => Some(a),
                    _ => Some(m),
                })
        };
        let Some((r, prefix_len)) = here else {
            continue;
        };
        let key = (host, r);
        if found.as_ref().is_none_or(|(k, _)| key > *k) {
            found = Some((
                key,
                Matched {
                    route: ri,
                    rule: ui,
                    prefix_len,
                },
            ));
        }
    }
    found.map(|(_, m)| m)
}

impl Default for HttpRank {
    /// A rule without matches: a `/` prefix.
    fn default() -> Self {
        HttpRank {
            exact_path: false,
            path_len: 1,
            method: false,
            headers: 0,
            query: 0,
        }
    }
}

fn http_match(m: &HttpMatch, req: &RequestHead<'_>) -> Option<(HttpRank, Option<usize>)> {
    let path = req.uri.path();
    let (exact_path, path_len, prefix) = match &m.path {
        None => (false, 1, Some(1)),
        Some(PathMatch::Exact(e)) => (e == path).then_some((true, e.len(), None))?,
        Some(PathMatch::Prefix(p)) => {
            let n = prefix_match(p, path)?;
            (false, n, Some(n))
        }
        Some(PathMatch::Regex(re)) => {
            re.is_full_match(path.as_bytes())
                .then_some((false, path.len(), None))?
        }
    };
    if let Some(method) = &m.method {
        if method != req.method {
            return None;
        }
    }
    if !m.headers.iter().all(|h| header_matches(h, req.headers)) {
        return None;
    }
    if !m.query.iter().all(|q| {
        query_pairs(req.uri.query())
            .any(|(k, v)| k == q.name && value_matches(&q.value, v.as_bytes()))
    }) {
        return None;
    }
    Some((
        HttpRank {
            exact_path,
            path_len,
            method: m.method.is_some(),
            headers: m.headers.len(),
            query: m.query.len(),
        },
        prefix,
    ))
}

/// Segment-wise prefix match: the matched length, or `None`. A trailing `/` on the prefix is
/// ignored; `/` matches every path.
fn prefix_match(prefix: &str, path: &str) -> Option<usize> {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        return Some(1);
    }
    let rest = path.strip_prefix(p)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(p.len())
}

fn header_matches(h: &HeaderMatch, headers: &HeaderMap) -> bool {
    // A header repeated: any of its values may match (Gateway API matches the first; Linkerd
    // accepts any, so a client that repeats the header cannot dodge a match).
    headers
        .get_all(&h.name)
        .iter()
        .any(|v| value_matches(&h.value, v.as_bytes()))
}

fn value_matches(m: &ValueMatch, v: &[u8]) -> bool {
    match m {
        ValueMatch::Exact(e) => e == v,
        ValueMatch::Regex(re) => re.is_full_match(v),
    }
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct GrpcRank {
    service: usize,
    method: usize,
    headers: usize,
}

fn grpc_match(m: &GrpcMatch, req: &RequestHead<'_>) -> Option<GrpcRank> {
    let mut parts = req.uri.path().strip_prefix('/')?.splitn(2, '/');
    let (service, method) = (parts.next()?, parts.next()?);
    let mut rank = GrpcRank::default();
    if let Some(s) = &m.service {
        if s != service {
            return None;
        }
        rank.service = s.len();
    }
    if let Some(want) = &m.method {
        if want != method {
            return None;
        }
        rank.method = want.len();
    }
    if !m.headers.iter().all(|h| header_matches(h, req.headers)) {
        return None;
    }
    rank.headers = m.headers.len();
    Some(rank)
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
