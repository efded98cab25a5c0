//! `weft authz NAMESPACE/WORKLOAD`: the inbound policy in force on each port of a workload —
//! what decided the port (a Server or the default policy), its protocol, its routes, and per
//! route the authorizations with the networks and clients they admit — so a user sees why a
//! call is denied without reading YAML. Read from the control plane's `GET /v1/authz/NS/NAME`.

use serde_json::Value;

/// `weft authz`: show the effective inbound policy of a workload, per port.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft authz default/books-v1\n  \
    weft authz shop/web --api-addr 10.0.0.5:8085 -o json\n\n\
    ROUTE `*` means every request (and, for opaque ports, every connection); a port whose \
    rows say `(nobody)` denies everything. See docs/policy.md.")]
pub struct AuthzArgs {
    /// The workload, `NAMESPACE/NAME` (`NAME` alone: namespace `default`).
    #[arg(value_name = "NAMESPACE/WORKLOAD")]
    pub workload: String,
    #[command(flatten)]
    pub api: crate::get::ApiAddr,
    /// Output: a table, or the control plane's JSON.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

pub async fn run(args: AuthzArgs) -> anyhow::Result<()> {
    let (ns, name) = args
        .workload
        .split_once('/')
        .unwrap_or(("default", &args.workload));
    let path = format!("/v1/authz/{ns}/{name}");
    let doc = args.api.json(&path).await?;
    match args.output {
        Output::Json => println!("{doc}"),
        Output::Table => print!("{}", table(&doc)),
    }
    Ok(())
}

/// `PORT SERVER PROTOCOL ROUTE AUTHORIZATION NETWORKS CLIENTS`, one row per authorization.
fn table(doc: &Value) -> String {
    let header = [
        "PORT",
        "SERVER",
        "PROTOCOL",
        "ROUTE",
        "AUTHORIZATION",
        "NETWORKS",
        "CLIENTS",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    for port in list(&doc["ports"]) {
        let port_cell = match port["name"].as_str() {
            Some(n) => format!("{}/{n}", port["port"]),
            None => port["port"].to_string(),
        };
        let server = format!(
            "{} {}",
            text(&port["server"]["kind"]),
            text(&port["server"]["name"])
        );
        let protocol = text(&port["protocol"]);
        // Without routes the server-level authorizations decide everything on the port.
        let routes: Vec<(String, Vec<Value>)> = match list(&port["routes"]) {
            r if r.is_empty() => vec![("*".to_string(), list(&port["authorizations"]))],
            r => r
                .iter()
                .map(|r| {
                    let name = format!("{} {}", text(&r["kind"]), text(&r["name"]));
                    (name, list(&r["authorizations"]))
                })
                .collect(),
        };
        for (route, authzs) in routes {
            let row = |authz: String, networks: String, clients: String| {
                vec![
                    port_cell.clone(),
                    server.clone(),
                    protocol.clone(),
                    route.clone(),
                    authz,
                    networks,
                    clients,
                ]
            };
            if authzs.is_empty() {
                rows.push(row("(nobody)".into(), "-".into(), "-".into()));
            }
            for a in authzs {
                let networks: Vec<String> = list(&a["networks"]).iter().map(text).collect();
                let clients = match &a["clients"] {
                    Value::String(s) if s == "any" => "any (plaintext too)".to_string(),
                    c => {
                        let ids: Vec<String> = list(&c["meshTLS"]).iter().map(text).collect();
                        format!("mTLS: {}", ids.join(", "))
                    }
                };
                let authz = format!("{} {}", text(&a["kind"]), text(&a["name"]));
                rows.push(row(authz, networks.join(", "), clients));
            }
        }
    }
    let mut out = crate::show::columns(&rows);
    for port in list(&doc["ports"]) {
        if let Some(line) = rate_limit_line(&port) {
            out.push_str(&line);
        }
    }
    out
}

/// `rate limit on 8080: HTTPLocalRateLimitPolicy NAME: total 100/s, per identity 20/s, ...`.
fn rate_limit_line(port: &Value) -> Option<String> {
    let rl = port.get("rateLimit").filter(|v| v.is_object())?;
    let mut parts = Vec::new();
    if let Some(n) = rl["total"].as_u64() {
        parts.push(format!("total {n}/s"));
    }
    if let Some(n) = rl["identity"].as_u64() {
        parts.push(format!("per identity {n}/s"));
    }
    for o in rl["overrides"].as_array().into_iter().flatten() {
        let clients: Vec<&str> = o["clients"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(format!(
            "{}/s for {}",
            o["requestsPerSecond"],
            clients.join(", ")
        ));
    }
    if parts.is_empty() {
        parts.push("no limit set".into());
    }
    Some(format!(
        "rate limit on {}: HTTPLocalRateLimitPolicy {}: {}\n",
        port["port"],
        rl["name"].as_str().unwrap_or(""),
        parts.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn one_row_per_route_and_authorization() {
        let doc = json!({"namespace": "default", "workload": "books", "ports": [
            {"port": 8080, "name": "http", "protocol": "HTTP/1",
             "server": {"kind": "Server", "name": "books-http"},
             "authorizations": [],
             "routes": [
                {"kind": "HTTPRoute", "name": "healthz", "authorizations": [
                    {"kind": "AuthorizationPolicy", "name": "open", "networks": ["0.0.0.0/0"], "clients": "any"}]},
                {"kind": "HTTPRoute", "name": "rest", "authorizations": []}]},
            {"port": 9990, "name": null, "protocol": "unknown",
             "server": {"kind": "default", "name": "all-authenticated"},
             "authorizations": [{"kind": "default", "name": "all-authenticated",
                "networks": ["0.0.0.0/0", "::/0"], "clients": {"meshTLS": ["*"]}}],
             "routes": [],
             "rateLimit": {"name": "books-rl", "total": 100, "identity": null,
                "overrides": [{"requestsPerSecond": 50, "clients": ["web.default.serviceaccount.identity.weft.cluster.local"]}]}}]});
        let t = super::table(&doc);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert_eq!(
            lines[4],
            "rate limit on 9990: HTTPLocalRateLimitPolicy books-rl: total 100/s, 50/s for \
             web.default.serviceaccount.identity.weft.cluster.local"
        );
        assert!(lines[0].starts_with("PORT"), "{t}");
        assert!(
            lines[1].contains("8080/http")
                && lines[1].contains("HTTPRoute healthz")
                && lines[1].contains("AuthorizationPolicy open")
                && lines[1].contains("any (plaintext too)"),
            "{t}"
        );
        assert!(
            lines[2].contains("HTTPRoute rest") && lines[2].contains("(nobody)"),
            "{t}"
        );
        assert!(
            lines[3].contains("9990")
                && lines[3].contains("default all-authenticated")
                && lines[3].contains(" * ")
                && lines[3].contains("mTLS: *"),
            "{t}"
        );
    }
}
