//! The pod's `/etc/hosts`: every Service with a cluster IP, by name. Services come from the
//! control plane (`GET /v1/services`), the one place that knows the addresses it allocated.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::{RunArgs, HOSTS_REFRESH};
use crate::demo::http;

/// Service names → cluster IPs, for the pod's hosts file.
#[derive(Clone)]
pub struct Hosts {
    api: SocketAddr,
}

impl Hosts {
    pub fn new(args: &RunArgs) -> Hosts {
        Hosts { api: args.api() }
    }

    /// `(namespace, name, cluster IP)` of every Service with a cluster IP (set by the user or
    /// allocated), from the control plane. `None` when it does not answer: the caller keeps
    /// what the pod has.
    async fn services(&self) -> Option<Vec<(String, String, IpAddr)>> {
        let response = http::get(self.api, "/v1/services").await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        let docs: Vec<serde_json::Value> = serde_json::from_slice(response.body()).ok()?;
        Some(docs.iter().filter_map(service_entry).collect())
    }

    pub async fn render(&self, args: &RunArgs, ip: Ipv4Addr) -> String {
        let names = (
            args.namespace.clone(),
            args.cluster_domain.clone(),
            args.name.clone(),
        );
        let services = self.services().await.unwrap_or_else(|| {
            say!(
                "weft run: the control plane API at {} does not list Services yet; the pod's \
                 hosts file names them once it does",
                self.api
            );
            Vec::new()
        });
        hosts_file(&names, ip, &services)
    }

    pub async fn keep_fresh(self, names: (String, String, String), ip: Ipv4Addr, path: PathBuf) {
        let mut last = std::fs::read_to_string(&path).unwrap_or_default();
        loop {
            tokio::time::sleep(HOSTS_REFRESH).await;
            // A control plane that is briefly away does not empty the pod's names.
            let Some(services) = self.services().await else {
                continue;
            };
            let now = hosts_file(&names, ip, &services);
            if now != last {
                // In place (same inode): the bind mount in running processes sees it.
                if let Err(e) = std::fs::write(&path, &now) {
                    tracing::warn!(path = %path.display(), error = %e, "updating the pod's hosts file");
                }
                last = now;
            }
        }
    }
}

fn service_entry(doc: &serde_json::Value) -> Option<(String, String, IpAddr)> {
    let meta = doc.get("metadata")?;
    let name = meta.get("name")?.as_str()?.to_string();
    let ns = meta
        .get("namespace")
        .and_then(|n| n.as_str())
        .unwrap_or("default")
        .to_string();
    let ip = doc.get("spec")?.get("clusterIP")?.as_str()?.parse().ok()?;
    Some((ns, name, ip))
}

/// The pod's `/etc/hosts`: loopback, the pod itself, and every Service by its full name, its
/// `NAME.NS` and `NAME.NS.svc` forms, and its short name when in the pod's namespace.
pub(crate) fn hosts_file(
    (namespace, domain, name): &(String, String, String),
    ip: Ipv4Addr,
    services: &[(String, String, IpAddr)],
) -> String {
    let mut out = format!(
        "# written by weft run; Services come from the control plane\n127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
    );
    let mut services = services.to_vec();
    services.sort();
    services.dedup();
    for (ns, svc, cluster_ip) in services {
        let mut names = format!("{svc}.{ns}.svc.{domain} {svc}.{ns}.svc {svc}.{ns}");
        if &ns == namespace {
            names.push(' ');
            names.push_str(&svc);
        }
        out.push_str(&format!("{cluster_ip}\t{names}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_name_services_in_every_form() {
        let names = (
            "default".to_string(),
            "cluster.local".to_string(),
            "client".to_string(),
        );
        let services = vec![
            (
                "default".to_string(),
                "web".to_string(),
                "198.19.0.10".parse().unwrap(),
            ),
            (
                "other".to_string(),
                "db".to_string(),
                "198.19.0.11".parse().unwrap(),
            ),
        ];
        let text = hosts_file(&names, Ipv4Addr::new(198, 18, 1, 10), &services);
        assert!(text.contains("198.18.1.10\tclient\n"), "{text}");
        assert!(
            text.contains(
                "198.19.0.10\tweb.default.svc.cluster.local web.default.svc web.default web\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("198.19.0.11\tdb.other.svc.cluster.local db.other.svc db.other\n"),
            "{text}"
        );
    }

    #[test]
    fn services_are_read_from_the_api_shape() {
        let doc =
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "198.19.0.10"}});
        assert_eq!(
            service_entry(&doc),
            Some((
                "default".into(),
                "web".into(),
                "198.19.0.10".parse().unwrap()
            ))
        );
        let headless = serde_json::json!({"metadata": {"name": "web"}, "spec": {}});
        assert_eq!(service_entry(&headless), None);
    }
}
