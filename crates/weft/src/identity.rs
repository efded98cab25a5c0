//! `weft identity`: the mesh's CA on disk.
//!
//! `weft identity init --dir DIR` creates a trust anchor and an issuer (ECDSA P-256) in `DIR`
//! for `weft control --identity-dir DIR`. It never overwrites an existing CA.

use std::path::PathBuf;

use anyhow::Context as _;
use weft_control::ca;

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
}

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Directory to write the CA into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Trust domain the CA names itself after (`root.weft.<domain>`, `identity.weft.<domain>`).
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub trust_domain: String,
}

pub fn run(args: IdentityArgs) -> anyhow::Result<()> {
    match args.command {
        IdentityCommand::Init(init) => {
            let generated = ca::generate(&init.trust_domain, "weft")
                .context("generating the trust anchor and the issuer")?;
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
            eprintln!(
                "weft identity: CA written to {}. Start the control plane with --identity-dir {0}; \
                 give proxies {} (WEFT_PROXY_IDENTITY_TRUST_ANCHORS_FILE). {} is only needed to \
                 sign a new issuer: keep it offline.",
                init.dir.display(),
                ca::TRUST_ANCHORS_FILE,
                ca::TRUST_ANCHOR_KEY_FILE
            );
            Ok(())
        }
    }
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
