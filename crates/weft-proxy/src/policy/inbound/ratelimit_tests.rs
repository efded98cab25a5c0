//! Token buckets on tokio's paused clock (exact rate and burst, identity fairness, overrides,
//! the total cap, a refused request taking no token, the bounded identity map), the conversion
//! from the proto, and a limiter surviving an update that keeps the limit.

use super::*;
use crate::policy::inbound::{proto, tests as pt, ServerPolicy};
use linkerd2_proxy_api::inbound::{
    self as inb, http_local_rate_limit as rl, proxy_protocol, Identity,
};
use tokio::time::advance;

const A: &str = "a.default.serviceaccount.identity.weft.cluster.local";
const B: &str = "b.default.serviceaccount.identity.weft.cluster.local";
const VIP: &str = "vip.default.serviceaccount.identity.weft.cluster.local";

fn rps(n: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(n)
}

fn limiter(total: u32, identity: u32, overrides: &[(u32, &[&str])]) -> RateLimiter {
    RateLimiter::new(RateLimit {
        meta: Arc::new(Meta::default()),
        total: rps(total),
        identity: rps(identity),
        overrides: overrides
            .iter()
            .map(|(n, ids)| Override {
                rps: rps(*n).expect("non-zero"),
                identities: ids.iter().map(|i| i.to_string()).collect(),
            })
            .collect(),
    })
}

/// How many of `n` requests from `id` pass now.
fn passed(l: &RateLimiter, id: Option<&str>, n: usize) -> usize {
    (0..n).filter(|_| l.check(id).is_ok()).count()
}

fn scope(l: &RateLimiter, id: Option<&str>) -> Option<Scope> {
    l.check(id).err().map(|e| e.scope)
}

#[tokio::test(start_paused = true)]
async fn a_bucket_holds_one_second_and_refills_continuously_at_its_rate() {
    let l = limiter(10, 0, &[]);
    // Burst: exactly rps at one instant.
    assert_eq!(passed(&l, None, 11), 10);
    assert_eq!(
        l.check(None),
        Err(Limited {
            scope: Scope::Total,
            rps: rps(10).unwrap()
        })
    );
    // One token per 100 ms, not before.
    advance(Duration::from_millis(99)).await;
    assert_eq!(passed(&l, None, 1), 0);
    advance(Duration::from_millis(1)).await;
    assert_eq!(passed(&l, None, 2), 1);
    // Partial tokens accumulate: 3 × 50 ms is one and a half.
    for _ in 0..3 {
        advance(Duration::from_millis(50)).await;
    }
    assert_eq!(passed(&l, None, 3), 1);
    advance(Duration::from_millis(50)).await;
    assert_eq!(passed(&l, None, 3), 1);
    // A long idle refills one burst, no more.
    advance(Duration::from_secs(60)).await;
    assert_eq!(passed(&l, None, 20), 10);
    // A rate that does not divide a second: 3 per second stays exact over time.
    let l = limiter(3, 0, &[]);
    assert_eq!(passed(&l, None, 5), 3);
    let mut total = 0;
    for _ in 0..30 {
        advance(Duration::from_millis(100)).await;
        total += passed(&l, None, 5);
    }
    assert_eq!(total, 9, "3 s at 3 rps");
}

#[tokio::test(start_paused = true)]
async fn one_clients_flood_does_not_consume_another_clients_bucket() {
    let l = limiter(0, 5, &[]);
    assert_eq!(passed(&l, Some(A), 100), 5);
    assert_eq!(scope(&l, Some(A)), Some(Scope::Identity));
    assert_eq!(passed(&l, Some(B), 100), 5);
    // Clients without an identity share one bucket.
    assert_eq!(passed(&l, None, 3), 3);
    assert_eq!(passed(&l, None, 3), 2);
    assert_eq!(l.identities(), 2);

    // Under a total too: A's refused requests take no total token, so B still gets its share.
    let l = limiter(8, 5, &[]);
    assert_eq!(passed(&l, Some(A), 100), 5);
    assert_eq!(passed(&l, Some(B), 100), 3, "the total's remaining 3");
    assert_eq!(scope(&l, Some(B)), Some(Scope::Total));
    // And a request the total refuses takes no identity token: B's 97 refusals left its last
    // 2 tokens, so once the total has one again B is refused by the total, not its own bucket.
    advance(Duration::from_millis(125)).await; // one total token
    assert_eq!(passed(&l, Some(B), 1), 1);
    assert_eq!(scope(&l, Some(B)), Some(Scope::Total));
}

#[tokio::test(start_paused = true)]
async fn an_override_beats_the_identity_limit_and_is_shared_by_its_identities() {
    let upper = VIP.to_ascii_uppercase();
    let l = limiter(0, 2, &[(10, &[VIP, B])]);
    assert_eq!(passed(&l, Some(A), 20), 2);
    assert_eq!(passed(&l, Some(VIP), 6), 6);
    // The override's identities share its bucket (as Linkerd's); case does not matter.
    assert_eq!(passed(&l, Some(&upper), 20), 4);
    assert_eq!(scope(&l, Some(B)), Some(Scope::Override));
    // Only identities have overrides: clients without one take the identity bucket.
    assert_eq!(passed(&l, None, 5), 2);
    assert_eq!(
        l.identities(),
        1,
        "no identity bucket for overridden clients"
    );
}

#[tokio::test(start_paused = true)]
async fn the_total_caps_the_sum_of_every_client() {
    let l = limiter(10, 4, &[(8, &[VIP])]);
    let mut passed_total = 0;
    for id in [Some(A), Some(B), Some(VIP), None] {
        passed_total += passed(&l, id, 4);
    }
    assert_eq!(passed_total, 10);
    advance(Duration::from_secs(1)).await;
    let clients: Vec<String> = (0..20).map(|i| format!("c{i}.ns.serviceaccount")).collect();
    let n: usize = clients.iter().map(|c| passed(&l, Some(c), 4)).sum();
    assert_eq!(n, 10, "one second of total, whatever the clients");
}

#[tokio::test(start_paused = true)]
async fn the_identity_map_is_bounded_and_forgets_refilled_buckets_first() {
    let l = limiter(0, 2, &[]);
    for i in 0..MAX_IDENTITIES {
        assert!(l.check(Some(&format!("c{i}"))).is_ok());
    }
    assert_eq!(l.identities(), MAX_IDENTITIES);
    // Everyone is active: the least recently used makes room.
    advance(Duration::from_millis(100)).await;
    assert_eq!(passed(&l, Some("c1"), 1), 1);
    advance(Duration::from_millis(100)).await;
    assert_eq!(passed(&l, Some("new"), 1), 1);
    assert_eq!(l.identities(), MAX_IDENTITIES);
    // A second later every bucket refilled: a new identity clears them out (nothing lost).
    advance(Duration::from_secs(1)).await;
    assert_eq!(passed(&l, Some("c1"), 3), 2);
    assert_eq!(passed(&l, Some("late"), 1), 1);
    assert_eq!(l.identities(), 2, "c1 (in use) and late");
    assert_eq!(passed(&l, Some("c1"), 1), 0, "c1's bucket was kept");
}

fn proto_limit(
    total: u32,
    identity: Option<u32>,
    overrides: Vec<rl::Override>,
) -> inb::HttpLocalRateLimit {
    inb::HttpLocalRateLimit {
        metadata: pt::resource("policy.linkerd.io", "httplocalratelimitpolicy", "web-rl"),
        total: Some(rl::Limit {
            requests_per_second: total,
        }),
        identity: identity.map(|n| rl::Limit {
            requests_per_second: n,
        }),
        overrides,
    }
}

fn proto_override(n: u32, ids: &[&str]) -> rl::Override {
    rl::Override {
        limit: Some(rl::Limit {
            requests_per_second: n,
        }),
        clients: Some(rl::r#override::ClientIdentities {
            identities: ids
                .iter()
                .map(|i| Identity {
                    name: (*i).to_string(),
                })
                .collect(),
        }),
    }
}

/// An HTTP server of each protocol carrying `limit`.
fn with_limit(limit: Option<inb::HttpLocalRateLimit>) -> Vec<inb::Server> {
    let base = pt::detect_server(
        ("policy.linkerd.io", "server", "web-http"),
        Vec::new(),
        Vec::new(),
    );
    let Some(proxy_protocol::Kind::Detect(detect)) = base.protocol.clone().and_then(|p| p.kind)
    else {
        panic!("a detect server");
    };
    let routes = detect.http_routes.clone();
    let kinds = [
        proxy_protocol::Kind::Detect(proxy_protocol::Detect {
            http_local_rate_limit: limit.clone(),
            ..detect
        }),
        proxy_protocol::Kind::Http1(proxy_protocol::Http1 {
            routes: routes.clone(),
            local_rate_limit: limit.clone(),
        }),
        proxy_protocol::Kind::Http2(proxy_protocol::Http2 {
            routes,
            local_rate_limit: limit,
        }),
    ];
    kinds
        .into_iter()
        .map(|kind| inb::Server {
            protocol: Some(inb::ProxyProtocol { kind: Some(kind) }),
            ..base.clone()
        })
        .collect()
}

#[test]
fn rate_limits_convert_from_every_http_protocol() {
    let limit = proto_limit(
        100,
        Some(20),
        vec![
            proto_override(
                25,
                &["Special.NS.serviceaccount.identity.weft.cluster.local."],
            ),
            // Unusable overrides are dropped: no rate, no clients.
            proto_override(0, &[A]),
            proto_override(5, &[]),
        ],
    );
    let expected = RateLimit {
        meta: Arc::new(Meta {
            group: "policy.linkerd.io".into(),
            kind: "httplocalratelimitpolicy".into(),
            namespace: "default".into(),
            name: "web-rl".into(),
            ..Meta::default()
        }),
        total: rps(100),
        identity: rps(20),
        overrides: vec![Override {
            rps: rps(25).unwrap(),
            identities: vec!["special.ns.serviceaccount.identity.weft.cluster.local".into()],
        }],
    };
    for server in with_limit(Some(limit)) {
        let p = proto::server(server).expect("converts");
        let l = p.rate_limit.expect("a rate limit");
        assert_eq!(l.limit(), &expected);
    }
    // No limit, or one limiting nothing (zero is no limit): none.
    for server in with_limit(None)
        .into_iter()
        .chain(with_limit(Some(proto_limit(0, Some(0), Vec::new()))))
    {
        assert!(proto::server(server)
            .expect("converts")
            .rate_limit
            .is_none());
    }
    // Default servers never have one.
    let p = proto::server(pt::default_server(crate::config::DefaultPolicy::Audit)).unwrap();
    assert!(p.rate_limit.is_none());
}

#[tokio::test(start_paused = true)]
async fn an_update_keeping_the_limit_keeps_the_buckets() {
    let server = |total| {
        let mut s = with_limit(Some(proto_limit(total, None, Vec::new())));
        proto::server(s.remove(0)).expect("converts")
    };
    let first: ServerPolicy = server(10);
    let l = first.rate_limit.clone().expect("limited");
    assert_eq!(passed(&l, None, 20), 10);

    // Re-sent: same limiter, still empty.
    let mut again = server(10);
    again.keep_rate_limiter(&first);
    let kept = again.rate_limit.clone().expect("limited");
    assert!(Arc::ptr_eq(&kept, &l));
    assert_eq!(passed(&kept, None, 1), 0);

    // Another limit: new, full buckets.
    let mut changed = server(20);
    changed.keep_rate_limiter(&again);
    let fresh = changed.rate_limit.expect("limited");
    assert!(!Arc::ptr_eq(&fresh, &l));
    assert_eq!(passed(&fresh, None, 30), 20);
}
