//! The objects the control plane writes to the stand-in API server (`kube_api`), kept as the
//! API server keeps them: Leases, ConfigMaps and ServiceAccounts by path with a `resourceVersion` that moves on
//! every write (get, list by label, create, replace — checked against the version when the
//! body carries one —, delete with a `resourceVersion` precondition), and the `status`
//! subresource of listed objects (routes): read, and merge-patched at the `resourceVersion`
//! read, each patch recorded for assertions.

use std::collections::{BTreeMap, HashMap};

use serde_json::{json, Value};

/// The collections kept here (the last path segment of a collection).
const COLLECTIONS: &[&str] = &["leases", "configmaps", "serviceaccounts"];

#[derive(Default)]
pub struct Objects {
    /// Stored objects by path (`/api/v1/namespaces/weft/configmaps/NAME`).
    by_path: BTreeMap<String, Value>,
    version: u64,
    /// Every `status` merge patch: (path, body), in order.
    pub patches: Vec<(String, Value)>,
}

fn conflict(what: &str) -> (u16, Value) {
    (
        409,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("Operation cannot be fulfilled on {what}: the object has been modified; please apply your changes to the latest version and try again"),
               "reason": "Conflict", "code": 409}),
    )
}

fn not_found() -> (u16, Value) {
    (404, super::kube_api::fixture_json("status-404.json"))
}

/// `%XX` escapes decoded (label selectors arrive as `weft.io%2Frecord%3Dissuance`).
pub fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], s.get(i + 1..i + 3)) {
            (b'%', Some(hex)) if u8::from_str_radix(hex, 16).is_ok() => {
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `object`'s labels match `selector` (`k=v,k2=v2`; empty matches all).
fn matches(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        object["metadata"]["labels"][k] == v
    })
}

impl Objects {
    /// The answer to a request this store handles (`None`: not one of its paths).
    /// `lists` are the listed objects by collection path, whose `status` this reads and
    /// patches.
    pub fn answer(
        &mut self,
        lists: &mut HashMap<String, Value>,
        method: &str,
        path: &str,
        query: &str,
        body: Value,
    ) -> Option<(u16, Value)> {
        if let Some(item) = path.strip_suffix("/status") {
            return Some(self.status(lists, method, item, body));
        }
        let last = path.rsplit('/').next().unwrap_or("");
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        let collection = if COLLECTIONS.contains(&last) {
            path
        } else if COLLECTIONS
            .iter()
            .any(|c| parent.ends_with(&format!("/{c}")))
        {
            parent
        } else {
            return None;
        };
        let what = collection.rsplit('/').next().unwrap_or("");
        let at_version = |v: &Value| v["metadata"]["resourceVersion"].clone();
        Some(match (method, path == collection) {
            ("GET", true) => {
                let selector = query
                    .split('&')
                    .find_map(|p| p.strip_prefix("labelSelector="))
                    .map(unescape)
                    .unwrap_or_default();
                let items: Vec<Value> = self
                    .by_path
                    .iter()
                    .filter(|(p, o)| {
                        p.strip_prefix(collection)
                            .is_some_and(|rest| rest.starts_with('/'))
                            && matches(o, &selector)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                let version = self.version.to_string();
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": version}, "items": items}),
                )
            }
            // An object the test put in place with `FakeApi::set_list` is answered as stored.
            ("GET", false) => match self.by_path.get(path).or_else(|| lists.get(path)) {
                Some(o) => (200, o.clone()),
                None => not_found(),
            },
            ("POST", true) => {
                let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
                let at = format!("{path}/{name}");
                if self.by_path.contains_key(&at) {
                    return Some(conflict(what));
                }
                // A created object gets a uid of its own (a re-created one a new one).
                let mut body = body;
                let uid = format!("00000000-0000-4000-9000-{:012}", self.version + 1);
                body["metadata"]["uid"] = json!(uid);
                body["metadata"]["creationTimestamp"] = json!("2026-12-01T11:00:00Z");
                self.store(at, body)
            }
            ("PUT", false) => {
                let Some(held) = self.by_path.get(path) else {
                    return Some(not_found());
                };
                // Without a version the update is unconditional, as the API server takes it.
                let asked = at_version(&body);
                if !asked.is_null() && asked != at_version(held) {
                    return Some(conflict(what));
                }
                self.store(path.to_string(), body)
            }
            ("DELETE", false) => {
                let Some(held) = self.by_path.get(path) else {
                    return Some(not_found());
                };
                let asked = body["preconditions"]["resourceVersion"].clone();
                if !asked.is_null() && asked != at_version(held) {
                    return Some(conflict(what));
                }
                (200, self.by_path.remove(path).unwrap_or(Value::Null))
            }
            _ => (405, Value::Null),
        })
    }

    /// `GET` or merge `PATCH` of the status of the listed object at `item`
    /// (`/apis/G/V/namespaces/NS/PLURAL/NAME`).
    fn status(
        &mut self,
        lists: &mut HashMap<String, Value>,
        method: &str,
        item: &str,
        body: Value,
    ) -> (u16, Value) {
        let parts: Vec<&str> = item.rsplitn(5, '/').collect();
        let [name, plural, ns, "namespaces", prefix] = parts[..] else {
            return not_found();
        };
        let Some(object) = lists
            .get_mut(&format!("{prefix}/{plural}"))
            .and_then(|l| l["items"].as_array_mut())
            .and_then(|items| {
                items
                    .iter_mut()
                    .find(|o| o["metadata"]["namespace"] == ns && o["metadata"]["name"] == name)
            })
        else {
            return not_found();
        };
        match method {
            "GET" => (200, object.clone()),
            "PATCH" => {
                self.patches.push((format!("{item}/status"), body.clone()));
                let asked = body["metadata"]["resourceVersion"].clone();
                if !asked.is_null() && asked != object["metadata"]["resourceVersion"] {
                    return conflict(plural);
                }
                object["status"] = body["status"].clone();
                self.version += 1;
                object["metadata"]["resourceVersion"] = json!(self.version.to_string());
                (200, object.clone())
            }
            _ => (405, Value::Null),
        }
    }

    /// The next `resourceVersion` (one counter for every object, as etcd's revision).
    pub fn next_version(&mut self) -> u64 {
        self.version += 1;
        self.version
    }

    /// Moves the counter up to `version` (a recorded answer's), never down.
    pub fn saw_version(&mut self, version: u64) {
        self.version = self.version.max(version);
    }

    fn store(&mut self, at: String, mut object: Value) -> (u16, Value) {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let created = !self.by_path.contains_key(&at);
        self.by_path.insert(at, object.clone());
        (if created { 201 } else { 200 }, object)
    }

    /// Stores `object` at `path` as if some client had created it.
    pub fn put(&mut self, path: &str, object: Value) {
        self.store(path.to_string(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.by_path.get(path).cloned()
    }

    /// Paths of the stored objects under `collection`.
    pub fn paths(&self, collection: &str) -> Vec<String> {
        self.by_path
            .keys()
            .filter(|p| {
                p.strip_prefix(collection)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .cloned()
            .collect()
    }
}
