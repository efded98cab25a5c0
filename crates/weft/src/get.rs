//! `weft get KIND [NAME]`: the documents in force as the control plane holds them, from its
//! `GET /v1/resources/KIND[/NS[/NAME]]` (either store), as a table or as YAML/JSON the way
//! they were applied, with the status of routes and policies. `weft get services` keeps its
//! table of cluster IPs (including allocated ones), from `GET /v1/services`.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::demo::http;
use crate::show::{self, Output};

/// `weft get`: show resources as the control plane serves them.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft get services\n  \
    weft get httproutes -A\n  \
    weft get httproute web -n shop -o yaml\n  \
    weft get server.policy.linkerd.io web-http -o json\n  \
    weft get externalworkloads\n\n\
    KIND is any kind the store accepts, in any case, singular, plural or short (svc, srv, ns, \
    authzpolicy, meshtlsauthn, netauthn); KIND.GROUP picks one group (httproute names both \
    HTTPRoute groups). -o yaml prints each document as applied plus the status of routes and \
    policies, a list as kubectl's `kind: List`. Registered workloads are ExternalWorkloads \
    too. See docs/cli.md.")]
pub struct GetArgs {
    /// What to show: a kind (`services`, `httproutes`, `servers`, ...).
    #[arg(value_name = "KIND")]
    pub kind: String,
    /// Only this document.
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
    /// The namespace to show.
    #[arg(short = 'n', long, default_value = "default", value_name = "NS")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long, conflicts_with = "name")]
    pub all_namespaces: bool,
    /// Output: a table (`wide` is the same table), or the documents as JSON or YAML.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// Same as `-o json` (an older flag).
    #[arg(long, conflicts_with = "output")]
    pub json: bool,
    #[command(flatten)]
    pub api: ApiAddr,
}

/// The names of the `Service` kind (its table shows cluster IPs).
const SERVICE_NAMES: [&str; 3] = ["service", "services", "svc"];
/// The names of the one cluster-scoped kind (no namespace in its paths).
const NAMESPACE_NAMES: [&str; 3] = ["namespace", "namespaces", "ns"];

/// Whether `kind` (as the user wrote it) is one of `names`, with or without a group.
fn is_kind(kind: &str, names: &[&str]) -> bool {
    let kind = kind.to_ascii_lowercase();
    let short = kind.split('.').next().unwrap_or_default();
    names.contains(&short)
}

/// `/v1/resources/KIND[/NS][/NAME]`: without a namespace for `-A` and cluster-scoped kinds.
pub fn resource_path(kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let mut path = format!("/v1/resources/{kind}");
    if !is_kind(kind, &NAMESPACE_NAMES) {
        if let Some(ns) = namespace {
            path = format!("{path}/{ns}");
        }
    }
    if let Some(name) = name {
        path = format!("{path}/{name}");
    }
    path
}

pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let output = if args.json { Output::Json } else { args.output };
    let namespace = (!args.all_namespaces).then_some(args.namespace.as_str());
    if is_kind(&args.kind, &SERVICE_NAMES) && matches!(output, Output::Table | Output::Wide) {
        return services(&args, namespace).await;
    }
    let path = resource_path(&args.kind, namespace, args.name.as_deref());
    let (status, answer) = args
        .api
        .call(hyper::Method::GET, &path, String::new())
        .await?;
    if !status.is_success() {
        bail!("{}", api_error(&answer, status));
    }
    let docs = match answer {
        Value::Array(docs) => docs,
        doc if args.name.is_some() => vec![doc],
        other => bail!("GET {path}: not a JSON list: {other}"),
    };
    match (output, args.name.is_some()) {
        (Output::Json, true) => println!("{}", docs[0]),
        (Output::Yaml, true) => print!("{}", yaml_serde::to_string(&docs[0])?),
        (Output::Json, false) => println!("{}", list(docs)),
        (Output::Yaml, false) => print!("{}", yaml_serde::to_string(&list(docs))?),
        (Output::Table | Output::Wide, _) if docs.is_empty() => {
            eprintln!("{}", nothing_found(namespace));
        }
        (Output::Table | Output::Wide, _) => {
            print!("{}", documents_table(&docs, namespace.is_none()))
        }
    }
    Ok(())
}

/// kubectl's wording when a list is empty.
fn nothing_found(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace."),
        None => "No resources found".to_string(),
    }
}

/// A list of documents as kubectl prints one.
fn list(items: Vec<Value>) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// The API's `{"error": ...}` message, else the status.
pub fn api_error(answer: &Value, status: hyper::StatusCode) -> String {
    match answer["error"].as_str() {
        Some(e) => format!("{e} ({status})"),
        None => format!("{status}: {answer}"),
    }
}

/// `[NAMESPACE] NAME KIND ACCEPTED`: ACCEPTED is the `Accepted` condition of a route (every
/// parent) or policy, `-` for kinds without a status.
fn documents_table(docs: &[Value], with_namespace: bool) -> String {
    let mut head = vec!["NAME", "KIND", "ACCEPTED"];
    if with_namespace {
        head.insert(0, "NAMESPACE");
    }
    let mut rows = vec![head.into_iter().map(String::from).collect::<Vec<_>>()];
    for doc in docs {
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        let conditions: Vec<&Value> = match doc["status"]["parents"].as_array() {
            Some(parents) => parents.iter().map(|p| &p["conditions"]).collect(),
            None => vec![&doc["status"]["conditions"]],
        };
        let accepted: Vec<String> = conditions
            .iter()
            .filter_map(|c| c.as_array())
            .flatten()
            .filter(|c| c["type"] == "Accepted")
            .map(|c| text(&c["status"]))
            .collect();
        let mut row = vec![
            text(&doc["metadata"]["name"]),
            text(&doc["kind"]),
            if accepted.is_empty() {
                "-".to_string()
            } else {
                accepted.join(",")
            },
        ];
        if with_namespace {
            row.insert(0, text(&doc["metadata"]["namespace"]));
        }
        rows.push(row);
    }
    show::columns(&rows)
}

/// `weft get services`: the Services with the cluster IPs the index serves.
async fn services(args: &GetArgs, namespace: Option<&str>) -> anyhow::Result<()> {
    let docs = match args.api.json("/v1/services").await? {
        Value::Array(docs) => docs,
        other => bail!("GET /v1/services: not a JSON list: {other}"),
    };
    let docs: Vec<Value> = docs
        .into_iter()
        .filter(|d| namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns))
        .filter(|d| {
            args.name
                .as_deref()
                .is_none_or(|n| d["metadata"]["name"] == n)
        })
        .collect();
    match (&args.name, docs.is_empty()) {
        (Some(name), true) => bail!("service {}/{name} not found", args.namespace),
        (None, true) => eprintln!("{}", nothing_found(namespace)),
        _ => print!("{}", table(&docs)),
    }
    Ok(())
}

/// Where the operator commands (`get`, `apply`, `delete`, `authz`, `stat`, `edges`, `routes`) find the control plane's HTTP API:
/// `--api-addr`, else `$WEFT_API_ADDR`, else the control plane's default.
#[derive(Debug, clap::Args)]
pub struct ApiAddr {
    /// The control plane's HTTP API (`--control-api` is an older name of this flag).
    #[arg(
        long = "api-addr",
        alias = "control-api",
        env = "WEFT_API_ADDR",
        default_value = "127.0.0.1:8085",
        value_name = "ADDR"
    )]
    pub addr: SocketAddr,
}

/// How long `ApiAddr::call` waits: each applied document may wait for the index.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl ApiAddr {
    /// `METHOD path` of the API with `body` (YAML for `/v1/resources`): the status and the JSON
    /// answer. Applies wait for the index, so the answer may take longer than a plain `GET`.
    pub async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: String,
    ) -> anyhow::Result<(hyper::StatusCode, Value)> {
        let addr = self.addr;
        let request = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/yaml")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
        let response = http::send_within(addr, request, CALL_TIMEOUT)
            .await
            .with_context(|| format!("asking the control plane API at {addr}"))?;
        let answer = serde_json::from_slice(response.body())
            .with_context(|| format!("{method} {path}: not JSON"))?;
        Ok((response.status(), answer))
    }

    /// `GET path` of the API, as JSON; a non-2xx answer is an error carrying the API's message.
    pub async fn json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let addr = self.addr;
        let response = http::get(addr, path)
            .await
            .with_context(|| format!("asking the control plane API at {addr}"))?;
        if !response.status().is_success() {
            bail!(
                "GET {path}: {} {}",
                response.status(),
                String::from_utf8_lossy(response.body())
            );
        }
        serde_json::from_slice(response.body()).with_context(|| format!("GET {path}: not JSON"))
    }
}

/// `NAMESPACE NAME CLUSTER-IP PORTS`, columns padded to their widest cell.
fn table(docs: &[serde_json::Value]) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_string(),
        "NAME".to_string(),
        "CLUSTER-IP".to_string(),
        "PORTS".to_string(),
    ]];
    for doc in docs {
        let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
        let ports: Vec<String> = doc["spec"]["ports"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|p| match p["name"].as_str() {
                Some(name) => format!("{}/{name}", p["port"]),
                None => p["port"].to_string(),
            })
            .collect();
        let ip = doc["spec"]["clusterIP"].as_str().unwrap_or("<none>");
        rows.push([
            text(&doc["metadata"]["namespace"]),
            text(&doc["metadata"]["name"]),
            ip.to_string(),
            ports.join(","),
        ]);
    }
    crate::show::columns(&rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_name_the_namespace_unless_all_or_cluster_scoped() {
        use super::resource_path;
        assert_eq!(
            resource_path("svc", Some("shop"), Some("web")),
            "/v1/resources/svc/shop/web"
        );
        assert_eq!(
            resource_path("httproutes", None, None),
            "/v1/resources/httproutes"
        );
        assert_eq!(
            resource_path("NS", Some("default"), Some("shop")),
            "/v1/resources/NS/shop"
        );
    }

    #[test]
    fn documents_print_with_their_accepted_condition() {
        let docs = vec![
            serde_json::json!({"kind": "HTTPRoute", "metadata": {"name": "web", "namespace": "a"},
                "status": {"parents": [
                    {"conditions": [{"type": "Accepted", "status": "True"}]},
                    {"conditions": [{"type": "Accepted", "status": "False"}]}]}}),
            serde_json::json!({"kind": "Service", "metadata": {"name": "db", "namespace": "b"}}),
        ];
        assert_eq!(
            super::documents_table(&docs, true),
            "NAMESPACE   NAME   KIND        ACCEPTED\n\
             a           web    HTTPRoute   True,False\n\
             b           db     Service     -\n"
        );
    }

    #[test]
    fn services_print_as_a_table() {
        let docs = vec![
            serde_json::json!({"metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "198.19.200.7", "ports": [{"name": "http", "port": 8080}]}}),
            serde_json::json!({"metadata": {"name": "db", "namespace": "prod"},
                "spec": {"ports": [{"port": 5432}, {"port": 5433}]}}),
        ];
        assert_eq!(
            super::table(&docs),
            "NAMESPACE   NAME   CLUSTER-IP     PORTS\n\
             default     web    198.19.200.7   8080/http\n\
             prod        db     <none>         5432,5433\n"
        );
    }
}
