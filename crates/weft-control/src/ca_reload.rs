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
//!   ones are dropped). Written ([`keep_records`]) whenever it changed to `DIR/issued/<instance>.json`,
//!   with the etcd store to `PREFIX/identity/issued/<instance>`, with the Kubernetes store to
//!   the ConfigMap `weft-issued-<instance>` in the control namespace ([`Records`],
//!   `k8s::records`), so replicas on other machines see each other's leaves; every control
//!   plane has its own record, and a restarted one starts a new one while the old one still
//!   counts until its leaves expire. Records whose leaves have all expired are pruned (file
//!   store: at start; etcd and Kubernetes: by the leader, [`crate::leader`]). Without a CA
//!   directory (and not on Kubernetes) the ledger lives only in memory (status).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ca::{self, Ca};
use crate::clock::unix_now;
use crate::etcd::{Client, Target};
use crate::files::{write_atomic, WriteError};
use crate::k8s::records::ConfigMaps;
use crate::leader::Leadership;

/// How often the CA directory is checked for changes (and the ledger written when it changed).
pub const CA_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Ledgers live in `DIR/issued/`.
pub const LEDGER_DIR: &str = "issued";
/// With the etcd store: `DIR/issued/store` holds the store's address, so `weft identity`
/// reads the ledgers from there.
pub const STORE_POINTER: &str = "store";
/// With the etcd store, ledgers are the keys under `PREFIX/identity/issued/`.
pub const ETCD_LEDGERS: &str = "identity/issued/";
/// How often the leader prunes the records of control planes whose leaves have all expired.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Where the ledgers of issued leaves are kept.
#[derive(Clone)]
pub enum Records {
    /// `DIR/issued/<instance>.json`.
    Dir(PathBuf),
    /// `PREFIX/identity/issued/<instance>` in the etcd store.
    Etcd { client: Client, target: Target },
    /// The ConfigMap `weft-issued-<instance>` in the control namespace.
    Kubernetes(ConfigMaps),
}

impl Records {
    /// The etcd records, and `dir/issued/store` naming them for `weft identity`.
    pub fn etcd(dir: &Path, client: Client, target: Target) -> Result<Records, WriteError> {
        let ledger_dir = dir.join(LEDGER_DIR);
        std::fs::create_dir_all(&ledger_dir).map_err(|source| WriteError {
            path: ledger_dir.clone(),
            source,
        })?;
        let pointer = ledger_dir.join(STORE_POINTER);
        write_atomic(&pointer, format!("{target}\n").as_bytes(), false)?;
        Ok(Records::Etcd { client, target })
    }

    /// Whether other replicas keep their records here too, so that pruning them is the
    /// leader's work (a directory is pruned by each control plane at start).
    fn shared(&self) -> bool {
        !matches!(self, Records::Dir(_))
    }

    fn etcd_key(target: &Target, instance: &str) -> Vec<u8> {
        target.key(&format!("{ETCD_LEDGERS}{instance}"))
    }

    /// Every control plane's ledger, sorted by instance.
    pub async fn read_all(&self) -> Result<Vec<LedgerFile>, String> {
        let mut out = match self {
            Records::Dir(dir) => read_dir_ledgers(dir),
            Records::Etcd { client, target } => {
                let (kvs, _) = client
                    .list(&target.key(ETCD_LEDGERS))
                    .await
                    .map_err(|e| format!("reading the issuance records: {e}"))?;
                kvs.iter()
                    .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
                    .collect()
            }
            Records::Kubernetes(maps) => maps
                .list()
                .await
                .map_err(|e| format!("reading the issuance records: {e}"))?
                .into_iter()
                .map(|(file, _)| file)
                .collect(),
        };
        out.sort_by(|a: &LedgerFile, b| a.instance.cmp(&b.instance));
        Ok(out)
    }

    async fn write(&self, file: &LedgerFile) -> Result<(), String> {
        let text = serde_json::to_string(file).unwrap_or_default();
        match self {
            Records::Dir(dir) => {
                let ledger_dir = dir.join(LEDGER_DIR);
                let path = ledger_dir.join(format!("{}.json", file.instance));
                std::fs::create_dir_all(&ledger_dir)
                    .map_err(|e| format!("{}: {e}", ledger_dir.display()))?;
                write_atomic(&path, text.as_bytes(), false).map_err(|e| e.to_string())
            }
            Records::Etcd { client, target } => client
                .put(&Records::etcd_key(target, &file.instance), text.as_bytes())
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Records::Kubernetes(maps) => maps.write(file).await.map_err(|e| e.to_string()),
        }
    }

    /// Removes other control planes' records whose leaves have all expired (they can no
    /// longer hold an anchor back).
    async fn prune(&self, own_instance: &str) {
        let now = unix_now();
        let spent = |f: &LedgerFile| {
            f.instance != own_instance
                && !f.anchors.values().any(|e| LeafCount::of(e, now).live > 0)
        };
        match self {
            Records::Dir(dir) => prune_ledgers(dir, own_instance),
            Records::Etcd { client, target } => {
                let Ok((kvs, _)) = client.list(&target.key(ETCD_LEDGERS)).await else {
                    return;
                };
                for kv in kvs {
                    let Ok(file) = serde_json::from_slice::<LedgerFile>(&kv.value) else {
                        continue;
                    };
                    if spent(&file) {
                        // Only if nobody rewrote it meanwhile (a restarted instance never
                        // reuses a name, but be exact).
                        let _ = client.swap(&kv.key, kv.mod_revision, None).await;
                    }
                }
            }
            Records::Kubernetes(maps) => {
                let Ok(files) = maps.list().await else {
                    return;
                };
                for (file, version) in files.iter().filter(|(f, _)| spent(f)) {
                    if let Err(e) = maps.delete(&file.instance, version).await {
                        tracing::debug!(error = %e, instance = %file.instance, "cannot prune an issuance record");
                    }
                }
            }
        }
    }
}

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

/// `cp-<host>-<pid>-<start unix seconds>-<random>`: unique among replicas on several machines
/// (and in one process, as tests run them), and new for each start (a restarted control
/// plane's old leaves keep counting under its old name).
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let host = if host.is_empty() { "host".into() } else { host };
    let mut random = [0u8; 3];
    ca::fill_random(&mut random);
    let random: String = random.iter().map(|b| format!("{b:02x}")).collect();
    format!("cp-{host}-{}-{}-{random}", std::process::id(), unix_now())
}

/// One control plane's ledger file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerFile {
    /// See [`instance_name`].
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
                instance: instance_name(),
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

    /// Writes the ledger to `records` if it changed since the last write.
    pub async fn flush(&self, records: &Records) {
        if !std::mem::take(&mut self.lock().dirty) {
            return;
        }
        let file = self.snapshot(unix_now());
        if let Err(e) = records.write(&file).await {
            // Retried on the next tick; `retire` refuses while nothing is recorded.
            self.lock().dirty = true;
            tracing::warn!(error = %e, "cannot write the ledger of issued certificates");
        }
    }
}

/// Writes the ledger every [`CA_RELOAD_INTERVAL`] when it changed, and prunes spent records:
/// at start in a directory, every [`PRUNE_INTERVAL`] while this replica leads where the
/// records are shared (etcd, Kubernetes).
pub async fn keep_records(
    ledger: Ledger,
    records: Records,
    mut leader: tokio::sync::watch::Receiver<Leadership>,
    mut shutdown: watch::Receiver<bool>,
) {
    let own = ledger.instance();
    if !records.shared() {
        records.prune(&own).await;
    }
    let mut tick = tokio::time::interval(CA_RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // A new leader prunes at once.
            Ok(()) = leader.changed() => pruned = None,
            _ = shutdown.changed() => break,
        }
        ledger.flush(&records).await;
        let leads = leader.borrow().this_replica;
        if leads && records.shared() && pruned.is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL) {
            records.prune(&own).await;
            pruned = Some(tokio::time::Instant::now());
        }
    }
    ledger.flush(&records).await;
}

/// Every control plane's ledger for the CA in `dir`: from the etcd store `dir/issued/store`
/// names, or the files in `dir/issued/`.
pub fn read_ledgers(dir: &Path) -> Result<Vec<LedgerFile>, String> {
    let pointer = dir.join(LEDGER_DIR).join(STORE_POINTER);
    let Ok(text) = std::fs::read_to_string(&pointer) else {
        return Ok(read_dir_ledgers(dir));
    };
    let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", pointer.display());
    let target = Target::parse(text.trim()).map_err(|e| bad(&e))?;
    let client = Client::new(&target.endpoints).map_err(|e| bad(&e))?;
    let records = Records::Etcd { client, target };
    // Callers are synchronous (the CLI, possibly inside a runtime): one thread, one runtime.
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(records.read_all())
        })
        .join()
        .unwrap_or_else(|_| Err("reading the issuance records panicked".into()))
    })
}

/// The ledger files in `dir/issued/` (unreadable ones are skipped: they are either being
/// replaced, which is atomic, or not ours).
fn read_dir_ledgers(dir: &Path) -> Vec<LedgerFile> {
    let Ok(entries) = std::fs::read_dir(dir.join(LEDGER_DIR)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect()
}

/// Removes other control planes' ledger files whose leaves have all expired.
fn prune_ledgers(dir: &Path, own_instance: &str) {
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
/// `tx` and tells the ledger. Runs only with `--identity-dir`.
pub async fn run(
    dir: PathBuf,
    lifetime: Duration,
    tx: watch::Sender<Arc<Ca>>,
    ledger: Ledger,
    mut shutdown: watch::Receiver<bool>,
) {
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
    }
}
