//! `weft multicluster`: link this cluster's control plane to another's, as Linkerd's
//! `linkerd multicluster` does (`docs/multicluster.md`).
//!
//! - `link --name west --api-addr WEST_API`: asks west's control plane for a link credential
//!   (`POST /v1/multicluster/credentials`: a token that only reads west's exported services, its
//!   gateway and its trust anchors), checks that both clusters share a trust anchor, and applies
//!   here a `Secret` of type `mirror.linkerd.io/remote-kubeconfig` holding it and a `Link` naming
//!   west's gateway (both built by `weft_control::resource::multicluster::link_documents`) (`--print`: prints them instead, for `weft apply -f -` or `kubectl apply -f -`).
//! - `unlink --name west`: deletes both; `--revoke` also revokes the credential at west.
//! - `check`: each link connected, its gateway alive, the trust anchor shared (✔/×, exit 1).
//! - `gateways`: each linked gateway's liveness, probe latency and mirrored services.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use weft_control::api::check::{Check, Status};
use weft_control::ca;
use weft_control::resource::multicluster::{link_documents, DEFAULT_LINK_NAMESPACE};
use weft_control::resource::{validate_one, Defaults, Resource};

use crate::demo::http as client;
use crate::get::{api_error, resource_path, ApiAddr};
use crate::show::{self, Output};

const DOCS: &str = "docs/multicluster.md";

/// `weft multicluster`.
#[derive(Debug, clap::Args)]
pub struct MulticlusterArgs {
    #[command(subcommand)]
    pub command: McCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum McCommand {
    /// Link this cluster to another: mirror the other's exported services here.
    Link(LinkArgs),
    /// Remove a link and its mirrored services (and with --revoke, the credential it used).
    Unlink(UnlinkArgs),
    /// Check every link: connected, gateway alive, a trust anchor shared with the other cluster.
    Check(McCheckArgs),
    /// Show each linked cluster's gateway: alive, probe latency, mirrored services.
    Gateways(GatewaysArgs),
    /// Print this cluster's multicluster gateway for Kubernetes (kubectl apply -f -).
    Install(McInstallArgs),
    /// Print the gateway's objects for kubectl delete -f -.
    Uninstall(McUninstallArgs),
}

/// `weft multicluster install`: Linkerd's flags where they apply.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    kubectl get cm -n weft weft-identity-trust-roots -o jsonpath='{.data.ca-bundle\\.crt}' > anchors.pem\n  \
    weft multicluster install --trust-anchors anchors.pem | kubectl apply -f -\n\n\
    Prints the gateway (ServiceAccount, Deployment with its proxy injected in gateway mode, \
    Service with ports mc-gateway and mc-probe) in weft-multicluster, which `weft install` \
    created. Other clusters link to this one with `weft multicluster link`. See \
    docs/multicluster.md.")]
pub struct McInstallArgs {
    /// Install the gateway (Linkerd's --gateway; false prints only a namespace of its own).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub gateway: bool,
    /// The gateway Service's port for linked clusters' traffic (`mc-gateway`; the pod's is 4143).
    #[arg(long, default_value_t = weft_control::resource::multicluster::DEFAULT_GATEWAY_PORT, value_name = "PORT")]
    pub gateway_port: u16,
    /// The gateway Service's probe port (`mc-probe`, `GET /ready`; the pod's is 4191).
    #[arg(long, default_value_t = weft_control::resource::multicluster::DEFAULT_PROBE_PORT, value_name = "PORT")]
    pub gateway_probe_port: u16,
    /// The gateway Service's type.
    #[arg(long, default_value = "LoadBalancer", value_parser = ["LoadBalancer", "NodePort", "ClusterIP"])]
    pub gateway_service_type: String,
    /// The gateway's namespace. Sidecars trust forwarded identities from
    /// weft-gateway.weft-multicluster only: another namespace forwards the gateway's own.
    #[arg(long, default_value = DEFAULT_LINK_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// The mesh's trust anchors (PEM), given to the gateway's proxy inline.
    #[arg(long, value_name = "PEM")]
    pub trust_anchors: std::path::PathBuf,
    /// Registry of the proxy and init images (`REGISTRY/weft-proxy:VERSION`, `REGISTRY/weft`).
    #[arg(long, value_name = "REGISTRY", default_value = crate::install::DEFAULT_IMAGE_REGISTRY)]
    pub image_registry: String,
}

/// `weft multicluster uninstall`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  weft multicluster uninstall | kubectl delete -f -")]
pub struct McUninstallArgs {
    /// The gateway's namespace (as given to install).
    #[arg(long, default_value = DEFAULT_LINK_NAMESPACE, value_name = "NS")]
    pub namespace: String,
}

fn install(a: McInstallArgs) -> anyhow::Result<()> {
    use crate::install::multicluster::{objects, Options};
    if a.gateway_port == 0 || a.gateway_probe_port == 0 {
        bail!("--gateway-port and --gateway-probe-port must be 1-65535");
    }
    if let Err(e) = weft_control::resource::dns_label(&a.namespace) {
        bail!("--namespace {:?}: {e}", a.namespace);
    }
    let anchors = crate::inject::read_trust_anchors(&a.trust_anchors)?;
    let docs = objects(&Options {
        gateway: a.gateway,
        gateway_port: a.gateway_port,
        probe_port: a.gateway_probe_port,
        service_type: &a.gateway_service_type,
        namespace: &a.namespace,
        images: weft_control::inject::Images {
            registry: a.image_registry.trim_end_matches('/').to_string(),
            ..Default::default()
        },
        trust_anchors: &anchors,
    })?;
    crate::install::print(&docs)
}

fn uninstall(a: McUninstallArgs) -> anyhow::Result<()> {
    if let Err(e) = weft_control::resource::dns_label(&a.namespace) {
        bail!("--namespace {:?}: {e}", a.namespace);
    }
    crate::install::print(&crate::install::multicluster::uninstall_objects(
        &a.namespace,
    ))
}

/// This cluster's control plane API (the one the link is applied to).
#[derive(Debug, clap::Args)]
pub struct LocalApi {
    /// This cluster's control plane HTTP API.
    #[arg(
        long = "local-api-addr",
        env = "WEFT_API_ADDR",
        default_value = "127.0.0.1:8085",
        value_name = "ADDR"
    )]
    pub addr: SocketAddr,
}

impl LocalApi {
    pub(crate) fn api(&self) -> ApiAddr {
        ApiAddr { addr: self.addr }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    weft multicluster link --name west --api-addr 198.18.2.10:8085\n  \
    weft multicluster link --name west --api-addr 198.18.2.10:8085 --print > west-link.yaml\n\n\
    Run against this cluster (east): west's exported Services (label \
    mirror.linkerd.io/exported=true through west's gateway, =remote-discovery pod to pod, \
    mirror.linkerd.io/federated=member into <name>-federated) then appear here as <name>-west. \
    The two clusters must share a trust anchor (weft identity init --anchor-dir). See \
    docs/multicluster.md.")]
pub struct LinkArgs {
    /// The linked cluster's name here: the Link's name and the suffix of its mirrored services.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// The linked cluster's control plane HTTP API (west's), which issues the credential.
    #[arg(long = "api-addr", value_name = "ADDR")]
    pub remote_api: SocketAddr,
    #[command(flatten)]
    pub local: LocalApi,
    /// The name the credential has in the linked cluster (what `--revoke` revokes); default:
    /// `link-<this cluster's API address>`.
    #[arg(long, value_name = "NAME")]
    pub credential_name: Option<String>,
    /// Namespace of the Link and its credentials Secret.
    #[arg(long, default_value = DEFAULT_LINK_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// The linked cluster's gateway, `IP:PORT` (default: the one its control plane names).
    #[arg(long, value_name = "ADDR")]
    pub gateway_addr: Option<SocketAddr>,
    /// The gateway's identity (default: the one its control plane names).
    #[arg(long, value_name = "IDENTITY")]
    pub gateway_identity: Option<String>,
    /// How often this control plane probes the gateway.
    #[arg(long, default_value = "3s", value_name = "DURATION", value_parser = crate::demo::parse_duration)]
    pub probe_period: Duration,
    /// Print the Secret and the Link as YAML instead of applying them.
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, clap::Args)]
pub struct UnlinkArgs {
    /// The Link's name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub local: LocalApi,
    #[arg(long, default_value = DEFAULT_LINK_NAMESPACE, value_name = "NS")]
    pub namespace: String,
    /// Also revoke the credential at the linked cluster's control plane (it must answer).
    #[arg(long)]
    pub revoke: bool,
}

#[derive(Debug, clap::Args)]
pub struct McCheckArgs {
    #[command(flatten)]
    pub local: LocalApi,
}

#[derive(Debug, clap::Args)]
pub struct GatewaysArgs {
    #[command(flatten)]
    pub local: LocalApi,
    /// Output: a table, or the API's rows as JSON or YAML.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
}

pub async fn run(args: MulticlusterArgs) -> anyhow::Result<()> {
    match args.command {
        McCommand::Link(a) => link(a).await,
        McCommand::Unlink(a) => unlink(a).await,
        McCommand::Check(a) => check(a).await,
        McCommand::Gateways(a) => gateways(a).await,
        McCommand::Install(a) => install(a),
        McCommand::Uninstall(a) => uninstall(a),
    }
}

/// A name made of what Kubernetes names may hold.
fn dns_label(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_string()
}

async fn link(args: LinkArgs) -> anyhow::Result<()> {
    let yaml = link_yaml(&args).await?;
    if args.print {
        print!("{yaml}");
        return Ok(());
    }
    let (status, applied) = args
        .local
        .api()
        .call(hyper::Method::POST, "/v1/resources?file=link", yaml)
        .await?;
    if status == hyper::StatusCode::METHOD_NOT_ALLOWED {
        bail!(
            "{}",
            read_only_store(
                &applied,
                status,
                "weft multicluster link ... --print | kubectl apply -f -"
            )
        );
    }
    crate::resources::report(status, &applied)
}

/// Why this cluster refused the Link (`405`: its store is Kubernetes, read-only through Weft's
/// API), and what to run instead.
fn read_only_store(answer: &Value, status: hyper::StatusCode, instead: &str) -> String {
    format!(
        "{}; this cluster's store is Kubernetes: {instead} (a credential minted now is replaced \
         by the next)",
        api_error(answer, status)
    )
}

/// What `link` applies (`--print` prints): a credential minted by the linked cluster, checked
/// to share a trust anchor with this one, as the credentials Secret and the Link, in YAML.
/// `weft demo --multicluster` links its two clusters with it.
pub(crate) async fn link_yaml(args: &LinkArgs) -> anyhow::Result<String> {
    let remote = ApiAddr {
        addr: args.remote_api,
    };
    let credential = args
        .credential_name
        .clone()
        .unwrap_or_else(|| dns_label(&format!("link-{}", args.local.addr)));
    let (status, answer) = remote
        .call(
            hyper::Method::POST,
            "/v1/multicluster/credentials",
            json!({ "name": credential }).to_string(),
        )
        .await
        .context("asking the linked cluster for a credential")?;
    if !status.is_success() {
        bail!(
            "the linked cluster's control plane refused a credential: {}",
            api_error(&answer, status)
        );
    }
    let remote_anchors = answer["trustAnchorsPem"].as_str().unwrap_or_default();
    let local_anchors = trust_anchors(args.local.addr).await?;
    if !shares_an_anchor(&local_anchors, remote_anchors) {
        bail!(
            "this cluster and {} share no trust anchor, so their proxies could not verify each \
             other; make one cluster's CA with `weft identity init --dir DIR --anchor-dir \
             OTHER_DIR` (see {DOCS})",
            args.name
        );
    }
    let server = format!("http://{}", args.remote_api);
    let docs = link_documents(&args.name, &args.namespace, &server, &credential, &answer)
        .map_err(|e| anyhow::anyhow!("the linked cluster's answer: {e}"))?;
    let docs = with_overrides(docs, args)?;
    crate::install::to_yaml(&docs)
}

/// The Link and Secret with what the flags override: the gateway and the probe period. A link
/// with no gateway at all mirrors only remote-discovery and federated services (said on stderr).
fn with_overrides([mut link, secret]: [Value; 2], args: &LinkArgs) -> anyhow::Result<Vec<Value>> {
    let spec = &mut link["spec"];
    if let Some(a) = args.gateway_addr {
        spec["gatewayAddress"] = json!(a.ip().to_string());
        spec["gatewayPort"] = json!(a.port().to_string());
    }
    if let Some(id) = &args.gateway_identity {
        spec["gatewayIdentity"] = json!(id);
    }
    match (spec.get("gatewayAddress"), spec.get("gatewayIdentity")) {
        (None, None) => eprintln!(
            "weft multicluster: {} names no gateway (a workload labelled \
             linkerd.io/extension=multicluster and component=gateway): only its remote-discovery \
             and federated services are mirrored; --gateway-addr and --gateway-identity name one",
            args.name
        ),
        (Some(_), Some(id)) if id.is_string() => {}
        _ => bail!(
            "give both --gateway-addr and --gateway-identity (the linked cluster names no gateway)"
        ),
    }
    if spec.get("probeSpec").is_some() {
        spec["probeSpec"]["period"] = json!(format!("{}s", args.probe_period.as_secs().max(1)));
    }
    Ok(vec![secret, link])
}

/// West's API address and the credential's name, from a credentials Secret as the API answers it.
fn credentials_of(secret: &Value) -> anyhow::Result<(SocketAddr, String)> {
    let doc = validate_one(secret, "secret", &Defaults::default())
        .map_err(|errors| anyhow::anyhow!("the credentials Secret: {}", errors.join("; ")))?;
    let Resource::Secret(c) = doc else {
        bail!("not a credentials Secret");
    };
    let addr = c.server.trim_start_matches("http://").trim_end_matches('/');
    let addr = addr
        .parse()
        .with_context(|| format!("server {:?} is not http://IP:PORT", c.server))?;
    Ok((addr, c.user))
}

/// A cluster's trust anchors (`GET /v1/identity/trust-anchors`), PEM.
async fn trust_anchors(addr: SocketAddr) -> anyhow::Result<String> {
    let path = "/v1/identity/trust-anchors";
    let response = client::get(addr, path)
        .await
        .with_context(|| format!("asking the control plane API at {addr}"))?;
    if !response.status().is_success() {
        bail!("GET {path} at {addr}: {}", response.status());
    }
    Ok(String::from_utf8_lossy(response.body()).to_string())
}

/// Whether two PEM bundles have a certificate in common.
fn shares_an_anchor(a: &str, b: &str) -> bool {
    let (Ok(a), Ok(b)) = (
        ca::pem_certificates(a.as_bytes()),
        ca::pem_certificates(b.as_bytes()),
    ) else {
        return false;
    };
    a.iter().any(|der| b.contains(der))
}

async fn unlink(args: UnlinkArgs) -> anyhow::Result<()> {
    let api = args.local.api();
    let link = api
        .json(&resource_path(
            "link",
            Some(&args.namespace),
            Some(&args.name),
        ))
        .await
        .with_context(|| format!("reading Link {}/{}", args.namespace, args.name))?;
    let secret_name = link["spec"]["clusterCredentialsSecret"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let credentials = if args.revoke {
        let secret = api
            .json(&resource_path(
                "secret",
                Some(&args.namespace),
                Some(&secret_name),
            ))
            .await
            .with_context(|| format!("reading Secret {}/{secret_name}", args.namespace))?;
        Some(credentials_of(&secret)?)
    } else {
        None
    };
    for (kind, name) in [("link", args.name.as_str()), ("secret", &secret_name)] {
        if name.is_empty() {
            continue;
        }
        let path = resource_path(kind, Some(&args.namespace), Some(name));
        let (status, answer) = api
            .call(hyper::Method::DELETE, &path, String::new())
            .await?;
        if status == hyper::StatusCode::METHOD_NOT_ALLOWED {
            let instead = format!(
                "kubectl delete -n {ns} link.multicluster.linkerd.io/{link} secret/{secret_name}",
                ns = args.namespace,
                link = args.name
            );
            bail!("{}", read_only_store(&answer, status, &instead));
        }
        crate::resources::report(status, &answer)?;
    }
    if let Some((server, name)) = credentials {
        let remote = ApiAddr { addr: server };
        let path = format!("/v1/multicluster/credentials/{name}");
        let (status, answer) = remote
            .call(hyper::Method::DELETE, &path, String::new())
            .await
            .context("revoking the credential at the linked cluster")?;
        if !status.is_success() {
            bail!("revoking {name}: {}", api_error(&answer, status));
        }
        println!("credential {name} revoked at {server}");
    }
    Ok(())
}

/// This cluster's links, as `GET /v1/multicluster/links` answers them.
async fn links(api: &ApiAddr) -> anyhow::Result<Vec<Value>> {
    let answer = api.json("/v1/multicluster/links").await?;
    match answer {
        Value::Array(rows) => Ok(rows),
        other => bail!("GET /v1/multicluster/links: expected a list, got {other}"),
    }
}

async fn check(args: McCheckArgs) -> anyhow::Result<()> {
    let checks = link_checks(args.local.addr).await?;
    if checks.is_empty() {
        println!("no links (weft multicluster link)");
        return Ok(());
    }
    print!("{}", crate::check::render(&checks));
    if checks.iter().any(|c| c.status == Status::Error) {
        bail!("a multicluster check failed");
    }
    Ok(())
}

/// What to do about a link that is not connected, by its last error: a refused credential
/// (`401`) is linked again; anything else is the linked cluster's API not answering.
fn refusal_hint(last_error: &str, link: &str) -> String {
    if last_error.contains("401") {
        format!(
            "the linked cluster refused the credential: revoked, replaced by a newer one, or \
             (Kubernetes there) its ServiceAccount weft-link-<this cluster> deleted or its token \
             expired; link again: weft multicluster link --name {link} --api-addr ADDR"
        )
    } else {
        "check that the linked cluster's API answers at the address the credentials Secret names"
            .into()
    }
}

/// Three checks per link of the cluster whose API is at `local` (section `weft-multicluster
/// NAME`): it follows the linked cluster's exports, the linked gateway answers its probe, and
/// both clusters share a trust anchor. `weft check` prints them too. No links: none.
pub(crate) async fn link_checks(local: SocketAddr) -> anyhow::Result<Vec<Check>> {
    let api = ApiAddr { addr: local };
    let links = links(&api).await?;
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let local_anchors = trust_anchors(local).await?;
    let mut checks = Vec::new();
    for l in &links {
        let name = l["name"].as_str().unwrap_or("?");
        let namespace = l["namespace"].as_str().unwrap_or(DEFAULT_LINK_NAMESPACE);
        let section = format!("weft-multicluster {name}");
        let mut connected = Check::new(
            "link-connected",
            &section,
            "the link follows the linked cluster's exports",
        );
        if l["connected"] != json!(true) {
            connected.found(
                Status::Error,
                format!("not connected: {}", show::text(&l["lastError"])),
            );
            connected.hint = Some(refusal_hint(&show::text(&l["lastError"]), name));
        }
        let mut gateway = Check::new(
            "gateway-alive",
            &section,
            "the linked cluster's gateway answers its probe",
        );
        // A link without a gateway (remote discovery only) has nothing to probe.
        if l["gatewayAlive"] == json!(false) {
            gateway.found(
                Status::Error,
                "the gateway's probe fails: its mirrored services answer no endpoints",
            );
            gateway.hint = Some(
                "check the gateway workload in the linked cluster (weft multicluster gateways)"
                    .into(),
            );
        }
        let mut anchors = Check::new(
            "trust-anchor-shared",
            &section,
            "both clusters share a trust anchor",
        );
        match remote_anchors(&api, namespace, l).await {
            Ok(remote) if shares_an_anchor(&local_anchors, &remote) => {}
            Ok(_) => {
                anchors.found(
                    Status::Error,
                    "no trust anchor in common: cross-cluster mTLS fails",
                );
                anchors.hint =
                    Some("make one cluster's CA with weft identity init --anchor-dir".into());
            }
            Err(e) => anchors.found(Status::Error, format!("{e:#}")),
        }
        for mut c in [connected, gateway, anchors] {
            c.docs = DOCS.into();
            checks.push(c);
        }
    }
    Ok(checks)
}

/// The linked cluster's anchors, asked of the API its credentials name.
async fn remote_anchors(api: &ApiAddr, namespace: &str, link: &Value) -> anyhow::Result<String> {
    let name = link["name"].as_str().unwrap_or_default();
    let spec = api
        .json(&resource_path("link", Some(namespace), Some(name)))
        .await?;
    let secret_name = spec["spec"]["clusterCredentialsSecret"]
        .as_str()
        .unwrap_or_default();
    let secret = api
        .json(&resource_path("secret", Some(namespace), Some(secret_name)))
        .await?;
    trust_anchors(credentials_of(&secret)?.0).await
}

async fn gateways(args: GatewaysArgs) -> anyhow::Result<()> {
    let rows = links(&args.local.api()).await?;
    show::print_rows(
        &rows,
        args.output,
        "no links (weft multicluster link)",
        |rows, _| gateway_table(rows),
    )
}

/// `CLUSTER ALIVE NUM_SVC LATENCY`, Linkerd's `multicluster gateways` columns.
fn gateway_table(rows: &[Value]) -> String {
    let mut table = vec![["CLUSTER", "ALIVE", "NUM_SVC", "LATENCY"]
        .map(String::from)
        .to_vec()];
    for r in rows {
        let alive = match r["gatewayAlive"].as_bool() {
            Some(true) => "True",
            Some(false) => "False",
            None => "-",
        };
        let services = r["mirroredServices"].as_u64().unwrap_or(0)
            + r["federatedServices"].as_u64().unwrap_or(0);
        table.push(vec![
            show::text(&r["targetCluster"]),
            alive.to_string(),
            services.to_string(),
            show::millis(&r["probeLatencyMs"]),
        ]);
    }
    show::columns(&table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: MulticlusterArgs,
    }

    #[test]
    fn a_kubernetes_store_is_told_to_use_kubectl() {
        let answer = json!({"error": "the Kubernetes store takes changes through the Kubernetes API (kubectl apply/delete); workloads are pods"});
        let why = read_only_store(
            &answer,
            hyper::StatusCode::METHOD_NOT_ALLOWED,
            "X | kubectl apply -f -",
        );
        assert!(why.contains("kubectl apply/delete"), "{why}");
        assert!(
            why.contains("store is Kubernetes: X | kubectl apply -f -"),
            "{why}"
        );
    }

    #[test]
    fn a_refused_credential_is_linked_again() {
        let refused =
            "GET http://10.0.0.1:8085/v1/multicluster/exports answered 401 Unauthorized: {}";
        let hint = refusal_hint(refused, "west");
        assert!(
            hint.contains("weft multicluster link --name west"),
            "{hint}"
        );
        assert!(hint.contains("weft-link-"), "{hint}");
        let down = refusal_hint("http://10.0.0.1:8085: connection refused", "west");
        assert!(down.contains("answers at the address"), "{down}");
    }

    fn link_args(argv: &[&str]) -> LinkArgs {
        let mut full = vec!["weft", "link"];
        full.extend_from_slice(argv);
        match Cli::try_parse_from(full).expect("parses").args.command {
            McCommand::Link(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn answer() -> Value {
        json!({
            "token": "secret-token",
            "cluster": {"name": "west", "domain": "cluster.local", "controlNamespace": "weft"},
            "gateways": [{"address": "198.18.2.7", "port": 4143,
                "identity": "weft-gateway.weft-multicluster.serviceaccount.identity.weft.cluster.local",
                "probePort": 4191, "probePath": "/ready"}],
            "trustAnchorsPem": "",
        })
    }

    fn documents(args: &LinkArgs, answer: &Value) -> anyhow::Result<Vec<Value>> {
        let docs = link_documents(
            "west",
            &args.namespace,
            "http://198.18.2.1:8085",
            "link-east",
            answer,
        )
        .expect("documents");
        with_overrides(docs, args)
    }

    #[test]
    fn link_applies_linkerds_secret_then_link_and_the_secret_reads_back() {
        let args = link_args(&[
            "--name",
            "west",
            "--api-addr",
            "198.18.2.1:8085",
            "--probe-period",
            "5s",
        ]);
        let docs = documents(&args, &answer()).expect("documents");
        let (secret, link) = (&docs[0], &docs[1]);
        assert_eq!(secret["kind"], "Secret");
        assert_eq!(link["kind"], "Link");
        assert_eq!(link["spec"]["gatewayAddress"], "198.18.2.7");
        assert_eq!(link["spec"]["probeSpec"]["period"], "5s");
        let (server, name) = credentials_of(secret).expect("credentials");
        assert_eq!(server, "198.18.2.1:8085".parse::<SocketAddr>().unwrap());
        assert_eq!(name, "link-east");
    }

    #[test]
    fn flags_override_the_gateway_and_half_a_gateway_is_refused() {
        let args = link_args(&[
            "--name",
            "west",
            "--api-addr",
            "198.18.2.1:8085",
            "--gateway-addr",
            "198.18.9.9:4000",
            "--gateway-identity",
            "gw.example",
        ]);
        let docs = documents(&args, &answer()).expect("documents");
        assert_eq!(docs[1]["spec"]["gatewayAddress"], "198.18.9.9");
        assert_eq!(docs[1]["spec"]["gatewayPort"], "4000");
        assert_eq!(docs[1]["spec"]["gatewayIdentity"], "gw.example");

        let mut none = answer();
        none["gateways"] = json!([]);
        let bare = link_args(&["--name", "west", "--api-addr", "198.18.2.1:8085"]);
        let docs = documents(&bare, &none).expect("a remote-discovery-only link");
        assert!(docs[1]["spec"].get("gatewayAddress").is_none());
        let half = link_args(&[
            "--name",
            "west",
            "--api-addr",
            "198.18.2.1:8085",
            "--gateway-addr",
            "198.18.9.9:4000",
        ]);
        let e = documents(&half, &none).expect_err("an address without an identity");
        assert!(format!("{e:#}").contains("--gateway-identity"), "{e:#}");
    }

    #[test]
    fn bundles_share_an_anchor_only_with_a_certificate_in_common() {
        let a = ca::generate("cluster.local", "weft").expect("a");
        let b = ca::generate("cluster.local", "weft").expect("b");
        let both = format!("{}{}", a.anchor_cert_pem, b.anchor_cert_pem);
        assert!(shares_an_anchor(&a.anchor_cert_pem, &both));
        assert!(!shares_an_anchor(&a.anchor_cert_pem, &b.anchor_cert_pem));
        assert!(!shares_an_anchor(&a.anchor_cert_pem, "garbage"));
    }

    #[test]
    fn credential_names_are_dns_labels() {
        assert_eq!(dns_label("link-127.0.0.1:8085"), "link-127-0-0-1-8085");
        assert_eq!(dns_label("-A_b-"), "a-b");
    }
}
