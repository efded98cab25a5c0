//! The scrape table without a network: targets follow the state, scrapes are recorded, and
//! staleness follows the interval.

use super::*;
use crate::documents::state_of;

const INTERVAL: Duration = Duration::from_secs(10);

fn workload(name: &str, ip: &str, admin: Option<u16>) -> String {
    let admin = admin.map_or(String::new(), |p| {
        format!(", {{name: linkerd-admin, port: {p}}}")
    });
    format!(
        "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\n\
         metadata: {{name: {name}, namespace: demo}}\n\
         spec: {{workloadIPs: [{{ip: {ip}}}], ports: [{{name: http, port: 8080}}{admin}]}}\n"
    )
}

fn key(name: &str) -> Key {
    ("demo".to_string(), name.to_string())
}

fn ok(requests: f64) -> Result<Snapshot, String> {
    let mut s = Snapshot::default();
    s.inbound.requests = requests;
    Ok(s)
}

#[test]
fn targets_are_the_meshed_workloads_and_follow_the_state() {
    let t = Telemetry::new(INTERVAL);
    let state = state_of(
        &[
            workload("web", "198.18.0.10", Some(4191)),
            workload("db", "198.18.0.11", None),
        ]
        .join("---\n"),
    );
    let web: SocketAddr = "198.18.0.10:4191".parse().expect("addr");
    assert_eq!(t.targets(&state), vec![(key("web"), web)]);
    let now = Instant::now();
    t.record(&key("web"), web, now, ok(5.0));
    assert_eq!(t.lock()[&key("web")].history.len(), 1);

    // Re-registered with another admin address: another proxy, a fresh history.
    let moved = state_of(&workload("web", "198.18.0.20", Some(4191)));
    let web2: SocketAddr = "198.18.0.20:4191".parse().expect("addr");
    assert_eq!(t.targets(&moved), vec![(key("web"), web2)]);
    assert!(t.lock()[&key("web")].history.is_empty());
    // A scrape of the old address that finishes late is not recorded.
    t.record(&key("web"), web, now, ok(6.0));
    assert!(t.lock()[&key("web")].history.is_empty());

    // Gone from the state: forgotten, and late scrapes of it are dropped.
    assert!(t
        .targets(&state_of(&workload("db", "198.18.0.11", None)))
        .is_empty());
    assert!(t.lock().is_empty());
    t.record(&key("web"), web2, now, ok(7.0));
    assert!(t.lock().is_empty());
}

#[test]
fn a_proxy_is_stale_until_scraped_and_again_three_intervals_after_its_last_scrape() {
    let t = Telemetry::new(INTERVAL);
    let state = state_of(&workload("web", "198.18.0.10", Some(4191)));
    let admin: SocketAddr = "198.18.0.10:4191".parse().expect("addr");
    let status = |now| {
        t.statuses(&state, now, Duration::from_secs(60), |_| true)
            .remove(&key("web"))
            .expect("meshed workloads have a status")
    };
    let start = Instant::now();
    // Not even a target yet.
    assert_eq!(
        status(start),
        Status {
            window: None,
            stale: true,
            error: None
        }
    );
    t.targets(&state);
    assert!(status(start).stale, "never scraped");

    t.record(&key("web"), admin, start, ok(10.0));
    assert!(!status(start).stale);
    assert!(!status(start + 3 * INTERVAL).stale);
    // A failed scrape is reported at once, but the figures are not stale yet.
    let refused = "connecting to 198.18.0.10:4191: Connection refused (os error 111)";
    t.record(&key("web"), admin, start + INTERVAL, Err(refused.into()));
    let s = status(start + INTERVAL);
    assert_eq!((s.stale, s.error.as_deref()), (false, Some(refused)));
    let s = status(start + 3 * INTERVAL + Duration::from_millis(1));
    assert_eq!((s.stale, s.error.as_deref()), (true, Some(refused)));
    // Its last figures stay until they fall out of the window.
    assert!(s.window.is_some());
    assert!(status(start + Duration::from_secs(61)).window.is_none());
    // A success clears both.
    t.record(&key("web"), admin, start + 4 * INTERVAL, ok(20.0));
    let s = status(start + 4 * INTERVAL);
    assert_eq!((s.stale, s.error), (false, None));
    assert_eq!(
        s.window.expect("window").delta.inbound.requests,
        10.0,
        "the two scrapes 40 s apart"
    );
}

#[test]
fn without_scraping_every_meshed_workload_is_stale_and_says_why() {
    let t = Telemetry::new(Duration::ZERO);
    let state = state_of(
        &[
            workload("web", "198.18.0.10", Some(4191)),
            workload("db", "198.18.0.11", None),
        ]
        .join("---\n"),
    );
    let statuses = t.statuses(&state, Instant::now(), Duration::from_secs(60), |_| true);
    assert_eq!(statuses.len(), 1, "only meshed workloads have a proxy");
    let web = &statuses[&key("web")];
    assert!(web.stale);
    assert!(web
        .error
        .as_deref()
        .is_some_and(|e| e.contains("--scrape-interval 0s")));
}

#[tokio::test(start_paused = true)]
async fn the_scrape_task_ends_with_the_control_plane() {
    let index = Index::new("cluster.local");
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(Telemetry::new(INTERVAL), index, rx));
    tokio::time::sleep(3 * INTERVAL).await;
    assert!(!task.is_finished());
    tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("ends at once")
        .expect("no panic");
}
