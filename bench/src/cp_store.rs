//! The control-plane benchmark's store: which services, workloads and addresses exist, and the
//! YAML files that hold them. `cp-store` writes it; `cp-scale` derives the same layout from the
//! same arguments to know what every stream should receive.
//!
//! Layout: `services.yaml` holds every Service (`svc-000` .. in one namespace, selector
//! `app: svc-NNN`, port 8080 → target port `http`); `workloads-JJ.yaml` holds endpoint `JJ` of
//! every service, so rewriting one workload file changes every service at once (the "file change
//! touching many services"). Addresses come from 198.18.0.0/15 (benchmarking range, RFC 2544):
//! nothing ever connects to them.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The port every service and workload uses.
pub const PORT: u16 = 8080;
const BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);

#[derive(clap::Args, Clone, Debug)]
pub struct LayoutArgs {
    /// Number of Services.
    #[arg(long, default_value_t = 500)]
    pub services: usize,
    /// ExternalWorkload endpoints per Service.
    #[arg(long, default_value_t = 10)]
    pub per_service: usize,
    /// Namespace of every resource.
    #[arg(long, default_value = "default")]
    pub namespace: String,
}

impl LayoutArgs {
    pub fn service(&self, i: usize) -> String {
        format!("svc-{i:03}")
    }

    pub fn workload(&self, i: usize, j: usize) -> String {
        format!("svc-{i:03}-{j}")
    }

    /// The Destination.Get path of service `i`.
    pub fn path(&self, i: usize) -> String {
        format!(
            "{}.{}.svc.cluster.local:{PORT}",
            self.service(i),
            self.namespace
        )
    }

    /// Endpoint `j` of service `i`. `generation` 0 is 198.18.x.x, 1 is 198.19.x.x: the file change
    /// moves every endpoint of one file from one to the other.
    pub fn addr(&self, i: usize, j: usize, generation: u32) -> SocketAddr {
        let n = (i * self.per_service + j) as u32 + 1 + generation * 65_536;
        SocketAddr::from((Ipv4Addr::from(BASE + n), PORT))
    }

    /// The k-th extra endpoint registered through the API (198.19.255.x, clear of the rest).
    pub fn extra_addr(&self, k: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::from(BASE + 2 * 65_536 - 2 - k as u32), PORT))
    }

    pub fn workload_file(&self, j: usize) -> String {
        format!("workloads-{j:02}.yaml")
    }

    /// `workloads-JJ.yaml`: endpoint `j` of every service, at `generation`'s addresses.
    pub fn workload_yaml(&self, j: usize, generation: u32) -> String {
        let mut out = String::new();
        for i in 0..self.services {
            out.push_str(&self.workload_doc_of(i, j, generation));
        }
        out
    }

    pub fn services_yaml(&self) -> String {
        (0..self.services).map(|i| self.service_doc(i)).collect()
    }

    /// Service `i`: selector `app: svc-NNN`, port 8080 → target port `http`.
    pub fn service_doc(&self, i: usize) -> String {
        let (name, ns) = (self.service(i), &self.namespace);
        format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  selector: {{app: {name}}}\n  \
             ports: [{{name: http, port: {PORT}, targetPort: http}}]\n"
        )
    }

    /// Endpoint `j` of service `i` at `generation`'s address, as one document.
    pub fn workload_doc_of(&self, i: usize, j: usize, generation: u32) -> String {
        workload_doc(
            &self.workload(i, j),
            &self.namespace,
            &self.service(i),
            self.addr(i, j, generation),
        )
    }
}

/// One ExternalWorkload document (YAML, also valid as the registration API's body).
pub fn workload_doc(name: &str, namespace: &str, app: &str, addr: SocketAddr) -> String {
    format!(
        "---\napiVersion: workload.linkerd.io/v1beta1\nkind: ExternalWorkload\n\
         metadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{app: {app}}}\n\
         spec:\n  workloadIPs: [{{ip: {ip}}}]\n  ports: [{{name: http, port: {port}}}]\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

#[derive(clap::Args)]
pub struct Args {
    /// Store directory to create (must not exist or be empty).
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    layout: LayoutArgs,
}

/// Writes the store and prints `{"services","workloads","files","bytes"}`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    anyhow::ensure!(
        std::fs::read_dir(&args.dir)?.next().is_none(),
        "{} is not empty",
        args.dir.display()
    );
    let l = &args.layout;
    let mut bytes = write(&args.dir, "services.yaml", &l.services_yaml())?;
    for j in 0..l.per_service {
        bytes += write(&args.dir, &l.workload_file(j), &l.workload_yaml(j, 0))?;
    }
    println!(
        "{}",
        serde_json::json!({
            "services": l.services,
            "workloads": l.services * l.per_service,
            "files": 1 + l.per_service,
            "bytes": bytes,
        })
    );
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<usize> {
    std::fs::File::create(dir.join(name))?.write_all(text.as_bytes())?;
    Ok(text.len())
}

/// Replaces a store file the way an editor or a config tool would: temporary file + rename, so
/// the control plane's poll never sees half of it.
pub fn replace(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, dir.join(name))?;
    Ok(())
}
