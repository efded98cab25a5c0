//! The running control plane's side of trust-anchor rotation: it follows its CA directory
//! (a new bundle, a new issuer) without a restart, and keeps a ledger of the leaves it issued
//! per anchor so `retire` knows when the old anchor is no longer needed.
//!
//! - [`run`] polls `trust-anchors.pem`, `issuer.crt` and `issuer.key` every
//!   [`CA_RELOAD_INTERVAL`]. A change is loaded once the files have stayed the same for one more
//!   poll (so a reader never pairs a new key with an old certificate mid-rotation), checked exactly
//!   like at start, and published to `Identity.Certify` and the API on a `watch` channel. A
//!   directory that does not load keeps the current CA in force (logged once per bad content).
//! - [`Ledger`]: live leaves per anchor fingerprint, as a multiset of expiry seconds (expired
//!   ones are dropped). Written to `DIR/issued/<instance>.json` whenever it changed; every control
//!   plane has its own file, and a restarted one starts a new file while the old one still counts
//!   until its leaves expire. Without a CA directory the ledger lives only in memory (status).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ca::{self, Ca};
use crate::clock::unix_now;
use crate::files::write_atomic;

/// How often the CA directory is checked for changes (and the ledger written when it changed).
pub const CA_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Ledgers live in `DIR/issued/`.
pub const LEDGER_DIR: &str = "issued";

/// Live leaves under one anchor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafCount {
    pub live: u64,
    /// Unix seconds; meaningful only when `live > 0`.
    pub latest_expiry: i64,
}

impl LeafCount {
    /// The leaves of an `[expiry, count]` list still valid at `now`.
    pub fn of(expiries: &[(i64, u64)], now: i64) -> LeafCount {
        expiries
            .iter()
            .filter(|(t, _)| *t > now)
            .fold(LeafCount::default(), |acc, (t, n)| LeafCount {
                live: acc.live + n,
                latest_expiry: acc.latest_expiry.max(*t),
            })
    }

    pub fn merge(self, other: LeafCount) -> LeafCount {
        LeafCount {
            live: self.live + other.live,
            latest_expiry: self.latest_expiry.max(other.latest_expiry),
        }
    }
}

/// One control plane's ledger file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerFile {
    /// `cp-<pid>-<start unix>`.
    pub instance: String,
    /// Fingerprint of the anchor it issued under when it wrote this.
    pub issuing_anchor: String,
    /// Unix seconds of this write.
    pub updated: i64,
    /// Anchor fingerprint → `[expiry unix seconds, leaves]`.
    pub anchors: BTreeMap<String, Vec<(i64, u64)>>,
}

/// The leaves this control plane issued, per anchor. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ledger {
    inner: Arc<Mutex<LedgerInner>>,
}

#[derive(Debug)]
struct LedgerInner {
    instance: String,
    issuing_anchor: String,
    anchors: BTreeMap<String, BTreeMap<i64, u64>>,
    dirty: bool,
}

impl Ledger {
    pub fn new(issuing_anchor: &str) -> Ledger {
        Ledger {
            inner: Arc::new(Mutex::new(LedgerInner {
                instance: format!("cp-{}-{}", std::process::id(), unix_now()),
                issuing_anchor: issuing_anchor.to_string(),
                anchors: BTreeMap::new(),
                dirty: true,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A leaf under `anchor` was issued, valid until `expiry`.
    pub fn record(&self, anchor: &str, expiry: SystemTime) {
        let t = expiry
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut l = self.lock();
        *l.anchors
            .entry(anchor.to_string())
            .or_default()
            .entry(t)
            .or_default() += 1;
        l.dirty = true;
    }

    /// Issuance switched to `anchor`.
    pub fn set_issuing(&self, anchor: &str) {
        let mut l = self.lock();
        l.issuing_anchor = anchor.to_string();
        l.dirty = true;
    }

    pub fn instance(&self) -> String {
        self.lock().instance.clone()
    }

    /// Drops expired leaves and returns what is left, as written to disk.
    pub fn snapshot(&self, now: i64) -> LedgerFile {
        let mut l = self.lock();
        for expiries in l.anchors.values_mut() {
            expiries.retain(|t, _| *t > now);
        }
        l.anchors.retain(|_, e| !e.is_empty());
        LedgerFile {
            instance: l.instance.clone(),
            issuing_anchor: l.issuing_anchor.clone(),
            updated: now,
            anchors: l
                .anchors
                .iter()
                .map(|(a, e)| (a.clone(), e.iter().map(|(t, n)| (*t, *n)).collect()))
                .collect(),
        }
    }

    /// Live leaves per anchor now.
    pub fn live(&self, now: i64) -> BTreeMap<String, LeafCount> {
        self.snapshot(now)
            .anchors
            .iter()
            .map(|(a, e)| (a.clone(), LeafCount::of(e, now)))
            .collect()
    }

    /// Writes the ledger into `dir/issued/` if it changed since the last write.
    pub fn flush(&self, dir: &Path) {
        if !std::mem::take(&mut self.lock().dirty) {
            return;
        }
        let file = self.snapshot(unix_now());
        let ledger_dir = dir.join(LEDGER_DIR);
        let path = ledger_dir.join(format!("{}.json", file.instance));
        let written = std::fs::create_dir_all(&ledger_dir)
            .map_err(|e| format!("{}: {e}", ledger_dir.display()))
            .and_then(|()| {
                let text = serde_json::to_string(&file).unwrap_or_default();
                write_atomic(&path, text.as_bytes(), false).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            // Retried on the next change; `retire` refuses while nothing is recorded.
            self.lock().dirty = true;
            tracing::warn!(error = %e, "cannot write the ledger of issued certificates");
        }
    }
}

/// Every ledger file in `dir/issued/` (unreadable ones are skipped: they are either being
/// replaced, which is atomic, or not ours).
pub fn read_ledgers(dir: &Path) -> Vec<LedgerFile> {
    let Ok(entries) = std::fs::read_dir(dir.join(LEDGER_DIR)) else {
        return Vec::new();
    };
    let mut out: Vec<LedgerFile> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect();
    out.sort_by(|a, b| a.instance.cmp(&b.instance));
    out
}

/// Removes other control planes' ledgers whose leaves have all expired (they can no longer
/// hold an anchor back). Called once at start.
pub fn prune_ledgers(dir: &Path, own_instance: &str) {
    let now = unix_now();
    let Ok(entries) = std::fs::read_dir(dir.join(LEDGER_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let Ok(file) = serde_json::from_str::<LedgerFile>(&text) else {
            continue;
        };
        let live = file
            .anchors
            .values()
            .any(|e| LeafCount::of(e, now).live > 0);
        if file.instance != own_instance && !live {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The three files a control plane loads, with a digest of their contents.
struct Snapshot {
    digest: Vec<u8>,
    anchors: String,
    issuer: String,
    key: String,
}

fn read_files(dir: &Path) -> Result<Snapshot, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let (anchors, issuer, key) = (
        read(ca::TRUST_ANCHORS_FILE)?,
        read(ca::ISSUER_CERT_FILE)?,
        read(ca::ISSUER_KEY_FILE)?,
    );
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [&anchors, &issuer, &key] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    Ok(Snapshot {
        digest: ctx.finish().as_ref().to_vec(),
        anchors,
        issuer,
        key,
    })
}

/// Follows `dir` until `shutdown` changes: publishes every CA that loads from a stable change on
/// `tx`, and writes the ledger. Runs only with `--identity-dir`.
pub async fn run(
    dir: PathBuf,
    lifetime: Duration,
    tx: watch::Sender<Arc<Ca>>,
    ledger: Ledger,
    mut shutdown: watch::Receiver<bool>,
) {
    prune_ledgers(&dir, &ledger.instance());
    // What is in force is what `start` loaded from these files (a change in between is seen as
    // a change on the first poll).
    let mut loaded = read_files(&dir).map(|s| s.digest).unwrap_or_default();
    let mut pending: Option<Vec<u8>> = None;
    let mut reported: Option<Vec<u8>> = None;
    let mut tick = tokio::time::interval(CA_RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        match read_files(&dir) {
            Ok(snap) if snap.digest == loaded => pending = None,
            Ok(snap) if pending.as_deref() != Some(&snap.digest[..]) => {
                // Changed: wait one poll for the writer to finish.
                pending = Some(snap.digest);
            }
            Ok(snap) => {
                pending = None;
                let anchors_path = dir.join(ca::TRUST_ANCHORS_FILE);
                let issuer_path = dir.join(ca::ISSUER_CERT_FILE);
                let key_path = dir.join(ca::ISSUER_KEY_FILE);
                match Ca::from_pem(
                    (&anchors_path, snap.anchors),
                    (&issuer_path, &snap.issuer),
                    (&key_path, &snap.key),
                    lifetime,
                ) {
                    Ok(ca) => {
                        tracing::info!(
                            issuer = %ca.issuer().fingerprint,
                            issuer_anchor = %ca.issuer_anchor(),
                            anchors = ca.anchors().len(),
                            "identity directory changed: issuing from the CA it now holds"
                        );
                        ledger.set_issuing(ca.issuer_anchor());
                        tx.send_replace(Arc::new(ca));
                        loaded = snap.digest;
                        reported = None;
                    }
                    Err(e) => {
                        if reported.as_deref() != Some(&snap.digest[..]) {
                            tracing::error!(error = %e, "identity directory changed but does not load; the current CA stays in force");
                            reported = Some(snap.digest);
                        }
                    }
                }
            }
            Err(e) => {
                let digest = e.as_bytes().to_vec();
                if reported.as_deref() != Some(&digest[..]) {
                    tracing::error!(error = %e, "cannot read the identity directory; the current CA stays in force");
                    reported = Some(digest);
                }
            }
        }
        ledger.flush(&dir);
    }
    ledger.flush(&dir);
}
