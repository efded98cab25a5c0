//! A store's documents: a file parsed into documents that are each valid or not (with their
//! identity, kind/namespace/name, whenever it can be read), and the rule that decides which
//! version of each document is in force ([`in_force`]).
//!
//! Validation is per document: a valid document applies; an invalid one keeps its last good
//! version (or nothing, if it never had one); a document whose identity cannot be read (invalid
//! YAML, an unknown kind, a bad name) keeps every previously applied document of its file that
//! the file no longer defines validly, since it may be any of them being edited. Two documents
//! with the same identity are both reported and the identity keeps its previous version; so
//! does a Service whose new version takes a clusterIP another Service holds. Unrelated files
//! never hold each other back.

use crate::resource::authz;
use crate::resource::egress::EGRESS_NETWORK_KIND;
use crate::resource::kinds;
use crate::resource::multicluster::{LINK_KIND, SECRET_KIND};
use crate::resource::ratelimit::RATE_LIMIT_KIND;
use crate::resource::route::{RouteKind, FAULT_INJECTION_KIND};
use crate::resource::{validate_document, Ctx, Defaults, Resource, State};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// A document together with where it came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub index: usize,
    pub resource: Resource,
    /// The document as written (what `GET /v1/resources` answers with).
    pub source: std::sync::Arc<Value>,
}

impl Located {
    pub fn key(&self) -> DocKey {
        self.resource.key()
    }

    /// `FILE: document I`, the prefix of this document's errors.
    pub fn place(&self) -> String {
        format!("{}: document {}", self.file, self.index)
    }
}

/// What identifies a document across versions of the store: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DocKey {
    /// `Service`, `ExternalWorkload`, `FaultInjection`, or a route kind qualified by its group
    /// (`HTTPRoute.gateway.networking.k8s.io`: two API groups define an `HTTPRoute`).
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for DocKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl Resource {
    pub fn key(&self) -> DocKey {
        let (kind, namespace, name) = match self {
            Resource::Service(s) => ("Service", &s.namespace, &s.name),
            Resource::Workload(w) => ("ExternalWorkload", &w.namespace, &w.name),
            Resource::Route(r) => (r.kind.qualified(), &r.namespace, &r.name),
            Resource::Fault(f) => (FAULT_INJECTION_KIND, &f.namespace, &f.name),
            Resource::Server(x) => (authz::SERVER_KIND, &x.namespace, &x.name),
            Resource::AuthorizationPolicy(x) => {
                (authz::AUTHORIZATION_POLICY_KIND, &x.namespace, &x.name)
            }
            Resource::MeshTls(x) => (authz::MESH_TLS_KIND, &x.namespace, &x.name),
            Resource::NetworkAuthentication(x) => (authz::NETWORK_KIND, &x.namespace, &x.name),
            // Cluster-scoped: no namespace.
            Resource::Namespace(x) => (authz::NAMESPACE_KIND, &String::new(), &x.name),
            Resource::RateLimit(x) => (RATE_LIMIT_KIND, &x.namespace, &x.name),
            Resource::EgressNetwork(x) => (EGRESS_NETWORK_KIND, &x.namespace, &x.name),
            Resource::Link(x) => (LINK_KIND, &x.namespace, &x.name),
            Resource::Secret(x) => (SECRET_KIND, &x.namespace, &x.name),
        };
        DocKey {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
        }
    }
}

/// An invalid document of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadDocument {
    pub index: usize,
    /// Its identity, when kind, namespace and name are themselves valid; `None` when they are
    /// not, or when the YAML could not be parsed (from this document on).
    pub key: Option<DocKey>,
    /// Every error of the document, `FILE: document I: FIELD: message`.
    pub errors: Vec<String>,
}

/// One file's documents, each valid or not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedFile {
    pub docs: Vec<Located>,
    pub bad: Vec<BadDocument>,
}

impl ParsedFile {
    pub fn errors(&self) -> impl Iterator<Item = &String> {
        self.bad.iter().flat_map(|b| b.errors.iter())
    }
}

/// Parses every `---`-separated document of one file. Empty documents are skipped.
/// Returns the valid documents and the errors of the invalid ones.
pub fn parse_yaml_file(file: &str, text: &str, defaults: &Defaults) -> (Vec<Located>, Vec<String>) {
    let parsed = parse_yaml_documents(file, text, defaults);
    let errors = parsed.errors().cloned().collect();
    (parsed.docs, errors)
}

/// Parses every `---`-separated document of one file, keeping each invalid document's identity
/// when it has one, so the store can keep that document's last good version in force.
pub fn parse_yaml_documents(file: &str, text: &str, defaults: &Defaults) -> ParsedFile {
    use serde::Deserialize;
    let mut out = ParsedFile::default();
    for (index, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                out.bad.push(BadDocument {
                    index,
                    key: None,
                    errors: vec![format!("{file}: document {index}: invalid YAML: {e}")],
                });
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let mut ctx = Ctx::new(format!("{file}: document {index}"));
        match validate_document(&value, defaults, &mut ctx) {
            Some(resource) if ctx.errors.is_empty() => out.docs.push(Located {
                file: file.to_string(),
                index,
                resource,
                source: std::sync::Arc::new(value),
            }),
            _ => out.bad.push(BadDocument {
                index,
                key: identity(&value),
                errors: ctx.errors,
            }),
        }
    }
    out
}

/// The identity of a document that may be invalid elsewhere: a known kind and a valid
/// name and namespace (absent = `default`), or `None`.
pub(crate) fn identity(v: &Value) -> Option<DocKey> {
    let kind = match v.get("kind")?.as_str()? {
        // Two groups define an HTTPRoute: the apiVersion says which.
        k if RouteKind::is_route_kind(k) => RouteKind::of(k, v.get("apiVersion")?.as_str()?)?
            .ok()?
            .qualified(),
        k => {
            kinds::KINDS
                .iter()
                .find(|r| r.is_document() && r.kind == k)?
                .key
        }
    };
    let meta = v.get("metadata")?;
    let name = meta.get("name")?.as_str()?;
    let namespace = match meta.get("namespace") {
        _ if kind == authz::NAMESPACE_KIND => "",
        None | Some(Value::Null) => "default",
        Some(ns) => ns.as_str()?,
    };
    (crate::resource::dns_label(name).is_ok()
        && (namespace.is_empty() || crate::resource::dns_label(namespace).is_ok()))
    .then(|| DocKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// One definition of an identity: (file position, document index, the valid document or the
/// place of an invalid one).
type Definition<'a> = (usize, usize, Result<&'a Located, String>);

/// The documents in force, by identity.
pub type InForce = BTreeMap<DocKey, Located>;

/// Decides which version of each document is in force, from every file of the store (in path
/// order) and what was in force before. Returns the documents now in force and every error of
/// this version of the store: the invalid documents', then the conflicts between documents.
pub fn in_force(files: &[(&str, &ParsedFile)], previous: &InForce) -> (InForce, Vec<String>) {
    let mut errors: Vec<String> = files
        .iter()
        .flat_map(|(_, f)| f.errors().cloned())
        .collect();
    // Every definition of each identity, in store order: the valid document, or the place of
    // an invalid one.
    let mut defs: BTreeMap<DocKey, Vec<Definition>> = BTreeMap::new();
    for (pos, (file, parsed)) in files.iter().enumerate() {
        for doc in &parsed.docs {
            let def = (pos, doc.index, Ok(doc));
            defs.entry(doc.key()).or_default().push(def);
        }
        for bad in &parsed.bad {
            if let Some(key) = &bad.key {
                let def = (
                    pos,
                    bad.index,
                    Err(format!("{file}: document {}", bad.index)),
                );
                defs.entry(key.clone()).or_default().push(def);
            }
        }
    }
    let mut out = InForce::new();
    let keep_previous = |key: &DocKey, out: &mut InForce| {
        if let Some(prev) = previous.get(key) {
            out.insert(key.clone(), prev.clone());
        }
    };
    for (key, defs) in &mut defs {
        defs.sort_by_key(|(pos, index, _)| (*pos, *index));
        match defs.as_slice() {
            [(_, _, Ok(doc))] => {
                out.insert(key.clone(), (*doc).clone());
            }
            [(_, _, Err(_))] => keep_previous(key, &mut out),
            many => {
                let places: Vec<String> = many
                    .iter()
                    .map(|(_, _, d)| match d {
                        Ok(doc) => doc.place(),
                        Err(place) => place.clone(),
                    })
                    .collect();
                let first = &places[0];
                errors.push(format!(
                    "{first}: metadata.name: duplicate {key} (also defined in {})",
                    places[1..].join(", ")
                ));
                for place in &places[1..] {
                    errors.push(format!(
                        "{place}: metadata.name: duplicate {key} (first defined in {first})"
                    ));
                }
                keep_previous(key, &mut out);
            }
        }
    }
    // A document whose identity cannot be read may be any of its file's previous documents.
    for (file, parsed) in files {
        if parsed.bad.iter().any(|b| b.key.is_none()) {
            for (key, prev) in previous {
                if prev.file == *file && !defs.contains_key(key) {
                    out.insert(key.clone(), prev.clone());
                }
            }
        }
    }
    unique_cluster_ips(&mut out, previous, &mut errors);
    (out, errors)
}

/// Gives each clusterIP to one Service. Services unchanged since the previous state keep
/// theirs (they did not conflict then); a new or changed version that takes a held IP is
/// reported and its Service keeps its previous version if that one's IP is free, else nothing.
fn unique_cluster_ips(out: &mut InForce, previous: &InForce, errors: &mut Vec<String>) {
    let ip_of = |doc: &Located| match &doc.resource {
        Resource::Service(s) => s.cluster_ip,
        _ => None,
    };
    let mut holders: BTreeMap<IpAddr, DocKey> = BTreeMap::new();
    let mut changed = Vec::new();
    for (key, doc) in out.iter() {
        let Some(ip) = ip_of(doc) else { continue };
        if previous.get(key) == Some(doc) {
            holders.insert(ip, key.clone());
        } else {
            changed.push((doc.file.clone(), doc.index, key.clone(), ip));
        }
    }
    changed.sort();
    for (file, index, key, ip) in changed {
        let Some(holder) = holders.get(&ip) else {
            holders.insert(ip, key);
            continue;
        };
        errors.push(format!(
            "{file}: document {index}: spec.clusterIP: {ip} is already used by Service {}/{}",
            holder.namespace, holder.name
        ));
        match previous.get(&key) {
            Some(prev) if ip_of(prev).is_none_or(|ip| !holders.contains_key(&ip)) => {
                if let Some(ip) = ip_of(prev) {
                    holders.insert(ip, key.clone());
                }
                out.insert(key, prev.clone());
            }
            _ => {
                out.remove(&key);
            }
        }
    }
}

/// The state the index serves, from the documents in force.
pub fn state(in_force: &InForce) -> State {
    state_seen(in_force, &HashMap::new())
}

/// [`state`], with the Unix time the store first saw each document: a route, Server or rate-limit
/// policy without a `metadata.creationTimestamp` takes it as its age (the precedence tie-break).
pub fn state_seen(in_force: &InForce, first_seen: &HashMap<DocKey, i64>) -> State {
    let mut state = State::default();
    for (key, doc) in in_force {
        let id = (key.namespace.clone(), key.name.clone());
        match &doc.resource {
            Resource::Service(s) => {
                state.services.insert(id, s.clone());
            }
            Resource::Workload(w) => {
                state.workloads.insert(id, w.clone());
            }
            Resource::Route(r) => {
                let mut r = r.clone();
                r.created = r.created.or_else(|| first_seen.get(key).copied());
                state.routes.insert(r.key(), r);
            }
            Resource::Fault(f) => {
                state.faults.insert(id, f.clone());
            }
            Resource::Server(x) => {
                let mut x = x.clone();
                x.created = x.created.or_else(|| first_seen.get(key).copied());
                state.servers.insert(id, x);
            }
            Resource::AuthorizationPolicy(x) => {
                state.authorization_policies.insert(id, x.clone());
            }
            Resource::MeshTls(x) => {
                state.mesh_tls_authentications.insert(id, x.clone());
            }
            Resource::NetworkAuthentication(x) => {
                state.network_authentications.insert(id, x.clone());
            }
            Resource::Namespace(x) => {
                state.namespaces.insert(x.name.clone(), x.clone());
            }
            Resource::RateLimit(x) => {
                let mut x = x.clone();
                x.created = x.created.or_else(|| first_seen.get(key).copied());
                state.rate_limit_policies.insert(id, x);
            }
            Resource::EgressNetwork(x) => {
                let mut x = x.clone();
                x.created = x.created.or_else(|| first_seen.get(key).copied());
                state.egress_networks.insert(id, x);
            }
            Resource::Link(x) => {
                state.links.insert(id, x.clone());
            }
            Resource::Secret(x) => {
                state.secrets.insert(id, x.clone());
            }
        }
    }
    state
}

#[cfg(test)]
#[path = "documents_tests.rs"]
mod tests;

/// The state of one YAML file whose every document is valid (tests build states from text).
#[cfg(test)]
pub(crate) fn state_of(text: &str) -> State {
    let parsed = parse_yaml_documents("t.yaml", text, &Defaults::default());
    assert!(parsed.bad.is_empty(), "{:?}", parsed.bad);
    let (docs, errors) = in_force(&[("t.yaml", &parsed)], &InForce::new());
    assert!(errors.is_empty(), "{errors:?}");
    state(&docs)
}

/// The one resource of a YAML text, or its errors (tests of the validators).
#[cfg(test)]
pub(crate) fn parse_one(text: &str) -> Result<Resource, Vec<String>> {
    let (mut docs, errors) = parse_yaml_file("a.yaml", text, &Defaults::default());
    if errors.is_empty() {
        assert_eq!(docs.len(), 1);
        Ok(docs.remove(0).resource)
    } else {
        Err(errors)
    }
}
