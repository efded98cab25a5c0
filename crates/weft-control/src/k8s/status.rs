//! The leader's status writes with the Kubernetes store, for every kind the table of kinds
//! says the leader writes (`resource::kinds`, `writes_status`):
//!
//! - a route's `status.parents` (Gateway API's shape, one entry per parentRef under Weft's
//!   controllerName, `Accepted` and `ResolvedRefs` conditions) is written with a merge patch of
//!   its `status` subresource, as Linkerd's policy controller writes HTTPRoute status: the
//!   route's status is read first and other controllers' entries (a Gateway's) are kept, the
//!   patch carrying the `resourceVersion` read so a concurrent write makes it fail (`409`) and
//!   it is tried again;
//! - an HTTPLocalRateLimitPolicy's `status` (`conditions`: `Accepted`, and `targetRef`) and an
//!   EgressNetwork's (`conditions`) are Weft's alone and replaced whole with a merge patch, as
//!   Linkerd's policy controller patches them.
//!
//! Server and AuthorizationPolicy get none: Linkerd writes none for them (`GET /v1/store` shows
//! theirs). Which objects to patch (only changed ones, only while leading) is
//! `store::status::run`'s; this is the [`Sink`] it writes to. What was written before this
//! replica led is not read back (objects are cut down as they arrive): a new leader patches
//! every object once.

use std::collections::BTreeMap;

use k8s_openapi::chrono::{SecondsFormat, Utc};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};

use super::KINDS;
use crate::index::routes::CONTROLLER_NAME;
use crate::resource::kinds;
use crate::store::status::Sink;
use crate::store::StoreStatus;

/// An object whose status the leader writes: (group, kind, namespace, name).
pub type Key = (&'static str, &'static str, String, String);

/// Whether the leader writes the status of `group`'s `kind`.
fn writes_status(group: &str, kind: &str) -> bool {
    kinds::find(group, kind).is_some_and(|k| k.writes_status)
}

/// The `status` subresources of the routes and policies.
pub struct Objects {
    client: kube::Client,
}

impl Objects {
    pub fn new(client: kube::Client) -> Objects {
        Objects { client }
    }
}

impl Sink for Objects {
    type Key = Key;
    type Error = kube::Error;

    /// Each object's `status` (a route's `parents`; a policy's `conditions` and `targetRef`),
    /// without times (so an unchanged status compares equal).
    fn desired(&self, status: &StoreStatus) -> BTreeMap<Key, Vec<u8>> {
        let routes = status.routes.iter().map(|r| {
            let key = (r.group, r.kind, r.namespace.clone(), r.name.clone());
            (key, json!({"parents": r.parents}))
        });
        let policies = status.policies.iter().map(|p| {
            let key = (p.group, p.kind, p.namespace.clone(), p.name.clone());
            let mut value = json!({"conditions": p.conditions});
            if let Some(target) = &p.target_ref {
                value["targetRef"] = json!(target);
            }
            (key, value)
        });
        routes
            .chain(policies)
            .filter(|((group, kind, _, _), _)| writes_status(group, kind))
            .map(|(key, value)| (key, serde_json::to_vec(&value).unwrap_or_default()))
            .collect()
    }

    async fn read(&self) -> Result<BTreeMap<Key, Vec<u8>>, kube::Error> {
        Ok(BTreeMap::new())
    }

    async fn put(&self, key: &Key, value: &[u8]) -> Result<(), kube::Error> {
        let (group, kind, namespace, name) = key;
        let Some(k) = KINDS.iter().find(|k| k.group == *group && k.kind == *kind) else {
            return Ok(());
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &k.api_resource());
        let mut status: Value = serde_json::from_slice(value).unwrap_or_default();
        let result = async {
            let patch = match status.get_mut("parents") {
                Some(ours) => {
                    let current = api.get_status(name).await?;
                    let mut parents: Vec<Value> = current.data["status"]["parents"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["controllerName"] != CONTROLLER_NAME)
                        .cloned()
                        .collect();
                    for parent in ours.as_array_mut().into_iter().flatten() {
                        set_times(&mut parent["conditions"]);
                    }
                    parents.extend(ours.as_array().into_iter().flatten().cloned());
                    json!({
                        "metadata": {"resourceVersion": current.metadata.resource_version},
                        "status": {"parents": parents},
                    })
                }
                None => {
                    set_times(&mut status["conditions"]);
                    json!({ "status": status })
                }
            };
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
        };
        match result.await {
            // Deleted meanwhile: its status goes with it.
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            other => other.map(drop),
        }
    }

    /// An object no longer in force is gone from the cluster (or its last good version still
    /// is): nothing to write.
    async fn delete(&self, _key: &Key) -> Result<(), kube::Error> {
        Ok(())
    }
}

/// Sets each condition's `lastTransitionTime` (which the condition schema requires) to now: a
/// status is written when it changed.
fn set_times(conditions: &mut Value) {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    for c in conditions.as_array_mut().into_iter().flatten() {
        c["lastTransitionTime"] = json!(now);
    }
}
