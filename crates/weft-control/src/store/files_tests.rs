//! The store over a real directory, driven synchronously: per-document validation across
//! loads, and registrations that do not depend on unrelated files.

use super::*;

fn store(test: &str) -> Store {
    let dir = std::env::temp_dir().join(format!(
        "weft-store-{test}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(dir.join(REGISTERED_DIR)).unwrap();
    Store {
        dir,
        core: Core::new(Defaults {
            trust_domain: "cluster.local".into(),
            control_namespace: "weft".into(),
        }),
        cache: HashMap::new(),
        unsettled: HashMap::new(),
    }
}

fn svc(name: &str, port: u32) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{selector: {{app: {name}}}, ports: [{{port: {port}}}]}}\n")
}

fn ports(s: &Store) -> Vec<(String, u16)> {
    s.core
        .states_tx
        .borrow()
        .services
        .values()
        .map(|s| (s.name.clone(), s.ports[0].port))
        .collect()
}

fn write(s: &Store, file: &str, text: &str) {
    std::fs::write(s.dir.join(file), text).unwrap();
}

#[test]
fn documents_apply_one_by_one_across_loads() {
    let mut s = store("per-document");
    write(
        &s,
        "s.yaml",
        &format!("{}---\n{}", svc("api", 81), svc("web", 80)),
    );
    assert!(s.load().is_empty());
    assert_eq!(s.core.status_tx.borrow().generation, 1);

    // A good and a bad document in one file: the good one applies, the bad one keeps its
    // last good version.
    write(
        &s,
        "s.yaml",
        &format!("{}---\n{}", svc("api", 91), svc("web", 70000)),
    );
    let errors = s.load();
    assert_eq!(
        errors,
        vec!["s.yaml: document 1: spec.ports[0].port: must be 1..65535, got 70000"]
    );
    assert_eq!(ports(&s), [("api".into(), 91), ("web".into(), 80)]);
    assert_eq!(s.core.status_tx.borrow().errors, errors);
    assert_eq!(s.core.status_tx.borrow().generation, 2);

    // Fixing it applies it and clears the errors.
    write(
        &s,
        "s.yaml",
        &format!("{}---\n{}", svc("api", 91), svc("web", 90)),
    );
    assert!(s.load().is_empty());
    assert_eq!(ports(&s), [("api".into(), 91), ("web".into(), 90)]);
    assert!(s.core.status_tx.borrow().errors.is_empty());

    // Removing the file removes its documents.
    std::fs::remove_file(s.dir.join("s.yaml")).unwrap();
    assert!(s.load().is_empty());
    assert!(ports(&s).is_empty());
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn registration_is_applied_despite_an_unrelated_bad_file() {
    let mut s = store("register");
    write(
        &s,
        "bad.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n",
    );
    assert_eq!(s.load().len(), 1);
    let doc = serde_json::json!({
        "apiVersion": "workload.linkerd.io/v1beta1",
        "kind": "ExternalWorkload",
        "metadata": {"name": "web-1", "namespace": "default"},
        "spec": {"workloadIPs": [{"ip": "127.0.0.1"}]},
    });
    let crate::resource::Resource::Workload(w) =
        crate::resource::validate_one(&doc, "request body", &s.core.defaults).unwrap()
    else {
        panic!("not a workload")
    };
    s.register(w.clone()).expect("registered");
    let key = ("default".to_string(), "web-1".to_string());
    assert_eq!(s.core.states_tx.borrow().workloads.get(&key), Some(&w));
    assert_eq!(
        s.core.status_tx.borrow().errors.len(),
        1,
        "the bad file is still reported"
    );

    // A registration that duplicates a file-defined workload is undone and reported.
    write(&s, "w.yaml", "apiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\nmetadata: {name: web-2}\nspec: {workloadIPs: [{ip: 127.0.0.2}]}\n");
    s.load();
    let w2 = ExternalWorkload {
        name: "web-2".into(),
        ..w
    };
    let Err(StoreError::Rejected(errors)) = s.register(w2) else {
        panic!("a duplicate registration was accepted")
    };
    assert!(
        errors
            .iter()
            .any(|e| e.contains("duplicate ExternalWorkload default/web-2")),
        "{errors:?}"
    );
    assert!(!s.registered_path("default", "web-2").exists());
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_poll_applies_a_file_only_once_it_stops_changing() {
    let mut s = store("settle");
    write(&s, "s.yaml", &svc("api", 81));
    assert!(s.load().is_empty());
    assert_eq!(ports(&s), [("api".to_string(), 81)]);

    // `>` truncates, then writes: a poll between the two sees an empty file. It must not
    // take that for the removal of the service.
    write(&s, "s.yaml", "");
    assert!(s.poll().is_empty());
    assert_eq!(
        ports(&s),
        [("api".to_string(), 81)],
        "a half-written file applied"
    );
    write(&s, "s.yaml", &svc("api", 82));
    assert!(s.poll().is_empty());
    assert_eq!(ports(&s), [("api".to_string(), 81)]);
    // The same text again (the same length, maybe the same mtime tick as 81: read anyway,
    // the file is recent): applied.
    assert!(s.poll().is_empty());
    assert_eq!(ports(&s), [("api".to_string(), 82)]);

    // A new file and a removed one, the same way; an emptied file that stays empty is a removal.
    write(&s, "t.yaml", &svc("web", 80));
    s.poll();
    assert_eq!(ports(&s).len(), 1, "a file seen once applied");
    s.poll();
    assert_eq!(ports(&s).len(), 2);
    write(&s, "t.yaml", "");
    s.poll();
    s.poll();
    assert_eq!(ports(&s), [("api".to_string(), 82)]);
    std::fs::remove_file(s.dir.join("s.yaml")).unwrap();
    s.poll();
    assert!(ports(&s).is_empty(), "a removal waits for nothing");
}
