//! Leader election among control-plane replicas that share an etcd store: what must happen
//! once (pruning the issuance records of control planes long gone, writing resource status
//! into the store) is done by the replica holding `PREFIX/leader`.
//!
//! A replica campaigns by creating the key (a transaction that succeeds only if it does not
//! exist) attached to a lease of [`LEASE_TTL`], and refreshes the lease every third of it.
//! It stops acting as leader as soon as a refresh fails, and at the latest [`LEASE_TTL`] minus
//! [`SAFETY`] after its last good refresh, before the lease can have expired on etcd's side and
//! another replica can have won: two replicas never act as leader at once, as long as clocks
//! run at the same rate. A follower watches the key and campaigns when it is deleted (its
//! holder stopped and revoked the lease, or the lease expired). On shutdown the leader revokes
//! its lease, so another replica takes over at once.
//!
//! With the Kubernetes store a `coordination.k8s.io/v1` Lease plays the key's part
//! (`k8s::lease`), publishing the same [`Leadership`].
//!
//! With the file store there is no election: each control plane is its own leader (replicas
//! sharing a directory do only idempotent work).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::etcd::proto::EVENT_DELETE;
use crate::etcd::{Client, Error, Target};

/// The leader key, under the store's prefix.
pub const LEADER_KEY: &str = "leader";
/// The lease a leader holds: how long a replica that died without revoking it stays leader.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How much earlier than the lease a leader stops acting after its last good refresh.
const SAFETY: Duration = Duration::from_secs(2);
/// Pause after a failed call before the next attempt.
const RETRY: Duration = Duration::from_millis(500);

/// Who leads, as this replica sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Leadership {
    /// The instance name of the leader (empty while unknown).
    pub leader: String,
    /// Whether this replica is the leader now.
    pub this_replica: bool,
}

/// The leadership of a control plane that is always its own leader (file store).
pub fn alone(instance: &str) -> watch::Receiver<Leadership> {
    let (tx, rx) = watch::channel(Leadership {
        leader: instance.to_string(),
        this_replica: true,
    });
    // Nothing ever changes it; the receiver keeps the last value when the sender is gone.
    drop(tx);
    rx
}

/// Publishes `leader` as the leader `instance` sees (empty: none), logging when this replica
/// gains or loses leadership. Shared with the Kubernetes Lease (`k8s::lease`).
pub(crate) fn publish(tx: &watch::Sender<Leadership>, instance: &str, leader: &str) {
    let now = Leadership {
        leader: leader.to_string(),
        this_replica: leader == instance,
    };
    let was = tx.borrow().this_replica;
    if was != now.this_replica {
        if now.this_replica {
            tracing::info!(%instance, "this replica is now the leader");
        } else {
            tracing::info!(%instance, leader = %now.leader, "this replica is no longer the leader");
        }
    }
    tx.send_if_modified(|l| {
        let changed = *l != now;
        *l = now;
        changed
    });
}

/// Campaigns for `PREFIX/leader` as `instance` until `shutdown` changes.
pub fn start(
    client: Client,
    target: &Target,
    instance: String,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<Leadership>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Leadership::default());
    let key = target.key(LEADER_KEY);
    let task = tokio::spawn(async move {
        let mut election = Election {
            client,
            key,
            instance,
            tx,
            lease: 0,
        };
        tokio::select! {
            _ = election.run() => {}
            _ = shutdown.changed() => {}
        }
        election.resign().await;
    });
    (rx, task)
}

struct Election {
    client: Client,
    key: Vec<u8>,
    instance: String,
    tx: watch::Sender<Leadership>,
    /// The lease this replica holds the key with (0: none).
    lease: i64,
}

impl Election {
    async fn run(&mut self) {
        loop {
            match self.campaign().await {
                Ok(true) => self.lead().await,
                Ok(false) => self.follow().await,
                Err(e) => {
                    tracing::debug!(error = %e, "leader election: etcd call failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    fn publish(&self, leader: &str) {
        publish(&self.tx, &self.instance, leader);
    }

    /// Creates the key with a fresh lease; `false` when another replica holds it.
    async fn campaign(&mut self) -> Result<bool, Error> {
        let (lease, _) = self.client.grant(LEASE_TTL).await?;
        let won = self
            .client
            .swap_leased(&self.key, 0, Some(self.instance.as_bytes()), lease)
            .await;
        match won {
            Ok(Some(_)) => {
                self.lease = lease;
                Ok(true)
            }
            // Lost, or unknown: the lease holds nothing (or expires by itself).
            lost => {
                let client = self.client.clone();
                tokio::spawn(async move {
                    let _ = client.revoke(lease).await;
                });
                lost.map(|_| false)
            }
        }
    }

    /// Holds the key until a refresh fails or the lease runs out.
    async fn lead(&mut self) {
        let mut refreshed = Instant::now();
        publish(&self.tx, &self.instance, &self.instance);
        loop {
            tokio::time::sleep(LEASE_TTL / 3).await;
            let deadline = refreshed + LEASE_TTL - SAFETY;
            let asked = Instant::now();
            match tokio::time::timeout_at(deadline, self.client.keep_alive(self.lease)).await {
                Ok(Ok(ttl)) if ttl > 0 => refreshed = asked,
                Ok(Ok(_)) => {
                    tracing::warn!("leader lease expired before it was refreshed");
                    break;
                }
                Ok(Err(e)) if Instant::now() + RETRY < deadline => {
                    tracing::debug!(error = %e, "leader lease refresh failed; retrying");
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot refresh the leader lease; stepping down");
                    break;
                }
                Err(_) => {
                    tracing::warn!("leader lease not refreshed in time; stepping down");
                    break;
                }
            }
        }
        // The old lease may still be alive; a new one is taken for the next campaign, and the
        // old one is revoked when etcd answers again (or expires by itself).
        self.publish("");
        let old = std::mem::take(&mut self.lease);
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = client.revoke(old).await;
        });
    }

    /// Watches the key until it is deleted.
    async fn follow(&mut self) {
        let held = match self.client.get(&self.key).await {
            Ok(Some(kv)) => kv,
            // Gone already: campaign again.
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "leader election: cannot read the leader key");
                tokio::time::sleep(RETRY).await;
                return;
            }
        };
        self.publish(&String::from_utf8_lossy(&held.value));
        let mut watch = match self.client.watch(&self.key, held.mod_revision + 1).await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(error = %e, "leader election: cannot watch the leader key");
                tokio::time::sleep(RETRY).await;
                return;
            }
        };
        loop {
            match watch.next().await {
                Ok(r) => {
                    let exact = |k: &[u8]| k == self.key.as_slice();
                    if r.events.iter().any(|e| {
                        e.r#type == EVENT_DELETE && e.kv.as_ref().is_some_and(|kv| exact(&kv.key))
                    }) {
                        self.publish("");
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "leader election: the watch ended");
                    tokio::time::sleep(RETRY).await;
                    return;
                }
            }
        }
    }

    /// Gives the key up (shutdown).
    async fn resign(&mut self) {
        if self.lease != 0 {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), self.client.revoke(self.lease)).await;
        }
        self.publish("");
    }
}
