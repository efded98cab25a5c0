//! The targets file: its rendering, and its rewrite as the index's workloads change.

use super::*;
use crate::documents::state_of;
use std::time::Duration;

fn workload(ns: &str, name: &str, ip: &str, admin: Option<u16>) -> String {
    let admin = admin.map_or(String::new(), |p| {
        format!(", {{name: linkerd-admin, port: {p}}}")
    });
    format!(
        "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         spec: {{workloadIPs: [{{ip: {ip}}}], ports: [{{name: http, port: 8080}}{admin}]}}\n"
    )
}

fn docs(workloads: &[String]) -> Arc<State> {
    Arc::new(state_of(&workloads.join("---\n")))
}

#[test]
fn one_group_per_meshed_workload_with_its_admin_address_and_labels() {
    let state = docs(&[
        workload("demo", "web", "198.18.0.10", Some(4191)),
        workload("demo", "legacy", "198.18.0.11", None),
        workload("apps", "books", "127.0.0.1", Some(40389)),
    ]);
    let text = render(&state, "weft");
    let parsed: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(
        parsed,
        json!([
            {"targets": ["127.0.0.1:40389"],
             "labels": {"namespace": "apps", "workload": "books", "control_plane_ns": "weft"}},
            {"targets": ["198.18.0.10:4191"],
             "labels": {"namespace": "demo", "workload": "web", "control_plane_ns": "weft"}},
        ])
    );
    assert!(text.ends_with("]\n"), "{text}");
    // Nothing meshed: an empty list, which Prometheus reads as no targets.
    assert_eq!(render(&State::default(), "weft"), "[]\n");
}

#[test]
fn the_writer_rewrites_only_when_the_targets_change() {
    let dir = crate::test_dir("file-sd-writer");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("targets.json");
    let mut writer = Writer::new(path.clone(), "weft");
    let web = workload("demo", "web", "198.18.0.10", Some(4191));
    assert!(writer
        .update(&docs(std::slice::from_ref(&web)))
        .expect("write"));
    let first = std::fs::read_to_string(&path).expect("read");
    assert!(first.contains("198.18.0.10:4191"), "{first}");
    // An unmeshed workload joins: the targets are the same, the file is left alone.
    let legacy = workload("demo", "legacy", "198.18.0.11", None);
    assert!(!writer
        .update(&docs(&[web.clone(), legacy.clone()]))
        .expect("no write"));
    // web moves its admin port: rewritten, whole, and no temporary file is left beside it.
    let moved = workload("demo", "web", "198.18.0.10", Some(4192));
    assert!(writer.update(&docs(&[moved, legacy])).expect("write"));
    let second = std::fs::read_to_string(&path).expect("read");
    assert!(
        second.contains("198.18.0.10:4192") && !second.contains(":4191"),
        "{second}"
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["targets.json"]);
    // A failed write is tried again with the next state, even an identical one.
    let mut broken = Writer::new(dir.join("missing").join("targets.json"), "weft");
    assert!(broken.update(&docs(std::slice::from_ref(&web))).is_err());
    assert!(broken.update(&docs(&[web])).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits (bounded) until the file at `path` satisfies `done`.
async fn file_becomes(path: &Path, done: impl Fn(&str) -> bool) -> String {
    for _ in 0..500 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if done(&text) {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{} never reached the expected content: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

#[tokio::test]
async fn the_task_follows_the_states_the_index_applies() {
    let dir = crate::test_dir("file-sd-task");
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("targets.json");
    let index = Index::new("cluster.local");
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run(
        Writer::new(path.clone(), "weft"),
        index.clone(),
        shutdown,
    ));
    // Written at start, before any workload.
    file_becomes(&path, |t| t == "[]\n").await;
    index.apply(docs(&[workload("demo", "web", "198.18.0.10", Some(4191))]));
    file_becomes(&path, |t| t.contains("198.18.0.10:4191")).await;
    index.apply(docs(&[
        workload("demo", "web", "198.18.0.10", Some(4191)),
        workload("demo", "books", "198.18.0.11", Some(4191)),
    ]));
    file_becomes(&path, |t| t.contains("198.18.0.11:4191")).await;
    // web leaves.
    index.apply(docs(&[workload(
        "demo",
        "books",
        "198.18.0.11",
        Some(4191),
    )]));
    let text = file_becomes(&path, |t| !t.contains("198.18.0.10")).await;
    assert!(text.contains("\"workload\": \"books\""), "{text}");
    stop.send_replace(true);
    task.await.expect("the task ends on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
