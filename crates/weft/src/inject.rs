//! `weft inject` and `weft uninject`: the admission webhook's injection, offline, on manifests
//! (`weft_control::inject` does the work; this module walks the documents). Also the proxy's
//! variables and `weft init`'s flags for an injected pod ([`WeftSidecar`]), which the webhook of
//! `weft control --webhook-addr` uses too: they are the `WEFT_PROXY_*` settings `weft run`
//! gives a sidecar, spelled with the proxy's own constants.

mod manifest;

use std::io::Read as _;
use std::sync::Arc;

use anyhow::Context as _;
use serde_json::Value;
use weft_control::inject::{self as core, env, env_from_configmap, Images, Injector, Settings};
use weft_proxy::config;

use crate::init::{self, InitArgs, PortList};
use crate::run;

const AFTER_HELP: &str = "\
Examples:
  # Inject every workload of a file and apply it
  weft inject deployment.yml | kubectl apply -f -
  # Inject what is running in a namespace
  kubectl get deploy -n emojivoto -o yaml | weft inject - | kubectl apply -f -
  # Only add linkerd.io/inject: enabled (the webhook injects when the pods are created)
  weft inject --annotate-only deployment.yml
  # Remove the proxy again
  kubectl get deploy -n emojivoto -o yaml | weft uninject - | kubectl apply -f -

Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Pods and Lists of them are
injected; every other document is printed byte for byte as it was. Settings come from the
config.linkerd.io/* annotations of each pod template (docs/kubernetes.md, \"Injection\").";

/// `weft inject FILE|-`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct InjectArgs {
    /// The manifest file (YAML, one or more documents), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// Only add `linkerd.io/inject: enabled` to the pod templates (Linkerd's default): the
    /// webhook then injects the pods as they are created.
    #[arg(long)]
    pub annotate_only: bool,
    /// Registry of the proxy (`<registry>/weft-proxy`) and init (`<registry>/weft`) images.
    #[arg(long, default_value = "ghcr.io/weft-mesh", value_name = "REGISTRY")]
    pub image_registry: String,
    /// A CNI plugin installs the redirect rules: no `weft-init` container.
    #[arg(long)]
    pub cni: bool,
    /// Give the proxies these trust anchors (a PEM file, e.g. the `trust-anchors.pem` of
    /// `weft identity init`) inline, instead of a reference to the ConfigMap
    /// `weft-identity-trust-roots` in the workload's namespace.
    #[arg(long, value_name = "PEM")]
    pub trust_anchors: Option<std::path::PathBuf>,
}

/// `weft uninject FILE|-`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct UninjectArgs {
    /// The manifest file (YAML, one or more documents), or `-` for stdin.
    #[arg(value_name = "FILE|-")]
    pub file: String,
}

/// The proxy's variables and `weft init`'s flags for an injected pod.
pub struct WeftSidecar;

impl WeftSidecar {
    fn init_args(s: &Settings) -> anyhow::Result<InitArgs> {
        let ports = |list: &str| -> anyhow::Result<PortList> {
            list.parse::<PortList>().map_err(|e| anyhow::anyhow!("{e}"))
        };
        // The admin and tap ports are never redirected (Linkerd's proxy-init does the same).
        let mut skip_inbound = format!("{},{}", core::TAP_PORT, core::ADMIN_PORT);
        if !s.skip_inbound_ports.is_empty() {
            skip_inbound = format!("{skip_inbound},{}", s.skip_inbound_ports);
        }
        Ok(InitArgs {
            proxy_uid: s.proxy_uid,
            inbound_port: core::INBOUND_PORT,
            outbound_port: core::OUTBOUND_PORT,
            skip_inbound_ports: ports(&skip_inbound)?,
            skip_outbound_ports: ports(&s.skip_outbound_ports)?,
            skip_outbound_cidrs: Vec::new(),
            opaque_ports: ports(&s.opaque_ports)?,
            iptables_mode: init::Mode::Nft,
            dry_run: false,
        })
    }
}

impl core::Sidecar for WeftSidecar {
    fn proxy_env(&self, s: &Settings) -> Vec<Value> {
        let defaults = &s.defaults;
        let mut vars: Vec<Value> = run::sidecar_env(
            s.destination_addr(),
            format!("$({}):$({})", core::POD_NS_VAR, core::POD_NAME_VAR),
            defaults,
            Some(weft_control::resource::control_identity(defaults)),
        )
        .into_iter()
        .map(|(k, v)| env(k, v))
        .collect();
        // Identity: the anchors, the projected ServiceAccount token, the name it certifies.
        vars.push(match &s.trust_anchors {
            Some(pem) => env(config::ENV_IDENTITY_TRUST_ANCHORS, pem.clone()),
            None => env_from_configmap(
                config::ENV_IDENTITY_TRUST_ANCHORS,
                core::TRUST_ROOTS_CONFIGMAP,
                core::TRUST_ROOTS_KEY,
            ),
        });
        vars.push(env(
            config::ENV_IDENTITY_TOKEN_FILE,
            format!("{}/{}", core::TOKEN_DIR, core::TOKEN_VOLUME),
        ));
        vars.push(env(config::ENV_IDENTITY_LOCAL_NAME, s.local_name()));
        // The settings were validated by the injector: the port lists parse.
        if let Ok(args) = Self::init_args(s) {
            vars.extend(
                run::pod_listeners_env(&args)
                    .into_iter()
                    .map(|(k, v)| env(k, v)),
            );
        }
        if let Some(level) = &s.log_level {
            vars.push(env(config::ENV_LOG, level.clone()));
        }
        if s.gateway {
            let (name, value) = run::gateway_env(&s.cluster_domain);
            vars.push(env(name, value));
        }
        vars
    }

    fn init_args(&self, s: &Settings) -> Vec<String> {
        Self::init_args(s).map(|a| a.to_flags()).unwrap_or_default()
    }
}

/// The injector `weft inject` and the webhook use, for the default control plane.
pub fn injector(images: Images, cni: bool) -> Injector {
    Injector {
        images,
        defaults: weft_control::resource::Defaults::default(),
        cluster_domain: "cluster.local".into(),
        cni,
        trust_anchors: None,
        sidecar: Arc::new(WeftSidecar),
    }
}

fn read(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
    }
}

/// Prints `out`, reports `problems` on stderr; an error when there were any.
fn finish(out: manifest::Output) -> anyhow::Result<()> {
    print!("{}", out.text);
    for note in &out.notes {
        say!("weft: {note}");
    }
    for p in &out.problems {
        say!("weft: {p}");
    }
    match out.problems.len() {
        0 => Ok(()),
        n => anyhow::bail!("{n} pod template(s) left as they were"),
    }
}

/// A trust-anchors PEM file (`--trust-anchors`), which must hold a certificate.
pub(crate) fn read_trust_anchors(path: &std::path::Path) -> anyhow::Result<String> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        anyhow::bail!("{}: no PEM certificate in it", path.display());
    }
    Ok(pem)
}

pub fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let text = read(&args.file)?;
    let mut injector = injector(
        Images {
            registry: args.image_registry.clone(),
            ..Images::default()
        },
        args.cni,
    );
    if let Some(path) = &args.trust_anchors {
        injector.trust_anchors = Some(read_trust_anchors(path)?);
    }
    finish(manifest::inject(&text, &injector, args.annotate_only))
}

pub fn uninject(args: UninjectArgs) -> anyhow::Result<()> {
    let text = read(&args.file)?;
    finish(manifest::uninject(&text))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use serde_json::json;

    /// The proxy container's `env` as the kubelet resolves it: downward-API fields from `pod`,
    /// the anchors ConfigMap's key, `$(NAME)` references to earlier variables.
    fn resolve(container: &Value, pod: &[(&str, &str)], anchors: &str) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = HashMap::new();
        for var in container["env"].as_array().expect("env") {
            let name = var["name"].as_str().expect("name").to_string();
            let value = if let Some(v) = var["value"].as_str() {
                let mut v = v.to_string();
                for (k, resolved) in &env {
                    v = v.replace(&format!("$({k})"), resolved);
                }
                v
            } else if let Some(field) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                let found = pod.iter().find(|(f, _)| *f == field);
                found.expect("a known field").1.to_string()
            } else {
                let key = &var["valueFrom"]["configMapKeyRef"];
                assert_eq!(key["name"], core::TRUST_ROOTS_CONFIGMAP);
                assert_eq!(key["key"], core::TRUST_ROOTS_KEY);
                anchors.to_string()
            };
            env.insert(name, value);
        }
        env
    }

    #[test]
    fn the_injected_variables_are_a_configuration_the_proxy_accepts() {
        let ca = weft_control::ca::Ca::ephemeral(
            "cluster.local",
            "weft",
            std::time::Duration::from_secs(3600),
        )
        .expect("a CA");
        let anchors = ca.trust_anchors_pem().to_string();
        let mut template = json!({
            "metadata": {"annotations": {
                core::INJECT_ANNOTATION: "enabled",
                core::OPAQUE_PORTS_ANNOTATION: "3306,5000-5002",
                core::LOG_LEVEL_ANNOTATION: "debug",
            }},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        });
        let outcome = injector(Images::default(), false)
            .inject(&mut template, &Default::default())
            .expect("injected");
        assert_eq!(outcome, core::Outcome::Injected);
        let proxy = &template["spec"]["initContainers"][1];
        assert_eq!(proxy["name"], core::PROXY_CONTAINER);
        let env = resolve(
            proxy,
            &[
                ("metadata.name", "web-5d8f7c-x2x9q"),
                ("metadata.namespace", "shop"),
                ("spec.serviceAccountName", "web"),
            ],
            &anchors,
        );
        let config = weft_proxy::Config::from_env(&env)
            .unwrap_or_else(|e| panic!("the proxy refuses the injected variables: {e}"));
        assert_eq!(
            config.destination_addr,
            "weft-dst.weft.svc.cluster.local:8086"
        );
        assert_eq!(
            config.destination_name.as_deref(),
            Some("weft-control.weft.serviceaccount.identity.weft.cluster.local")
        );
        assert_eq!(config.workload.namespace, "shop");
        assert_eq!(config.workload.name, "web-5d8f7c-x2x9q");
        assert_eq!(config.inbound_listen_addr.to_string(), "0.0.0.0:4143");
        assert_eq!(config.outbound_listen_addr.to_string(), "127.0.0.1:4140");
        assert_eq!(config.admin_listen_addr.to_string(), "0.0.0.0:4191");
        assert!(config.inbound_opaque_ports.contains(&3306));
        assert!(config.inbound_opaque_ports.contains(&5001));
        let identity = config.identity.expect("identity on");
        assert_eq!(
            identity.local_name,
            "web.shop.serviceaccount.identity.weft.cluster.local"
        );
        assert_eq!(
            identity.token_file.to_string_lossy(),
            "/var/run/secrets/tokens/weft-identity-token"
        );
        assert_eq!(identity.trust_anchors_pem.trim(), anchors.trim());
        assert_eq!(env[config::ENV_LOG], "debug");
        // The init container redirects to those ports, exempting the proxy's uid.
        let args: Vec<&str> = template["spec"]["initContainers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let flag = |name: &str| args[args.iter().position(|a| *a == name).unwrap() + 1];
        assert_eq!(args[0], "init");
        assert_eq!(flag("--proxy-uid"), "2102");
        assert_eq!(flag("--inbound-port"), "4143");
        assert_eq!(flag("--outbound-port"), "4140");
        assert_eq!(flag("--skip-inbound-ports"), "4190,4191");
    }
}
