//! `weft identity`: the mesh's CA on disk.
//!
//! `weft identity init --dir DIR` creates a trust anchor and an issuer (ECDSA P-256) in `DIR`
//! for `weft control --identity-dir DIR`. It never overwrites an existing CA.
//! `weft identity rotate --dir DIR --stage bundle|issue|retire` rotates the trust anchor one
//! stage at a time, and `weft identity status --dir DIR [--json]` shows where it stands
//! (`weft_control::rotation` does the work).

use std::path::PathBuf;

use anyhow::Context as _;
use weft_control::{ca, rotation};

/// `weft identity`: manage the identity CA.
#[derive(Debug, clap::Args)]
pub struct IdentityArgs {
    #[command(subcommand)]
    pub command: IdentityCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum IdentityCommand {
    /// Create a trust anchor and an issuer certificate in DIR (trust-anchors.pem, issuer.crt,
    /// issuer.key, trust-anchor.key). Refuses to overwrite existing files.
    Init(InitArgs),
    /// Rotate the trust anchor without downtime, one stage at a time: `bundle` (new anchor +
    /// issuer; proxies trust old + new), `issue` (issue from the new chain), `retire` (drop the
    /// old anchor once no live certificate depends on it).
    Rotate(RotateArgs),
    /// Show the anchors, the issuer, the rotation stage and the live leaves per anchor.
    Status(StatusArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RotateStage {
    /// Create the new anchor and issuer; write the bundle old + new (alias: prepare).
    #[value(alias = "prepare")]
    Bundle,
    /// Switch issuance to the new issuer (running control planes pick it up within seconds).
    Issue,
    /// Write the bundle with only the new anchor (refused while old certificates live).
    Retire,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The CA directory (`weft identity init --dir`, `weft control --identity-dir`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    #[arg(long, value_enum)]
    pub stage: RotateStage,
    /// `retire` only: skip the checks that no live certificate depends on the old anchor.
    /// Proxies holding such a certificate become unreachable until they renew.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Print the status as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write the CA into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Trust domain the CA names itself after (`root.weft.<domain>`, `identity.weft.<domain>`).
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub trust_domain: String,
    /// Make only a new issuer, signed by the trust anchor in this directory (its
    /// trust-anchors.pem and trust-anchor.key), for a second cluster to link with the first:
    /// both clusters' certificates then chain to one anchor (`docs/multicluster.md`). DIR gets
    /// the anchor bundle, issuer.crt and issuer.key, not the anchor's key.
    #[arg(long, value_name = "ANCHOR_DIR")]
    pub anchor_dir: Option<PathBuf>,
}

/// The CA `init` writes: a new anchor and issuer, or a new issuer under an existing anchor.
fn init_ca(init: &InitArgs) -> anyhow::Result<ca::Generated> {
    let Some(anchor_dir) = &init.anchor_dir else {
        return ca::generate(&init.trust_domain, "weft")
            .context("generating the trust anchor and the issuer");
    };
    let read = |name: &str| {
        let path = anchor_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let anchors = read(ca::TRUST_ANCHORS_FILE)?;
    let key = read(ca::TRUST_ANCHOR_KEY_FILE)?;
    ca::generate_issuer_for(&anchors, &key, &ca::issuer_name(&init.trust_domain, "weft"))
        .with_context(|| {
            format!(
                "signing a new issuer with the anchor in {}",
                anchor_dir.display()
            )
        })
}

pub fn run(args: IdentityArgs) -> anyhow::Result<()> {
    match args.command {
        IdentityCommand::Init(init) => {
            let generated = init_ca(&init)?;
            ca::write_dir(&init.dir, &generated)
                .with_context(|| format!("writing the CA into {}", init.dir.display()))?;
            // Check what was written loads exactly as `weft control` will load it.
            ca::Ca::load(&init.dir, ca::DEFAULT_CERT_LIFETIME)
                .context("the CA just written does not load")?;
            println!(
                "{}",
                serde_json::json!({
                    "event": "identity-initialized",
                    "dir": init.dir.display().to_string(),
                    "trust_anchors": init.dir.join(ca::TRUST_ANCHORS_FILE).display().to_string(),
                    "trust_domain": init.trust_domain,
                })
            );
            let key_note = match &init.anchor_dir {
                Some(anchor) => format!(
                    "The issuer is signed by the anchor of {}; its key stays there.",
                    anchor.display()
                ),
                None => format!(
                    "{} is only needed to sign a new issuer: keep it offline.",
                    ca::TRUST_ANCHOR_KEY_FILE
                ),
            };
            eprintln!(
                "weft identity: CA written to {}. Start the control plane with --identity-dir {0}; \
                 give proxies {} (WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE). {key_note}",
                init.dir.display(),
                ca::TRUST_ANCHORS_FILE,
            );
            Ok(())
        }
        IdentityCommand::Rotate(args) => rotate(args),
        IdentityCommand::Status(args) => {
            let status = rotation::status(&args.dir)
                .with_context(|| format!("reading the CA in {}", args.dir.display()))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", rotation::render_text(&status));
            }
            Ok(())
        }
    }
}

fn rotate(args: RotateArgs) -> anyhow::Result<()> {
    let dir = &args.dir;
    let (done, next) = match args.stage {
        RotateStage::Bundle => (
            rotation::prepare(dir),
            "distribute the bundle: proxies reading it (WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE) \
             reload it within seconds. Once every proxy reports identity_trust_anchors 2, run \
             --stage issue",
        ),
        RotateStage::Issue => (
            rotation::issue(dir),
            "running control planes issue from the new chain within a few seconds. Once the \
             certificates from the old anchor have expired (weft identity status), run --stage retire",
        ),
        RotateStage::Retire => (
            rotation::retire(dir, args.force),
            "proxies reload the bundle with only the new anchor within seconds; rotation complete",
        ),
    };
    let done = done.with_context(|| {
        format!(
            "weft identity rotate --stage {}: refused",
            match args.stage {
                RotateStage::Bundle => "bundle",
                RotateStage::Issue => "issue",
                RotateStage::Retire => "retire",
            }
        )
    })?;
    println!(
        "{}",
        serde_json::json!({
            "event": "identity-rotated",
            "dir": dir.display().to_string(),
            "stage": done.stage.as_str(),
            "new_anchor": done.new_anchor,
            "old_anchors": done.old_anchors,
            "trust_anchors": done.trust_anchors,
        })
    );
    eprintln!(
        "weft identity rotate: stage {} done; {next}.",
        done.stage.as_str()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_a_loadable_ca_and_refuses_a_second_time() {
        let dir = std::env::temp_dir().join(format!("weft-identity-init-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let args = || IdentityArgs {
            command: IdentityCommand::Init(InitArgs {
                dir: dir.clone(),
                trust_domain: "example.org".into(),
                anchor_dir: None,
            }),
        };
        run(args()).expect("init");
        for f in [
            ca::TRUST_ANCHORS_FILE,
            ca::ISSUER_CERT_FILE,
            ca::ISSUER_KEY_FILE,
            ca::TRUST_ANCHOR_KEY_FILE,
        ] {
            assert!(dir.join(f).exists(), "{f}");
        }
        let err = run(args()).expect_err("second init");
        assert!(format!("{err:#}").contains("already exists"), "{err:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
