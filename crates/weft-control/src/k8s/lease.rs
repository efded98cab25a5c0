//! Leader election among control-plane replicas on Kubernetes: a `coordination.k8s.io/v1`
//! Lease ([`LEASE_NAME`] in the control namespace), held as client-go's leader election holds
//! one, publishing the same [`Leadership`] the etcd election does (`leader.rs`).
//!
//! A replica takes the Lease when it has no holder, or when its record (holder, renew time)
//! has not changed for a whole [`LEASE_DURATION`] as measured on this replica's own clock (so
//! clock skew between replicas does not matter). Writes are replaces carrying the
//! `resourceVersion` read, so of two replicas racing, one gets `409 Conflict` and stays a
//! follower. The leader renews every [`RENEW`] and stops acting [`SAFETY`] before the Lease
//! could be taken over after its last good renewal; on shutdown it gives the Lease up (no
//! holder), so another replica takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::Utc;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::leader::{publish, Leadership};

/// The Lease's name (in the control namespace).
pub const LEASE_NAME: &str = "weft-control-leader";
/// How long a holder that stopped renewing stays the holder.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews, and a follower looks again.
const RENEW: Duration = Duration::from_secs(5);
/// How much earlier than [`LEASE_DURATION`] a leader that cannot renew stops acting.
const SAFETY: Duration = Duration::from_secs(5);

/// Campaigns for the Lease as `instance` until `shutdown` changes.
pub fn start(
    client: kube::Client,
    namespace: &str,
    instance: String,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<Leadership>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(Leadership::default());
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let task = tokio::spawn(async move {
        let mut election = Election {
            api,
            instance,
            tx,
            observed: None,
            held: None,
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
    api: Api<Lease>,
    instance: String,
    tx: watch::Sender<Leadership>,
    /// The last record seen (holder, renew time) and when it was first seen as it is.
    observed: Option<((String, String), Instant)>,
    /// While leading: the Lease as last written, and when that write was asked for.
    held: Option<(Lease, Instant)>,
}

fn record(lease: &Lease) -> (String, String) {
    let spec = lease.spec.as_ref();
    let holder = spec.and_then(|s| s.holder_identity.clone());
    let renew = spec
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.to_rfc3339());
    (holder.unwrap_or_default(), renew.unwrap_or_default())
}

impl Election {
    async fn run(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(()) => {}
                Err(e) => tracing::debug!(error = %e, "leader Lease: API call failed"),
            }
            // A leader whose renewals fail stops acting before anyone can take over.
            if let Some((_, asked)) = &self.held {
                if Instant::now() > *asked + LEASE_DURATION - SAFETY {
                    tracing::warn!("leader Lease not renewed in time; stepping down");
                    self.held = None;
                    publish(&self.tx, &self.instance, "");
                }
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Utc::now());
        let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(&self.instance);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.instance.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: match previous {
                Some(p) if ours => p.acquire_time.clone(),
                _ => Some(now.clone()),
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours || previous.is_none() {
                transitions
            } else {
                transitions + 1
            }),
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<(), kube::Error> {
        let asked = Instant::now();
        let Some(lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(self.spec(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(written) => {
                    self.lead(written, asked);
                    Ok(())
                }
                // Another replica created it first.
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            };
        };
        let rec = record(&lease);
        let changed = self.observed.as_ref().is_none_or(|(r, _)| *r != rec);
        if changed {
            self.observed = Some((rec.clone(), asked));
        }
        let (holder, _) = &rec;
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|(_, seen)| asked.duration_since(*seen) > LEASE_DURATION);
        if !holder.is_empty() && *holder != self.instance && !expired {
            self.held = None;
            publish(&self.tx, &self.instance, holder);
            return Ok(());
        }
        let mut next = lease.clone();
        next.spec = Some(self.spec(lease.spec.as_ref()));
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.lead(written, asked);
                Ok(())
            }
            // Someone else wrote it since we read it: look again next round.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn lead(&mut self, written: Lease, asked: Instant) {
        self.observed = Some((record(&written), asked));
        self.held = Some((written, asked));
        publish(&self.tx, &self.instance, &self.instance.clone());
    }

    /// Gives the Lease up (shutdown): no holder, so a follower takes it at its next look. The
    /// Lease is read again first: a renewal cut short by the shutdown may have written it.
    async fn resign(&mut self) {
        if self.held.take().is_some() {
            let release = async {
                let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
                    return Ok(());
                };
                let spec = lease.spec.get_or_insert_with(Default::default);
                if spec.holder_identity.as_deref() != Some(&self.instance) {
                    return Ok(());
                }
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                self.api
                    .replace(LEASE_NAME, &PostParams::default(), &lease)
                    .await
                    .map(drop)
            };
            match tokio::time::timeout(Duration::from_secs(2), release).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "cannot give the leader Lease up"),
                Err(_) => tracing::debug!("giving the leader Lease up timed out"),
            }
        }
        publish(&self.tx, &self.instance, "");
    }
}
