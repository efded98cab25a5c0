//! Route precedence: hosts, path kinds, method/headers/query counts, ties, gRPC.

use super::*;
use crate::policy::QueryMatch;
use crate::policy::{Distribution, Meta, OpaqueRoute, Regex, Route, Rule, Timeouts};
use http::{HeaderName, Request};
use std::sync::Arc;

fn rule<M>(matches: Vec<M>) -> Rule<M> {
    Rule {
        matches,
        filters: Vec::new(),
        distribution: Distribution::Empty,
        timeouts: Timeouts::default(),
        retry: None,
        allow_l5d_request_headers: false,
    }
}

fn route<M>(name: &str, hosts: Vec<HostMatch>, rules: Vec<Rule<M>>) -> Route<M> {
    Route {
        meta: Arc::new(Meta {
            name: name.into(),
            ..Meta::default()
        }),
        hosts,
        rules,
    }
}

fn path(p: PathMatch) -> HttpMatch {
    HttpMatch {
        path: Some(p),
        ..HttpMatch::default()
    }
}

fn exact(p: &str) -> HttpMatch {
    path(PathMatch::Exact(p.into()))
}

fn prefix(p: &str) -> HttpMatch {
    path(PathMatch::Prefix(p.into()))
}

fn regex(p: &str) -> HttpMatch {
    path(PathMatch::Regex(Regex::new(p).unwrap()))
}

fn header(name: &str, value: &str) -> HeaderMatch {
    HeaderMatch {
        name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
        value: ValueMatch::Exact(value.as_bytes().to_vec()),
    }
}

fn req(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn get(uri: &str) -> Request<()> {
    req(Method::GET, uri, &[])
}

/// (route, rule) the request takes. Every precedence test below also checks that the path
/// index gives exactly what a scan of every rule gives.
fn http(routes: &[Route<HttpMatch>], r: &Request<()>) -> Option<(usize, usize)> {
    let head = RequestHead::of(r);
    let scanned = find_http(routes, &head);
    let indexed = find_http_indexed(routes, &PathIndex::build(routes), &head);
    assert_eq!(indexed, scanned, "index and scan disagree on {}", r.uri());
    scanned.map(|m| (m.route, m.rule))
}

/// A mix of every kind of match over shared and distinct first segments: for many paths the
/// index finds what the full scan finds (prefix lengths included), and a path whose first
/// segment no literal rule names weighs only the rules that can match anything.
#[test]
fn the_path_index_agrees_with_a_full_scan() {
    let routes = vec![
        route(
            "a",
            vec![],
            vec![rule(vec![prefix("/api/v1/")]), rule(vec![exact("/api")])],
        ),
        route(
            "b",
            vec![],
            vec![rule(vec![prefix("/api"), exact("/health")])],
        ),
        route("c", vec![], vec![rule(vec![regex("/api/.*/x")])]),
        route(
            "d",
            vec![HostMatch::Exact("web".into())],
            vec![rule(vec![prefix("/")])],
        ),
        route(
            "e",
            vec![],
            vec![rule(vec![HttpMatch {
                headers: vec![header("x-canary", "1")],
                ..HttpMatch::default()
            }])],
        ),
        route(
            "f",
            vec![],
            vec![rule(vec![exact("/")]), rule(vec![prefix("/static//")])],
        ),
        route("g", vec![], vec![rule(Vec::new())]),
    ];
    let index = PathIndex::build(&routes);
    let paths = [
        "/",
        "/api",
        "/api/",
        "/api/v1",
        "/api/v1/x",
        "/api/v2/x",
        "/apix",
        "/health",
        "/health/",
        "/static",
        "/static/a.css",
        "/other",
        "//api",
        "/api?q=1",
    ];
    for path in paths {
        for headers in [&[][..], &[("x-canary", "1")][..]] {
            for host in ["web", "other"] {
                let r = req(Method::GET, &format!("http://{host}{path}"), headers);
                let head = RequestHead::of(&r);
                assert_eq!(
                    find_http_indexed(&routes, &index, &head),
                    find_http(&routes, &head),
                    "{host}{path} {headers:?}"
                );
            }
        }
    }
    // `/other`: only the regex, `/`-prefix, header-only and match-all rules are weighed.
    let weighed: Vec<_> = index.candidates("/other").collect();
    assert_eq!(weighed, vec![(2, 0), (3, 0), (4, 0), (6, 0)]);
    // `/api/v2/x`: those and the rules filed under `api`, in policy order.
    let weighed: Vec<_> = index.candidates("/api/v2/x").collect();
    assert_eq!(
        weighed,
        vec![(0, 0), (0, 1), (1, 0), (2, 0), (3, 0), (4, 0), (6, 0)]
    );
}

#[test]
fn a_rule_without_matches_takes_every_request() {
    let routes = vec![route("default", vec![], vec![rule(vec![])])];
    assert_eq!(http(&routes, &get("http://web/anything?x=1")), Some((0, 0)));
    assert_eq!(http(&routes, &get("/")), Some((0, 0)));
}

#[test]
fn no_matching_rule_is_no_route() {
    let routes = vec![route("r", vec![], vec![rule(vec![exact("/a")])])];
    assert_eq!(http(&routes, &get("/b")), None);
    assert_eq!(http(&[], &get("/")), None);
}

#[test]
fn exact_path_beats_a_longer_prefix_and_a_regex() {
    let routes = vec![route(
        "r",
        vec![],
        vec![
            rule(vec![prefix("/api/users")]),
            rule(vec![regex("/api/.*")]),
            rule(vec![exact("/api/users")]),
        ],
    )];
    assert_eq!(http(&routes, &get("/api/users")), Some((0, 2)));
}

#[test]
fn the_longest_prefix_wins_and_prefixes_match_whole_segments() {
    let routes = vec![route(
        "r",
        vec![],
        vec![
            rule(vec![prefix("/")]),
            rule(vec![prefix("/api")]),
            rule(vec![prefix("/api/v1/")]),
        ],
    )];
    assert_eq!(http(&routes, &get("/api/v1/x")), Some((0, 2)));
    assert_eq!(http(&routes, &get("/api/v1")), Some((0, 2)));
    assert_eq!(http(&routes, &get("/api/v2")), Some((0, 1)));
    // `/api` is not a segment prefix of `/apix`.
    assert_eq!(http(&routes, &get("/apix")), Some((0, 0)));
}

/// Linkerd: a regex must match the whole path and ranks as long as the path, against
/// prefixes by length.
#[test]
fn a_regex_matches_the_whole_path_and_ranks_by_the_path_length() {
    let routes = vec![route(
        "r",
        vec![],
        vec![
            rule(vec![prefix("/books")]),
            rule(vec![regex("/books/[0-9]+")]),
        ],
    )];
    assert_eq!(http(&routes, &get("/books/42")), Some((0, 1)));
    // Not a whole-path match: the prefix takes it.
    assert_eq!(http(&routes, &get("/books/42/reviews")), Some((0, 0)));
    assert_eq!(http(&routes, &get("/x/books/42")), None);
}

#[test]
fn method_then_headers_then_query_params_break_path_ties() {
    let with_method = HttpMatch {
        method: Some(Method::POST),
        ..prefix("/")
    };
    let with_two_headers = HttpMatch {
        headers: vec![header("x-a", "1"), header("x-b", "2")],
        ..prefix("/")
    };
    let with_one_header = HttpMatch {
        headers: vec![header("x-a", "1")],
        ..prefix("/")
    };
    let with_query = HttpMatch {
        query: vec![QueryMatch {
            name: "q".into(),
            value: ValueMatch::Exact(b"1".to_vec()),
        }],
        ..with_one_header.clone()
    };
    let routes = vec![route(
        "r",
        vec![],
        vec![
            rule(vec![with_one_header]),
            rule(vec![with_query]),
            rule(vec![with_two_headers]),
            rule(vec![with_method]),
        ],
    )];
    let h = &[("x-a", "1"), ("x-b", "2")];
    // A method match outranks two header matches (Gateway API order).
    assert_eq!(http(&routes, &req(Method::POST, "/?q=1", h)), Some((0, 3)));
    assert_eq!(http(&routes, &req(Method::GET, "/?q=1", h)), Some((0, 2)));
    assert_eq!(
        http(&routes, &req(Method::GET, "/?q=1", &[("x-a", "1")])),
        Some((0, 1))
    );
    assert_eq!(
        http(&routes, &req(Method::GET, "/", &[("x-a", "1")])),
        Some((0, 0))
    );
    assert_eq!(http(&routes, &req(Method::GET, "/", &[("x-a", "2")])), None);
}

#[test]
fn ties_go_to_the_earlier_route_then_the_earlier_rule() {
    let routes = vec![
        route(
            "older",
            vec![],
            vec![rule(vec![prefix("/a")]), rule(vec![prefix("/a")])],
        ),
        route("newer", vec![], vec![rule(vec![prefix("/a")])]),
    ];
    assert_eq!(http(&routes, &get("/a/b")), Some((0, 0)));
    let routes = vec![
        route("older", vec![], vec![rule(vec![prefix("/")])]),
        route("newer", vec![], vec![rule(vec![prefix("/a")])]),
    ];
    // More specific beats older.
    assert_eq!(http(&routes, &get("/a/b")), Some((1, 0)));
}

#[test]
fn hosts_filter_routes_and_exact_beats_wildcard_beats_none() {
    let routes = vec![
        route("any", vec![], vec![rule(vec![])]),
        route(
            "wild",
            vec![HostMatch::Suffix(".example.com".into())],
            vec![rule(vec![])],
        ),
        route(
            "exact",
            vec![HostMatch::Exact("api.example.com".into())],
            vec![rule(vec![])],
        ),
        route(
            "other",
            vec![HostMatch::Exact("other".into())],
            vec![rule(vec![exact("/only")])],
        ),
    ];
    assert_eq!(
        http(&routes, &get("http://api.example.com/x")),
        Some((2, 0))
    );
    assert_eq!(
        http(&routes, &get("http://API.example.com:8080/x")),
        Some((2, 0))
    );
    assert_eq!(
        http(&routes, &get("http://www.example.com/x")),
        Some((1, 0))
    );
    // The wildcard needs a label before the suffix.
    assert_eq!(http(&routes, &get("http://example.com/x")), Some((0, 0)));
    // Host header when the URI has no authority.
    assert_eq!(
        http(
            &routes,
            &req(Method::GET, "/x", &[("host", "api.example.com:80")])
        ),
        Some((2, 0))
    );
    assert_eq!(http(&routes, &get("http://other/only")), Some((3, 0)));
}

#[test]
fn header_regex_and_repeated_headers() {
    let m = HttpMatch {
        headers: vec![HeaderMatch {
            name: HeaderName::from_static("x-user"),
            value: ValueMatch::Regex(Regex::new("beta-[a-z]+").unwrap()),
        }],
        ..HttpMatch::default()
    };
    let routes = vec![route("r", vec![], vec![rule(vec![m])])];
    assert_eq!(
        http(&routes, &req(Method::GET, "/", &[("x-user", "beta-ann")])),
        Some((0, 0))
    );
    assert_eq!(
        http(&routes, &req(Method::GET, "/", &[("x-user", "xbeta-ann")])),
        None
    );
    assert_eq!(
        http(
            &routes,
            &req(
                Method::GET,
                "/",
                &[("x-user", "alpha"), ("x-user", "beta-bob")]
            )
        ),
        Some((0, 0))
    );
}

#[test]
fn prefix_match_reports_its_length_for_redirects() {
    let routes = vec![route("r", vec![], vec![rule(vec![prefix("/old/")])])];
    let m = find_http(&routes, &RequestHead::of(&get("/old/page"))).unwrap();
    assert_eq!(m.prefix_len, Some(4));
}

fn grpc(service: Option<&str>, method: Option<&str>) -> GrpcMatch {
    GrpcMatch {
        service: service.map(Into::into),
        method: method.map(Into::into),
        headers: Vec::new(),
    }
}

#[test]
fn grpc_service_and_method_rank_by_length_and_need_post() {
    let routes = vec![route(
        "g",
        vec![],
        vec![
            rule(vec![grpc(None, None)]),
            rule(vec![grpc(Some("books.Books"), None)]),
            rule(vec![grpc(Some("books.Books"), Some("Get"))]),
        ],
    )];
    let find = |method: Method, path: &str| {
        find_grpc(&routes, &RequestHead::of(&req(method, path, &[]))).map(|m| m.rule)
    };
    assert_eq!(find(Method::POST, "/books.Books/Get"), Some(2));
    assert_eq!(find(Method::POST, "/books.Books/List"), Some(1));
    assert_eq!(find(Method::POST, "/other.Svc/Get"), Some(0));
    assert_eq!(find(Method::GET, "/books.Books/Get"), None);
    assert_eq!(find(Method::POST, "/not-grpc"), None);
}

fn tls(name: &str, snis: Vec<HostMatch>) -> OpaqueRoute {
    OpaqueRoute {
        meta: Arc::new(Meta {
            name: name.into(),
            ..Meta::default()
        }),
        snis,
        rules: Vec::new(),
    }
}

fn sni_exact(name: &str) -> HostMatch {
    HostMatch::Exact(name.into())
}

/// `*.example.com`.
fn sni_suffix(suffix: &str) -> HostMatch {
    HostMatch::Suffix(suffix.into())
}

/// The name of the TLS route an SNI takes.
fn sni<'a>(routes: &'a [OpaqueRoute], sni: Option<&str>) -> Option<&'a str> {
    find_sni(routes, sni).map(|i| routes[i].meta.name.as_str())
}

#[test]
fn an_exact_sni_beats_a_longer_then_a_shorter_wildcard_then_any() {
    // Listed least specific first: precedence, not order, decides.
    let routes = vec![
        tls("any", vec![]),
        tls("com", vec![sni_suffix(".com")]),
        tls("example", vec![sni_suffix(".example.com")]),
        tls("api", vec![sni_exact("api.example.com")]),
    ];
    assert_eq!(sni(&routes, Some("api.example.com")), Some("api"));
    assert_eq!(sni(&routes, Some("API.Example.com.")), Some("api"));
    assert_eq!(sni(&routes, Some("www.example.com")), Some("example"));
    assert_eq!(sni(&routes, Some("a.b.example.com")), Some("example"));
    assert_eq!(sni(&routes, Some("example.com")), Some("com"));
    assert_eq!(sni(&routes, Some("example.org")), Some("any"));
    // A wildcard needs a label before its suffix.
    assert_eq!(sni(&routes[1..], Some("com")), None);
    assert_eq!(sni(&routes[2..], Some("xexample.com")), None);
}

#[test]
fn without_sni_only_routes_without_sni_matches_take_the_connection() {
    let routes = vec![
        tls("api", vec![sni_exact("api.example.com")]),
        tls("wild", vec![sni_suffix(".example.com")]),
        tls("default", vec![]),
    ];
    assert_eq!(sni(&routes, None), Some("default"));
    assert_eq!(sni(&routes, Some("")), Some("default"));
    assert_eq!(sni(&routes[..2], None), None);
    assert_eq!(sni(&routes[..2], Some("other.org")), None);
    assert_eq!(sni(&[], Some("api.example.com")), None);
}

#[test]
fn sni_ties_go_to_the_earlier_route_and_a_route_ranks_by_its_best_match() {
    let routes = vec![
        tls("old", vec![sni_suffix(".example.com")]),
        tls("new", vec![sni_suffix(".example.com")]),
        tls("old-any", vec![]),
        tls("new-any", vec![]),
        // One of its matches is exact: it beats the wildcards for that name only.
        tls(
            "mixed",
            vec![sni_suffix(".com"), sni_exact("b.example.com")],
        ),
        tls("api-old", vec![sni_exact("api.example.com")]),
        tls("api-new", vec![sni_exact("api.example.com")]),
    ];
    assert_eq!(sni(&routes, Some("a.example.com")), Some("old"));
    assert_eq!(sni(&routes, Some("b.example.com")), Some("mixed"));
    assert_eq!(sni(&routes, Some("api.example.com")), Some("api-old"));
    assert_eq!(sni(&routes, Some("example.org")), Some("old-any"));
    assert_eq!(sni(&routes, Some("x.com")), Some("mixed"));
}
