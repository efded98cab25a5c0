//! `/v1/resources`: what `weft apply -f`, `weft delete` and `weft get KIND` ask, for every
//! kind the store accepts and either store. Documents are validated by the store's own code
//! (`documents::parse_yaml_documents`, then the store's cross-document rules) and written
//! through the store task, one document at a time; each answer comes once the index serves
//! the change, so a `200` means Destination and policy already answer with it.
//!
//! As kubectl: a request's documents are applied independently (one bad document does not
//! hold back the others), the answer names each as `created`, `configured`, `unchanged` or
//! its error, kind names are case-insensitive and singular, plural or short, and `GET` answers
//! the documents as applied with a `status` for routes and policies.

use super::{error, in_index, read_body, reply, Ctx};
use crate::documents::{self, DocKey};
use crate::resource::authz;
use crate::resource::egress::EGRESS_NETWORK_KIND;
use crate::resource::kinds::{self, Kind, KINDS};
use crate::resource::multicluster::{LINK_KIND, SECRET_KIND};
use crate::resource::ratelimit::RATE_LIMIT_KIND;
use crate::resource::route::FAULT_INJECTION_KIND;
use crate::resource::State;
use crate::store::{edit, StoreError};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::{json, Value};

/// The kinds the API names: every document kind of the table (`resource::kinds`).
fn document_kinds() -> impl Iterator<Item = &'static Kind> {
    KINDS.iter().filter(|k| k.is_document())
}

/// Whether `name` (lower case, no group) names `kind`: its singular, plural or a short name.
fn names(kind: &Kind, name: &str) -> bool {
    kind.singular() == name || kind.plural == name || kind.short_names.contains(&name)
}

/// The kinds a user's name means: `httproute`, `HTTPRoutes`, `svc`, `server.policy.linkerd.io`.
/// Route kinds are qualified by group (two groups define an `HTTPRoute`: `httproute` names
/// both, `httproute.policy.linkerd.io` one).
pub fn resolve(name: &str) -> Result<Vec<&'static Kind>, String> {
    let lower = name.to_ascii_lowercase();
    let (short, group) = lower.split_once('.').unwrap_or((&lower, ""));
    let found: Vec<&Kind> = document_kinds()
        .filter(|k| names(k, short) && (group.is_empty() || k.group == group))
        .collect();
    if found.is_empty() {
        let mut known: Vec<String> = document_kinds().map(Kind::singular).collect();
        known.dedup();
        return Err(format!(
            "unknown kind {name:?}: one of {} (singular, plural or short, any case; \
             KIND.GROUP picks a group)",
            known.join(", ")
        ));
    }
    Ok(found)
}

/// kubectl's name of a document: `httproute.gateway.networking.k8s.io/web`, `service/web`.
pub fn reference(key: &DocKey) -> String {
    match kinds::by_key(key.kind) {
        Some(k) if k.group.is_empty() => format!("{}/{}", k.singular(), key.name),
        Some(k) => format!("{}.{}/{}", k.singular(), k.group, key.name),
        None => format!("{}/{}", key.kind.to_ascii_lowercase(), key.name),
    }
}

/// A request body as text (the YAML of `weft apply -f`/`weft delete -f`); the refusal otherwise.
async fn read_text(req: Request<Incoming>, ctx: &Ctx) -> Result<String, Response<Full<Bytes>>> {
    let body = read_body(req, ctx).await?;
    String::from_utf8(body.to_vec())
        .map_err(|_| error(StatusCode::BAD_REQUEST, "request body: not UTF-8"))
}

/// The name errors give the request's text: `?file=NAME` (what `weft apply -f` read), else
/// `request`.
fn file_name(query: Option<&str>) -> String {
    let file = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("file="))
        .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_graphic()));
    file.unwrap_or("request").to_string()
}

/// One document's line of an answer.
fn entry(index: usize, key: Option<&DocKey>, outcome: Result<&str, String>) -> Value {
    let mut v = json!({ "document": index });
    if let Some(key) = key {
        v["kind"] = json!(key.kind);
        v["namespace"] = json!(key.namespace);
        v["name"] = json!(key.name);
        v["ref"] = json!(reference(key));
    }
    match outcome {
        Ok(result) => v["result"] = json!(result),
        Err(e) => v["error"] = json!(e),
    }
    v
}

/// `200` when every document went through, else `failed` (`422`, or `404` for deletes of
/// documents that were not there).
fn answer(mut results: Vec<(usize, Value)>, failed: StatusCode) -> Response<Full<Bytes>> {
    results.sort_by_key(|(i, _)| *i);
    let ok = results.iter().all(|(_, v)| v.get("error").is_none());
    let status = if ok { StatusCode::OK } else { failed };
    let results: Vec<Value> = results.into_iter().map(|(_, v)| v).collect();
    reply(status, json!({ "results": results }))
}

/// Waits until the index serves what the store holds now for `key` (the change just made).
async fn served(ctx: &Ctx, key: &DocKey) -> Result<(), StoreError> {
    let target = ctx.store.states().borrow().clone();
    in_index(ctx, |s| same(key, &target, s)).await
}

/// Whether `key` is the same in the store's state `store` and the index's `index`: equal,
/// except that the index fills in an allocated cluster IP the store's Service lacks.
fn same(key: &DocKey, store: &State, index: &State) -> bool {
    let id = (key.namespace.clone(), key.name.clone());
    match key.kind {
        "Service" => {
            let (a, b) = (store.services.get(&id), index.services.get(&id));
            match (a, b) {
                (Some(a), Some(b)) if a.cluster_ip.is_none() => {
                    let b = crate::resource::Service {
                        cluster_ip: None,
                        ..b.clone()
                    };
                    *a == b
                }
                _ => a == b,
            }
        }
        "ExternalWorkload" => store.workloads.get(&id) == index.workloads.get(&id),
        FAULT_INJECTION_KIND => store.faults.get(&id) == index.faults.get(&id),
        authz::SERVER_KIND => store.servers.get(&id) == index.servers.get(&id),
        authz::AUTHORIZATION_POLICY_KIND => {
            store.authorization_policies.get(&id) == index.authorization_policies.get(&id)
        }
        authz::MESH_TLS_KIND => {
            store.mesh_tls_authentications.get(&id) == index.mesh_tls_authentications.get(&id)
        }
        authz::NETWORK_KIND => {
            store.network_authentications.get(&id) == index.network_authentications.get(&id)
        }
        authz::NAMESPACE_KIND => store.namespaces.get(&key.name) == index.namespaces.get(&key.name),
        RATE_LIMIT_KIND => store.rate_limit_policies.get(&id) == index.rate_limit_policies.get(&id),
        EGRESS_NETWORK_KIND => store.egress_networks.get(&id) == index.egress_networks.get(&id),
        LINK_KIND => store.links.get(&id) == index.links.get(&id),
        SECRET_KIND => store.secrets.get(&id) == index.secrets.get(&id),
        _route => {
            fn find<'s>(s: &'s State, key: &DocKey) -> Option<&'s crate::resource::route::Route> {
                s.routes.values().find(|r| {
                    r.kind.qualified() == key.kind
                        && r.namespace == key.namespace
                        && r.name == key.name
                })
            }
            find(store, key) == find(index, key)
        }
    }
}

/// `POST /v1/resources?file=NAME`: applies every document of the YAML body.
pub async fn apply(req: Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    let file = file_name(req.uri().query());
    let text = match read_text(req, ctx).await {
        Ok(text) => text,
        Err(refused) => return refused,
    };
    let parsed = documents::parse_yaml_documents(&file, &text, &ctx.defaults);
    let mut results = Vec::new();
    for bad in &parsed.bad {
        let e = Err(bad.errors.join("; "));
        results.push((bad.index, entry(bad.index, bad.key.as_ref(), e)));
    }
    for doc in parsed.docs {
        let (index, key) = (doc.index, doc.key());
        // The document as the user wrote it (comments and all); re-serialised only when it
        // does not stand alone between `---` lines.
        let written = match edit::piece_of(&text, &key, &ctx.defaults) {
            Some(piece) => piece.to_string(),
            None => yaml_serde::to_string(&*doc.source).unwrap_or_default(),
        };
        let outcome = match ctx.store.apply(doc, written).await {
            Ok(applied) => served(ctx, &key).await.map(|()| applied),
            Err(e) => Err(e),
        };
        let outcome = match &outcome {
            Ok(applied) => Ok(match applied {
                crate::store::Applied::Created => "created",
                crate::store::Applied::Configured => "configured",
                crate::store::Applied::Unchanged => "unchanged",
            }),
            Err(e) => Err(e.to_string()),
        };
        results.push((index, entry(index, Some(&key), outcome)));
    }
    if results.is_empty() {
        return error(StatusCode::BAD_REQUEST, format!("{file}: no documents"));
    }
    answer(results, StatusCode::UNPROCESSABLE_ENTITY)
}

/// Deletes one document; the outcome of one answer line and whether it was "not found".
async fn delete_key(ctx: &Ctx, key: &DocKey) -> (Result<&'static str, String>, bool) {
    let result = match ctx.store.delete(key.clone()).await {
        Ok(()) => served(ctx, key).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => (Ok("deleted"), false),
        Err(e @ StoreError::NotFound(_)) => (Err(e.to_string()), true),
        Err(e) => (Err(e.to_string()), false),
    }
}

/// `DELETE /v1/resources?file=NAME`: deletes every document the YAML body names (only their
/// kind, namespace and name are read, as `kubectl delete -f`).
pub async fn delete_documents(req: Request<Incoming>, ctx: &Ctx) -> Response<Full<Bytes>> {
    let file = file_name(req.uri().query());
    let text = match read_text(req, ctx).await {
        Ok(text) => text,
        Err(refused) => return refused,
    };
    let parsed = documents::parse_yaml_documents(&file, &text, &ctx.defaults);
    let mut keys: Vec<(usize, Option<DocKey>, Vec<String>)> = Vec::new();
    keys.extend(parsed.docs.iter().map(|d| (d.index, Some(d.key()), vec![])));
    // An invalid document still names what to delete when its identity is readable.
    keys.extend(
        parsed
            .bad
            .iter()
            .map(|b| (b.index, b.key.clone(), b.errors.clone())),
    );
    if keys.is_empty() {
        return error(StatusCode::BAD_REQUEST, format!("{file}: no documents"));
    }
    let (mut results, mut all_missing) = (Vec::new(), true);
    for (index, key, errors) in keys {
        let Some(key) = key else {
            all_missing = false;
            let e = Err(errors.join("; "));
            results.push((index, entry(index, None, e)));
            continue;
        };
        let (outcome, missing) = delete_key(ctx, &key).await;
        all_missing &= outcome.is_ok() || missing;
        results.push((index, entry(index, Some(&key), outcome)));
    }
    let failed = if all_missing {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    answer(results, failed)
}

/// The keys in force that `KIND[/NS[/NAME]]` names (`KIND/NAME` for a cluster-scoped kind),
/// and whether a name was given.
fn select(
    ctx: &Ctx,
    kind: &str,
    rest: &[&str],
) -> Result<(Vec<DocKey>, bool), (StatusCode, String)> {
    let kinds = resolve(kind).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let cluster = kinds.iter().all(|k| !k.namespaced);
    let (ns, name) = match (cluster, rest) {
        (_, []) => (None, None),
        (true, [name]) => (Some(""), Some(*name)),
        (false, [ns]) => (Some(*ns), None),
        (false, [ns, name]) => (Some(*ns), Some(*name)),
        _ => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("no such endpoint: /v1/resources/{kind}/{}", rest.join("/")),
            ))
        }
    };
    let in_force = ctx.store.in_force();
    let keys: Vec<DocKey> = in_force
        .keys()
        .filter(|k| kinds.iter().any(|kind| kind.key == k.kind))
        .filter(|k| ns.is_none_or(|ns| k.namespace == ns))
        .filter(|k| name.is_none_or(|name| k.name == name))
        .cloned()
        .collect();
    if let (Some(name), true) = (name, keys.is_empty()) {
        let ns = ns.unwrap_or_default();
        let what = if ns.is_empty() {
            name.to_string()
        } else {
            format!("{ns}/{name}")
        };
        return Err((
            StatusCode::NOT_FOUND,
            format!("{} {what} not found", kinds[0].singular()),
        ));
    }
    Ok((keys, name.is_some()))
}

/// `DELETE /v1/resources/KIND/NS/NAME` (`weft delete KIND NAME -n NS`).
pub async fn delete_one(ctx: &Ctx, kind: &str, rest: &[&str]) -> Response<Full<Bytes>> {
    let keys = match select(ctx, kind, rest) {
        Ok((keys, true)) => keys,
        Ok((_, false)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "DELETE /v1/resources/KIND/NAMESPACE/NAME names one document",
            )
        }
        Err((status, e)) => return error(status, e),
    };
    let key = match keys.as_slice() {
        [key] => key.clone(),
        many => {
            let refs: Vec<String> = many.iter().map(reference).collect();
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "{kind} is ambiguous here: name one of {} with its group",
                    refs.join(", ")
                ),
            );
        }
    };
    match delete_key(ctx, &key).await {
        (Ok(result), _) => answer(vec![(0, entry(0, Some(&key), Ok(result)))], StatusCode::OK),
        (Err(e), true) => error(StatusCode::NOT_FOUND, e),
        (Err(e), false) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

/// `GET /v1/resources/KIND[/NS[/NAME]]`: the documents in force as applied, with the `status`
/// of routes and policies; one document when a name is given, else a list.
pub fn get(ctx: &Ctx, kind: &str, rest: &[&str]) -> Response<Full<Bytes>> {
    let (keys, named) = match select(ctx, kind, rest) {
        Ok(selected) => selected,
        Err((status, e)) => return error(status, e),
    };
    let in_force = ctx.store.in_force();
    let status = ctx.store.status();
    let statuses: Vec<Value> = status
        .routes
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .chain(
            status
                .policies
                .iter()
                .filter_map(|p| serde_json::to_value(p).ok()),
        )
        .collect();
    let docs: Vec<Value> = keys
        .iter()
        .filter_map(|key| in_force.get(key))
        .map(|doc| with_status(&doc.key(), (*doc.source).clone(), &statuses))
        .collect();
    match (named, docs.as_slice()) {
        (true, [doc]) => reply(StatusCode::OK, doc.clone()),
        _ => reply(StatusCode::OK, Value::Array(docs)),
    }
}

/// `doc` with the `status` `GET /v1/store` reports for it (routes: `parents`; Servers and
/// policies: `conditions`, and a rate-limit policy's `targetRef`), as Kubernetes shows status
/// on the object.
fn with_status(key: &DocKey, mut doc: Value, statuses: &[Value]) -> Value {
    let found = statuses.iter().find(|s| {
        let (kind, group) = (s["kind"].as_str(), s["group"].as_str());
        let qualified = format!("{}.{}", kind.unwrap_or(""), group.unwrap_or(""));
        (kind == Some(key.kind) || qualified == key.kind)
            && s["namespace"] == key.namespace.as_str()
            && s["name"] == key.name.as_str()
    });
    if let (Some(s), Some(obj)) = (found, doc.as_object_mut()) {
        let mut status = serde_json::Map::new();
        for field in ["parents", "conditions", "targetRef"] {
            if let Some(v) = s.get(field) {
                status.insert(field.to_string(), v.clone());
            }
        }
        obj.insert("status".to_string(), Value::Object(status));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::route::RouteKind;

    fn kinds(name: &str) -> Vec<&'static str> {
        resolve(name).unwrap().iter().map(|k| k.key).collect()
    }

    #[test]
    fn kind_names_are_case_insensitive_singular_plural_or_short() {
        assert_eq!(kinds("svc"), ["Service"]);
        assert_eq!(kinds("Services"), ["Service"]);
        assert_eq!(kinds("SERVER"), ["Server"]);
        assert_eq!(kinds("authorizationpolicies"), ["AuthorizationPolicy"]);
        assert_eq!(kinds("externalworkload"), ["ExternalWorkload"]);
        assert_eq!(kinds("ns"), ["Namespace"]);
        assert_eq!(
            kinds("httproutes"),
            [
                "HTTPRoute.gateway.networking.k8s.io",
                "HTTPRoute.policy.linkerd.io"
            ]
        );
        assert_eq!(
            kinds("HTTPRoute.policy.linkerd.io"),
            ["HTTPRoute.policy.linkerd.io"]
        );
        assert_eq!(
            kinds("httproutes.gateway.networking.k8s.io"),
            ["HTTPRoute.gateway.networking.k8s.io"]
        );
        let err = resolve("deployment").unwrap_err();
        assert!(
            err.contains("unknown kind \"deployment\"") && err.contains("httproute"),
            "{err}"
        );
        assert!(resolve("server.gateway.networking.k8s.io").is_err());
    }

    #[test]
    fn every_kind_of_the_store_has_names() {
        let routes = [
            RouteKind::GatewayHttp,
            RouteKind::LinkerdHttp,
            RouteKind::Grpc,
            RouteKind::Tls,
            RouteKind::Tcp,
        ];
        for kind in routes.map(RouteKind::qualified) {
            assert!(KINDS.iter().any(|k| k.key == kind), "{kind}");
        }
        let key = |kind| DocKey {
            kind,
            namespace: "default".into(),
            name: "web".into(),
        };
        assert_eq!(
            reference(&key("HTTPRoute.gateway.networking.k8s.io")),
            "httproute.gateway.networking.k8s.io/web"
        );
        assert_eq!(reference(&key("Service")), "service/web");
        assert_eq!(reference(&key("Server")), "server.policy.linkerd.io/web");
        for kind in [LINK_KIND, SECRET_KIND] {
            assert!(KINDS.iter().any(|k| k.key == kind), "{kind}");
        }
        assert_eq!(reference(&key("Link")), "link.multicluster.linkerd.io/web");
        assert_eq!(reference(&key("Secret")), "secret/web");
    }
}
