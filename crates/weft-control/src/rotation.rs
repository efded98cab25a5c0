//! Trust-anchor rotation of a CA directory, in three stages an operator runs one after another
//! (`weft identity rotate --dir DIR --stage ...`), and the status of a CA directory.
//!
//! 1. **bundle** (`prepare`): a new anchor and issuer are generated into `DIR/next/`, and
//!    `trust-anchors.pem` becomes old anchors + new anchor. Proxies watching that file trust both;
//!    leaves are still issued by the old issuer.
//! 2. **issue**: the new issuer (and the new anchor's key) replace `issuer.crt`/`issuer.key`
//!    (`trust-anchor.key`); control planes reading DIR pick it up within a few seconds
//!    ([`crate::ca_reload`]) and every new leaf chains to the new anchor.
//! 3. **retire**: refused while a leaf issued under another anchor is still live (the
//!    [`crate::ca_reload::Ledger`] files every control plane writes under `DIR/issued/`), or less
//!    than [`RETIRE_SETTLE`] after `issue`; then `trust-anchors.pem` holds only the new anchor.
//!
//! Every file is replaced atomically ([`crate::files`]), so a reader never sees half a bundle.
//! This module depends on `ca_reload` (the ledgers), never the other way round. Files replaced along the way are kept under `DIR/retired/<start>/`.
//! The stage is recorded in `DIR/rotation.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ca::{self, Ca, CaError, CertInfo};
use crate::ca_reload::{self, LeafCount, LedgerFile};
use crate::clock::{unix_now, unix_to_rfc3339};
use crate::files;

/// The rotation state file.
pub const ROTATION_FILE: &str = "rotation.json";
/// Where `prepare` puts the new anchor and issuer until `issue`.
pub const NEXT_DIR: &str = "next";
/// The new anchor's certificate inside [`NEXT_DIR`] (the bundle has it too).
pub const NEXT_ANCHOR_CERT: &str = "trust-anchor.crt";
/// Replaced files are archived here, one directory per rotation.
pub const RETIRED_DIR: &str = "retired";
/// How long after `issue` `retire` waits at least: every control plane reading the directory
/// has switched issuers by then (it polls every [`ca_reload::CA_RELOAD_INTERVAL`] and waits for
/// the files to be stable for one more poll) and has written the last leaves of the old issuer
/// into its ledger.
pub const RETIRE_SETTLE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// No rotation has run on this directory.
    None,
    /// The bundle holds old + new anchors; issuance from the old issuer.
    Bundle,
    /// Issuance from the new issuer; the bundle still holds old + new anchors.
    Issue,
    /// The bundle holds only the new anchor: the last rotation is finished.
    Complete,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "none",
            Stage::Bundle => "bundle",
            Stage::Issue => "issue",
            Stage::Complete => "complete",
        }
    }
}

/// `DIR/rotation.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    pub stage: Stage,
    /// Fingerprints of the anchors the rotation replaces.
    pub old_anchors: Vec<String>,
    /// Fingerprint of the anchor it introduces.
    pub new_anchor: String,
    /// Unix seconds of each stage.
    pub started: i64,
    #[serde(default)]
    pub issuing_since: Option<i64>,
    #[serde(default)]
    pub completed: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Ca(#[from] CaError),
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("the rotation is at stage {found:?}; {hint}")]
    WrongStage { found: &'static str, hint: String },
    #[error(
        "{live} certificate(s) issued under the old anchor(s) are still live (the last expires at \
         {latest_expiry} = {}); retire once they have expired",
        unix_to_rfc3339(*latest_expiry)
    )]
    LiveLeaves { live: u64, latest_expiry: i64 },
    #[error(
        "issuance switched to the new anchor {ago}s ago; wait {wait}s more so every control plane \
         has switched and recorded its last certificates from the old issuer"
    )]
    Settling { ago: u64, wait: u64 },
    #[error(
        "no control plane has recorded the certificates it issued from {} ({}/ is empty): it \
         cannot be known that none depends on the old anchor (run `weft control --identity-dir` \
         on this directory, or pass --force if you are sure)",
        dir.display(), ca_reload::LEDGER_DIR
    )]
    NoLedger { dir: PathBuf },
    /// The ledgers live in an etcd store (`DIR/issued/store`) that did not answer.
    #[error("{0}")]
    Ledgers(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RotationError + '_ {
    move |error| RotationError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Reads `DIR/rotation.json` (`None` when no rotation ever ran).
pub fn read_state(dir: &Path) -> Result<Option<RotationState>, RotationError> {
    let path = dir.join(ROTATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RotationError::Invalid {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(RotationError::Io { path, error }),
    }
}

/// [`files::write_atomic`] with this module's error.
fn write_atomic(path: &Path, bytes: &[u8], secret: bool) -> Result<(), RotationError> {
    files::write_atomic(path, bytes, secret).map_err(|e| RotationError::Io {
        path: e.path,
        error: e.source,
    })
}

fn write_state(dir: &Path, state: &RotationState) -> Result<(), RotationError> {
    let text = serde_json::to_string_pretty(state).unwrap_or_default();
    write_atomic(&dir.join(ROTATION_FILE), text.as_bytes(), false)
}

fn read(path: &Path) -> Result<String, RotationError> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn certs(path: &Path, text: &str) -> Result<Vec<Vec<u8>>, RotationError> {
    ca::pem_certificates(text.as_bytes()).map_err(|reason| RotationError::Invalid {
        path: path.to_path_buf(),
        reason,
    })
}

/// PEM text of a DER certificate (the bundle is rewritten from the certificates it parsed).
fn pem(der: &[u8]) -> String {
    let block = pem::Pem::new("CERTIFICATE", der);
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// What a stage did, for the CLI to print.
#[derive(Clone, Debug, Serialize)]
pub struct StageDone {
    pub stage: Stage,
    pub new_anchor: String,
    pub old_anchors: Vec<String>,
    pub trust_anchors: String,
}

fn done(dir: &Path, state: &RotationState) -> StageDone {
    StageDone {
        stage: state.stage,
        new_anchor: state.new_anchor.clone(),
        old_anchors: state.old_anchors.clone(),
        trust_anchors: dir.join(ca::TRUST_ANCHORS_FILE).display().to_string(),
    }
}

/// Stage 1: a new anchor + issuer in `DIR/next/`, and the bundle = current anchors + new anchor.
pub fn prepare(dir: &Path) -> Result<StageDone, RotationError> {
    if let Some(state) = read_state(dir)? {
        match state.stage {
            Stage::Bundle => {
                return Err(RotationError::WrongStage {
                    found: "bundle",
                    hint: "the bundle is already distributed; continue with --stage issue".into(),
                })
            }
            Stage::Issue => {
                return Err(RotationError::WrongStage {
                    found: "issue",
                    hint: "finish this rotation first with --stage retire".into(),
                })
            }
            Stage::None | Stage::Complete => {}
        }
    }
    // The directory must hold a working CA, and the new one keeps its names.
    let current = Ca::load(dir, ca::DEFAULT_CERT_LIFETIME)?;
    let anchors_path = dir.join(ca::TRUST_ANCHORS_FILE);
    let anchors = certs(&anchors_path, current.trust_anchors_pem())?;
    let issuer_path = dir.join(ca::ISSUER_CERT_FILE);
    let issuer = certs(&issuer_path, &read(&issuer_path)?)?;
    let root_cn = anchors
        .iter()
        .find(|a| ca::fingerprint(a) == current.issuer_anchor())
        .and_then(|a| ca::common_name(a))
        .unwrap_or_else(|| "root.weft.cluster.local".into());
    let issuer_cn = issuer
        .first()
        .and_then(|i| ca::common_name(i))
        .unwrap_or_else(|| "identity.weft.cluster.local".into());
    let generated = ca::generate_named(&root_cn, &issuer_cn)?;

    let next = dir.join(NEXT_DIR);
    // A `next/` left by an interrupted prepare is replaced.
    if next.exists() {
        std::fs::remove_dir_all(&next).map_err(io(&next))?;
    }
    std::fs::create_dir_all(&next).map_err(io(&next))?;
    for (name, text, secret) in [
        (NEXT_ANCHOR_CERT, &generated.anchor_cert_pem, false),
        (ca::TRUST_ANCHOR_KEY_FILE, &generated.anchor_key_pem, true),
        (ca::ISSUER_CERT_FILE, &generated.issuer_cert_pem, false),
        (ca::ISSUER_KEY_FILE, &generated.issuer_key_pem, true),
    ] {
        write_atomic(&next.join(name), text.as_bytes(), secret)?;
    }
    let new_anchor = certs(&next.join(NEXT_ANCHOR_CERT), &generated.anchor_cert_pem)?;
    let new_fp = new_anchor
        .first()
        .map(|a| ca::fingerprint(a))
        .unwrap_or_default();

    let mut bundle: String = anchors.iter().map(|a| pem(a)).collect();
    bundle.push_str(&generated.anchor_cert_pem);
    // The control plane must still load with the bundle and the old issuer.
    let anchors_text = bundle.clone();
    Ca::from_pem(
        (&anchors_path, anchors_text),
        (&issuer_path, &read(&issuer_path)?),
        (
            &dir.join(ca::ISSUER_KEY_FILE),
            &read(&dir.join(ca::ISSUER_KEY_FILE))?,
        ),
        ca::DEFAULT_CERT_LIFETIME,
    )?;
    let started = unix_now();
    archive(dir, started, &[ca::TRUST_ANCHORS_FILE])?;
    write_atomic(&anchors_path, bundle.as_bytes(), false)?;
    let state = RotationState {
        stage: Stage::Bundle,
        old_anchors: anchors.iter().map(|a| ca::fingerprint(a)).collect(),
        new_anchor: new_fp,
        started,
        issuing_since: None,
        completed: None,
    };
    write_state(dir, &state)?;
    Ok(done(dir, &state))
}

/// Copies `files` of `dir` into `DIR/retired/<started>/` (existing copies are kept).
fn archive(dir: &Path, started: i64, files: &[&str]) -> Result<(), RotationError> {
    let to = dir.join(RETIRED_DIR).join(started.to_string());
    std::fs::create_dir_all(&to).map_err(io(&to))?;
    for name in files {
        let (from, dest) = (dir.join(name), to.join(name));
        if from.exists() && !dest.exists() {
            std::fs::copy(&from, &dest).map_err(io(&dest))?;
        }
    }
    Ok(())
}

fn expect_stage(
    dir: &Path,
    want: Stage,
    hint_for: impl Fn(Stage) -> &'static str,
) -> Result<RotationState, RotationError> {
    let state = read_state(dir)?;
    match state {
        Some(s) if s.stage == want => Ok(s),
        other => {
            let found = other.map_or(Stage::None, |s| s.stage);
            Err(RotationError::WrongStage {
                found: found.as_str(),
                hint: hint_for(found).into(),
            })
        }
    }
}

/// Stage 2: the new issuer replaces the old one; running control planes switch within seconds.
pub fn issue(dir: &Path) -> Result<StageDone, RotationError> {
    let mut state = expect_stage(dir, Stage::Bundle, |found| match found {
        Stage::Issue => "issuance already uses the new anchor; continue with --stage retire",
        _ => "start a rotation with --stage bundle",
    })?;
    let next = dir.join(NEXT_DIR);
    let anchors_path = dir.join(ca::TRUST_ANCHORS_FILE);
    let (next_cert, next_key) = (
        next.join(ca::ISSUER_CERT_FILE),
        next.join(ca::ISSUER_KEY_FILE),
    );
    // What the control planes will load: the current bundle with the new issuer.
    let new_ca = Ca::from_pem(
        (&anchors_path, read(&anchors_path)?),
        (&next_cert, &read(&next_cert)?),
        (&next_key, &read(&next_key)?),
        ca::DEFAULT_CERT_LIFETIME,
    )?;
    if new_ca.issuer_anchor() != state.new_anchor {
        return Err(RotationError::Invalid {
            path: next_cert,
            reason: format!(
                "not signed by the new anchor {} of this rotation",
                state.new_anchor
            ),
        });
    }
    archive(
        dir,
        state.started,
        &[
            ca::ISSUER_CERT_FILE,
            ca::ISSUER_KEY_FILE,
            ca::TRUST_ANCHOR_KEY_FILE,
        ],
    )?;
    // The key first: a reader that sees the new key with the old certificate refuses the pair
    // and retries once the files are stable (see `ca_reload`).
    for (name, secret) in [
        (ca::ISSUER_KEY_FILE, true),
        (ca::ISSUER_CERT_FILE, false),
        (ca::TRUST_ANCHOR_KEY_FILE, true),
    ] {
        let text = read(&next.join(name))?;
        write_atomic(&dir.join(name), text.as_bytes(), secret)?;
    }
    std::fs::remove_dir_all(&next).map_err(io(&next))?;
    state.stage = Stage::Issue;
    state.issuing_since = Some(unix_now());
    write_state(dir, &state)?;
    Ok(done(dir, &state))
}

/// Stage 3: the bundle keeps only the new anchor, once nothing depends on the old ones.
/// `force` skips the checks (the ledger, the settling time): only for a directory no control
/// plane ever recorded, when the operator knows no old certificate is in use.
pub fn retire(dir: &Path, force: bool) -> Result<StageDone, RotationError> {
    let mut state = expect_stage(dir, Stage::Issue, |found| match found {
        Stage::Bundle => "switch issuance first with --stage issue",
        Stage::Complete => "the old anchor is already retired",
        _ => "start a rotation with --stage bundle",
    })?;
    let now = unix_now();
    if !force {
        let ledgers = ca_reload::read_ledgers(dir).map_err(RotationError::Ledgers)?;
        if ledgers.is_empty() {
            return Err(RotationError::NoLedger {
                dir: dir.to_path_buf(),
            });
        }
        let old = live_leaves(&ledgers, now)
            .into_iter()
            .filter(|(anchor, _)| *anchor != state.new_anchor)
            .fold(LeafCount::default(), |acc, (_, c)| acc.merge(c));
        if old.live > 0 {
            return Err(RotationError::LiveLeaves {
                live: old.live,
                latest_expiry: old.latest_expiry,
            });
        }
        let since = state.issuing_since.unwrap_or(now);
        let settle = RETIRE_SETTLE.as_secs() as i64;
        if now - since < settle {
            return Err(RotationError::Settling {
                ago: (now - since).max(0) as u64,
                wait: (settle - (now - since)).max(1) as u64,
            });
        }
    }
    let anchors_path = dir.join(ca::TRUST_ANCHORS_FILE);
    let anchors = certs(&anchors_path, &read(&anchors_path)?)?;
    let keep: Vec<&Vec<u8>> = anchors
        .iter()
        .filter(|a| ca::fingerprint(a) == state.new_anchor)
        .collect();
    if keep.is_empty() {
        return Err(RotationError::Invalid {
            path: anchors_path,
            reason: format!("the new anchor {} is not in the bundle", state.new_anchor),
        });
    }
    let bundle: String = keep.iter().map(|a| pem(a)).collect();
    // The control plane must load the result.
    let (issuer_path, key_path) = (
        dir.join(ca::ISSUER_CERT_FILE),
        dir.join(ca::ISSUER_KEY_FILE),
    );
    Ca::from_pem(
        (&anchors_path, bundle.clone()),
        (&issuer_path, &read(&issuer_path)?),
        (&key_path, &read(&key_path)?),
        ca::DEFAULT_CERT_LIFETIME,
    )?;
    let bundle_copy = dir
        .join(RETIRED_DIR)
        .join(state.started.to_string())
        .join(format!("{}.bundle", ca::TRUST_ANCHORS_FILE));
    if let Some(parent) = bundle_copy.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::copy(&anchors_path, &bundle_copy).map_err(io(&bundle_copy))?;
    write_atomic(&anchors_path, bundle.as_bytes(), false)?;
    state.stage = Stage::Complete;
    state.completed = Some(now);
    write_state(dir, &state)?;
    Ok(done(dir, &state))
}

/// Live leaves per anchor fingerprint, summed over every ledger.
pub fn live_leaves(ledgers: &[LedgerFile], now: i64) -> BTreeMap<String, LeafCount> {
    let mut out: BTreeMap<String, LeafCount> = BTreeMap::new();
    for l in ledgers {
        for (anchor, expiries) in &l.anchors {
            let c = LeafCount::of(expiries, now);
            let e = out.entry(anchor.clone()).or_default();
            *e = e.merge(c);
        }
    }
    out
}

/// One anchor as status shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnchorStatus {
    #[serde(flatten)]
    pub cert: CertInfo,
    /// `current` (no rotation running), `old` or `new` (during a rotation).
    pub role: String,
    /// Live leaves issued under this anchor, and when the last of them expires (Unix seconds).
    pub live_leaves: u64,
    pub latest_leaf_expiry: Option<i64>,
}

/// What `weft identity status` and `GET /v1/identity/status` show.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// The CA directory (`null` for an ephemeral CA).
    pub dir: Option<String>,
    pub stage: Stage,
    /// What the operator runs next.
    pub next_step: String,
    pub anchors: Vec<AnchorStatus>,
    pub issuer: CertInfo,
    /// Fingerprint of the anchor the issuer chains to.
    pub issuer_anchor: String,
    /// The issuer prepared by `bundle`, waiting for `issue`.
    pub prepared_issuer: Option<CertInfo>,
    pub rotation: Option<RotationState>,
    /// Leaves issued under anchors that are not in the bundle (should be none).
    pub leaves_under_unknown_anchors: u64,
    /// One entry per control plane that recorded issuance from this directory.
    pub control_planes: Vec<ControlPlaneStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlPlaneStatus {
    pub instance: String,
    /// The anchor it issued from when it last wrote its ledger.
    pub issuing_anchor: String,
    pub updated: i64,
}

/// One entry per ledger.
pub fn control_planes(ledgers: &[LedgerFile]) -> Vec<ControlPlaneStatus> {
    ledgers
        .iter()
        .map(|l| ControlPlaneStatus {
            instance: l.instance.clone(),
            issuing_anchor: l.issuing_anchor.clone(),
            updated: l.updated,
        })
        .collect()
}

/// Status of `ca` (what a control plane loaded, or what `dir` holds) with these leaves.
pub fn status_of(
    ca: &Ca,
    dir: Option<&Path>,
    state: Option<RotationState>,
    leaves: &BTreeMap<String, LeafCount>,
    control_planes: Vec<ControlPlaneStatus>,
) -> Status {
    let stage = state.as_ref().map_or(Stage::None, |s| s.stage);
    let rotating = matches!(stage, Stage::Bundle | Stage::Issue);
    let anchors: Vec<AnchorStatus> = ca
        .anchors()
        .iter()
        .map(|a| {
            let role = match &state {
                Some(s) if rotating && s.new_anchor == a.fingerprint => "new",
                Some(_) if rotating => "old",
                _ => "current",
            };
            let c = leaves.get(&a.fingerprint).copied().unwrap_or_default();
            AnchorStatus {
                cert: a.clone(),
                role: role.into(),
                live_leaves: c.live,
                latest_leaf_expiry: (c.live > 0).then_some(c.latest_expiry),
            }
        })
        .collect();
    let unknown = leaves
        .iter()
        .filter(|(fp, _)| !ca.anchors().iter().any(|a| &a.fingerprint == *fp))
        .map(|(_, c)| c.live)
        .sum();
    let prepared_issuer = dir.and_then(|d| {
        let path = d.join(NEXT_DIR).join(ca::ISSUER_CERT_FILE);
        let text = std::fs::read_to_string(path).ok()?;
        let der = ca::pem_certificates(text.as_bytes())
            .ok()?
            .into_iter()
            .next()?;
        ca::cert_info(&der).ok()
    });
    let next_step = match stage {
        Stage::None | Stage::Complete => {
            "none (to rotate the trust anchor: weft identity rotate --stage bundle)".to_string()
        }
        Stage::Bundle => "wait until every proxy trusts the new anchor \
             (identity_trust_anchors = 2 on each), then: weft identity rotate --stage issue"
            .to_string(),
        Stage::Issue => {
            let old: u64 = anchors
                .iter()
                .filter(|a| a.role == "old")
                .map(|a| a.live_leaves)
                .sum();
            if old > 0 {
                format!(
                    "wait until the {old} live certificate(s) under the old anchor expire, then: \
                     weft identity rotate --stage retire"
                )
            } else {
                "weft identity rotate --stage retire".to_string()
            }
        }
    };
    Status {
        dir: dir.map(|d| d.display().to_string()),
        stage,
        next_step,
        anchors,
        issuer: ca.issuer().clone(),
        issuer_anchor: ca.issuer_anchor().to_string(),
        prepared_issuer,
        rotation: state,
        leaves_under_unknown_anchors: unknown,
        control_planes,
    }
}

/// The status of a CA directory, from its files and every control plane's ledger in it.
pub fn status(dir: &Path) -> Result<Status, RotationError> {
    let ca = Ca::load(dir, ca::DEFAULT_CERT_LIFETIME)?;
    let state = read_state(dir)?;
    let ledgers = ca_reload::read_ledgers(dir).map_err(RotationError::Ledgers)?;
    let leaves = live_leaves(&ledgers, unix_now());
    let cps = control_planes(&ledgers);
    Ok(status_of(&ca, Some(dir), state, &leaves, cps))
}

/// Readable text of a status.
pub fn render_text(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let short = |fp: &str| fp.chars().take(7 + 16).collect::<String>();
    if let Some(dir) = &s.dir {
        let _ = writeln!(out, "CA directory: {dir}");
    } else {
        let _ = writeln!(out, "CA: ephemeral (in memory)");
    }
    let _ = writeln!(out, "rotation stage: {}", s.stage.as_str());
    let _ = writeln!(out, "next step: {}", s.next_step);
    let _ = writeln!(out, "trust anchors ({}):", s.anchors.len());
    for a in &s.anchors {
        let expiry = a
            .latest_leaf_expiry
            .map(|t| format!(", last expires {}", unix_to_rfc3339(t)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  [{}] {}  {}  expires {}  live leaves: {}{expiry}",
            a.role,
            a.cert.subject,
            a.cert.fingerprint,
            unix_to_rfc3339(a.cert.not_after),
            a.live_leaves,
        );
    }
    let _ = writeln!(
        out,
        "issuer: {}  {}  expires {}  (chains to {})",
        s.issuer.subject,
        s.issuer.fingerprint,
        unix_to_rfc3339(s.issuer.not_after),
        short(&s.issuer_anchor)
    );
    if let Some(p) = &s.prepared_issuer {
        let _ = writeln!(
            out,
            "prepared issuer (used after --stage issue): {}  {}",
            p.subject, p.fingerprint
        );
    }
    if s.leaves_under_unknown_anchors > 0 {
        let _ = writeln!(
            out,
            "WARNING: {} live leaves chain to anchors no longer in the bundle",
            s.leaves_under_unknown_anchors
        );
    }
    for cp in &s.control_planes {
        let _ = writeln!(
            out,
            "control plane {}: issuing under {} (as of {})",
            cp.instance,
            short(&cp.issuing_anchor),
            unix_to_rfc3339(cp.updated)
        );
    }
    out
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;
