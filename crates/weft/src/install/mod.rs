//! `weft install` and `weft upgrade`: the Kubernetes manifests of the mesh, printed for
//! `kubectl apply -f -` (`docs/kubernetes.md`, "Install").
//!
//! `--crds` prints the CustomResourceDefinitions of every kind the control plane reads
//! ([`crds`]); otherwise the control plane's objects ([`control_plane`]), with the identity
//! issuer from `--identity-dir` (made by `weft identity init`) or, for `install` only, one
//! generated in memory. Objects are built as JSON values and printed as multi-document YAML.

pub mod control_plane;
pub mod crds;
mod gateway;
pub mod multicluster;
mod schema;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;
use weft_control::ca;
use weft_control::resource::Defaults;

/// The image registry the control plane's image comes from, unless `--image-registry`.
pub const DEFAULT_IMAGE_REGISTRY: &str = "ghcr.io/weft-mesh";

const INSTALL_EXAMPLES: &str = "\
Examples:
  # Install the CRDs first, then the control plane:
  weft install --crds | kubectl apply -f -
  weft install | kubectl apply -f -

  # With an identity made beforehand (keeps the trust anchor's key with you):
  weft identity init --dir ./weft-identity
  weft install --identity-dir ./weft-identity | kubectl apply -f -

  # High availability: 3 replicas, anti-affinity, a PodDisruptionBudget, resource requests:
  weft install --ha | kubectl apply -f -";

const UPGRADE_EXAMPLES: &str = "\
Examples:
  weft upgrade --crds | kubectl apply -f -
  weft upgrade --identity-dir ./weft-identity | kubectl apply --prune -l weft.io/control-plane-ns=weft -f -";

/// What `install` and `upgrade` share.
#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    /// Print only the CustomResourceDefinitions (apply them first).
    #[arg(long)]
    pub crds: bool,
    /// With --crds: leave out the Gateway API CRDs (HTTPRoute, GRPCRoute, TLSRoute, TCPRoute),
    /// for a cluster that has them from the Gateway API's own release.
    #[arg(long, requires = "crds")]
    pub skip_gateway_api: bool,
    /// High availability: 3 control-plane replicas spread over nodes, a PodDisruptionBudget,
    /// resource requests and limits.
    #[arg(long, conflicts_with = "crds")]
    pub ha: bool,
    /// The identity to install: a directory made by `weft identity init` (trust-anchors.pem,
    /// issuer.crt, issuer.key; the anchor's key is never read).
    #[arg(long, value_name = "DIR", conflicts_with = "crds")]
    pub identity_dir: Option<PathBuf>,
    /// Registry of the control plane's image (`REGISTRY/weft:VERSION`).
    #[arg(long, value_name = "REGISTRY", default_value = DEFAULT_IMAGE_REGISTRY)]
    pub image_registry: String,
}

/// `weft install`.
#[derive(Debug, clap::Args)]
#[command(after_help = INSTALL_EXAMPLES)]
pub struct InstallArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
}

/// `weft upgrade`.
#[derive(Debug, clap::Args)]
#[command(after_help = UPGRADE_EXAMPLES)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
}

/// The identity the control plane is installed with: PEM texts of the files of
/// `weft identity init` that the control plane reads.
pub struct Identity<'a> {
    pub trust_anchors_pem: &'a str,
    pub issuer_cert_pem: &'a str,
    pub issuer_key_pem: &'a str,
}

/// Identity PEM texts owned (read from a directory or generated).
struct OwnedIdentity {
    trust_anchors_pem: String,
    issuer_cert_pem: String,
    issuer_key_pem: String,
}

impl OwnedIdentity {
    fn borrow(&self) -> Identity<'_> {
        Identity {
            trust_anchors_pem: &self.trust_anchors_pem,
            issuer_cert_pem: &self.issuer_cert_pem,
            issuer_key_pem: &self.issuer_key_pem,
        }
    }

    /// Reads and checks (`ca::Ca::from_pem`: the issuer is a valid CA signed by an anchor and
    /// matches its key) the identity in `dir`.
    fn load(dir: &Path) -> anyhow::Result<OwnedIdentity> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading the identity: {}", path.display()))
                .map(|text| (path, text))
        };
        let (anchors_path, trust_anchors_pem) = read(ca::TRUST_ANCHORS_FILE)?;
        let (issuer_path, issuer_cert_pem) = read(ca::ISSUER_CERT_FILE)?;
        let (key_path, issuer_key_pem) = read(ca::ISSUER_KEY_FILE)?;
        ca::Ca::from_pem(
            (&anchors_path, trust_anchors_pem.clone()),
            (&issuer_path, &issuer_cert_pem),
            (&key_path, &issuer_key_pem),
            ca::DEFAULT_CERT_LIFETIME,
        )
        .with_context(|| format!("the identity in {} is not usable", dir.display()))?;
        Ok(OwnedIdentity {
            trust_anchors_pem,
            issuer_cert_pem,
            issuer_key_pem,
        })
    }

    fn generate() -> anyhow::Result<OwnedIdentity> {
        let d = Defaults::default();
        let g = ca::generate(&d.trust_domain, &d.control_namespace)
            .context("generating the identity")?;
        Ok(OwnedIdentity {
            trust_anchors_pem: g.anchor_cert_pem,
            issuer_cert_pem: g.issuer_cert_pem,
            issuer_key_pem: g.issuer_key_pem,
        })
    }
}

pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    let m = &args.manifest;
    if m.crds {
        return print(&crd_documents(m.skip_gateway_api));
    }
    let identity = match &m.identity_dir {
        Some(dir) => OwnedIdentity::load(dir)?,
        None => {
            let identity = OwnedIdentity::generate()?;
            eprintln!(
                "weft install: generated a new trust anchor and issuer for this install. The \
                 trust anchor's private key is not printed and not kept anywhere (as Linkerd \
                 does): the issuer can sign for a year, and rotating the anchor later needs a \
                 new one. To keep the anchor key, run `weft identity init --dir DIR` and \
                 `weft install --identity-dir DIR` instead."
            );
            identity
        }
    };
    print(&control_plane_documents(&identity.borrow(), m))
}

pub fn upgrade(args: UpgradeArgs) -> anyhow::Result<()> {
    let m = &args.manifest;
    if m.crds {
        return print(&crd_documents(m.skip_gateway_api));
    }
    let Some(dir) = &m.identity_dir else {
        anyhow::bail!(
            "weft upgrade needs the mesh's current identity: --identity-dir DIR with the \
             trust-anchors.pem, issuer.crt and issuer.key the control plane runs with (the \
             directory of `weft identity init`, or the keys of the Secret {}/{}, see \
             docs/kubernetes.md). An upgrade never generates new trust anchors: every meshed \
             proxy trusts only the current ones.",
            control_plane::NAMESPACE,
            control_plane::IDENTITY_SECRET
        );
    };
    let identity = OwnedIdentity::load(dir)?;
    print(&control_plane_documents(&identity.borrow(), m))
}

/// The CRD documents (all, or without the Gateway API's).
pub fn crd_documents(skip_gateway_api: bool) -> Vec<Value> {
    let labels = control_plane::labels();
    crds::CRDS
        .iter()
        .filter(|c| !(skip_gateway_api && c.is_gateway_api()))
        .map(|c| c.document(&labels))
        .collect()
}

fn control_plane_documents(identity: &Identity<'_>, m: &ManifestArgs) -> Vec<Value> {
    let image = format!(
        "{}/weft:{}",
        m.image_registry.trim_end_matches('/'),
        env!("CARGO_PKG_VERSION")
    );
    control_plane::objects(
        identity,
        &control_plane::Options {
            ha: m.ha,
            image: &image,
        },
    )
}

/// Multi-document YAML, each document after a `---` line.
pub fn to_yaml(docs: &[Value]) -> anyhow::Result<String> {
    let mut out = String::new();
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&yaml_serde::to_string(doc).context("rendering YAML")?);
    }
    Ok(out)
}

pub(crate) fn print(docs: &[Value]) -> anyhow::Result<()> {
    let text = to_yaml(docs)?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the manifests to stdout")
}
