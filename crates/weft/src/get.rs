//! `weft get services`: what the control plane serves, as a table (or its JSON), so a user sees
//! the cluster IPs it allocated without reading its files.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};

use crate::demo::http;

/// `weft get`: show resources as the control plane serves them.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// What to show.
    #[arg(value_enum)]
    pub what: What,
    #[command(flatten)]
    pub api: ApiAddr,
    /// Print the control plane's JSON documents instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    /// Services with their cluster IPs (set by the user or allocated) and ports.
    Services,
}

pub async fn run(args: GetArgs) -> anyhow::Result<()> {
    let What::Services = args.what;
    let docs = match args.api.json("/v1/services").await? {
        serde_json::Value::Array(docs) => docs,
        other => bail!("GET /v1/services: not a JSON list: {other}"),
    };
    if args.json {
        println!("{}", serde_json::Value::Array(docs));
    } else {
        print!("{}", table(&docs));
    }
    Ok(())
}

/// Where the operator commands (`get`, `authz`, `stat`, `edges`, `routes`) find the control plane's HTTP API:
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

impl ApiAddr {
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
