//! Tap: the control plane's side of Linkerd's `Tap/Observe` API. It owns the tap identity's
//! certificate (issued by this control plane's own CA at start, key in memory, renewed before it
//! expires or when the CA changes), the client that dials a workload's tap server with it
//! ([`client`]), and the translation between `GET /v1/tap/...` and the proxy's messages
//! ([`event`]: the query, the `ObserveRequest`, the NDJSON events, the `max_rps` limiter).

pub mod client;
pub mod event;

use std::sync::Arc;

use tokio::sync::watch;

use crate::ca::Ca;
pub use crate::own_cert::{issue, OwnCert, OwnIdentity};
use crate::resource::{self, Defaults};

/// The tap identity (`tap.<ns>.serviceaccount...`, SPIFFE `sa/tap`), issued now and renewed by
/// the returned task until `shutdown` changes.
pub fn start(
    defaults: &Defaults,
    ca: watch::Receiver<Arc<Ca>>,
    shutdown: watch::Receiver<bool>,
) -> (OwnIdentity, impl std::future::Future<Output = ()>) {
    let spiffe = format!(
        "spiffe://{}/ns/{}/sa/tap",
        defaults.trust_domain, defaults.control_namespace
    );
    crate::own_cert::start(
        resource::tap_identity(defaults),
        spiffe,
        "tap",
        ca,
        shutdown,
    )
}

#[cfg(test)]
#[path = "tap_tests.rs"]
mod tests;
