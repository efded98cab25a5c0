//! The `Ready` condition in the index: a workload that is not ready is no endpoint of the
//! Services selecting it, and becomes one when it turns ready.

use super::*;
use crate::resource::workload_status::{Condition, ConditionStatus};

fn key(name: &str) -> (String, String) {
    ("default".into(), name.into())
}

/// `sample()` with web-2's conditions replaced.
fn with_web_2(conditions: Vec<Condition>) -> State {
    let mut s = sample();
    s.workloads.get_mut(&key("web-2")).unwrap().conditions = conditions;
    s
}

fn condition(type_: &str, status: ConditionStatus) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        ..not_ready()
    }
}

#[test]
fn a_workload_that_is_not_ready_is_no_endpoint_of_its_services() {
    let s = with_web_2(vec![not_ready()]);
    // By name and by cluster IP alike.
    assert_eq!(
        addrs(&destination(&s, DOMAIN, &name("web", 8080))),
        vec!["127.0.0.1:18080"]
    );
    let by_ip = Target::Addr("198.18.0.10:8080".parse().unwrap());
    assert_eq!(
        addrs(&destination(&s, DOMAIN, &by_ip)),
        vec!["127.0.0.1:18080"]
    );
    // Its own address still resolves to it: a peer dialing it directly gets its identity (and
    // speaks mTLS), rather than being told the address is outside the mesh.
    let direct = Target::Addr("127.0.0.2:18081".parse().unwrap());
    assert_eq!(
        addrs(&destination(&s, DOMAIN, &direct)),
        vec!["127.0.0.2:18081"]
    );
}

#[test]
fn only_a_true_ready_condition_or_none_at_all_is_ready() {
    let cases = [
        (vec![], true),
        (vec![condition("Ready", ConditionStatus::True)], true),
        (vec![condition("Ready", ConditionStatus::False)], false),
        (vec![condition("Ready", ConditionStatus::Unknown)], false),
        // Other condition types do not decide readiness.
        (vec![condition("Probed", ConditionStatus::False)], true),
        (
            vec![
                condition("Probed", ConditionStatus::True),
                condition("Ready", ConditionStatus::False),
            ],
            false,
        ),
    ];
    for (conditions, ready) in cases {
        let s = with_web_2(conditions.clone());
        let endpoints = addrs(&destination(&s, DOMAIN, &name("web", 8080)));
        assert_eq!(
            endpoints.contains(&"127.0.0.2:18081".to_string()),
            ready,
            "{conditions:?}"
        );
        assert_eq!(s.workloads[&key("web-2")].ready(), ready, "{conditions:?}");
    }
}

#[tokio::test]
async fn turning_ready_publishes_the_endpoint_to_watchers() {
    let index = Index::new(DOMAIN);
    index.apply(Arc::new(with_web_2(vec![not_ready()])));
    let mut web = index.destination(&name("web", 8080));
    assert_eq!(addrs(&web.borrow_and_update()), vec!["127.0.0.1:18080"]);

    index.apply(Arc::new(with_web_2(vec![condition(
        "Ready",
        ConditionStatus::True,
    )])));
    assert!(web.has_changed().unwrap(), "Ready=True was not published");
    assert_eq!(
        addrs(&web.borrow_and_update()),
        vec!["127.0.0.1:18080", "127.0.0.2:18081"]
    );

    // And back: not ready any more, no endpoint any more.
    index.apply(Arc::new(with_web_2(vec![not_ready()])));
    assert!(web.has_changed().unwrap());
    assert_eq!(addrs(&web.borrow_and_update()), vec!["127.0.0.1:18080"]);
}
