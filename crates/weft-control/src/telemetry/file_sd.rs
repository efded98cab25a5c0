//! `--prometheus-sd-file`: the meshed workloads' proxies as a Prometheus `file_sd` targets file,
//! so an outside Prometheus scrapes the same proxies the embedded scraper does.
//!
//! One target group per meshed workload (its admin address, the port named
//! [`ADMIN_PORT_NAME`](crate::resource::ADMIN_PORT_NAME) on its first IP), labelled with what
//! the PromQL source ([`super::prometheus`]) groups by: `namespace` and `workload`, plus
//! Linkerd's `control_plane_ns`. The file is rewritten whenever the index publishes a state
//! whose rendering differs (a workload registers, leaves or moves its admin address), by
//! temporary file + rename ([`crate::files::write_atomic`]): Prometheus re-reads it on its own
//! (inotify, and every `refresh_interval`) and never sees half of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::files::{write_atomic, WriteError};
use crate::index::Index;
use crate::resource::State;

/// Target label: the workload's namespace.
pub const LABEL_NAMESPACE: &str = "namespace";
/// Target label: the workload's (ExternalWorkload's) name.
pub const LABEL_WORKLOAD: &str = "workload";
/// Target label: the control plane's namespace (Linkerd's proxies carry the same label).
pub const LABEL_CONTROL_PLANE_NS: &str = "control_plane_ns";

/// The targets file for `state`: a JSON array, one group per meshed workload, sorted by
/// namespace and name (so equal states render equal text), ending with a newline.
pub fn render(state: &State, control_namespace: &str) -> String {
    let groups: Vec<Value> = state
        .workloads
        .iter()
        .filter_map(|((ns, name), w)| {
            let admin = w.admin_addr()?;
            Some(json!({
                "targets": [admin.to_string()],
                "labels": {
                    LABEL_NAMESPACE: ns,
                    LABEL_WORKLOAD: name,
                    LABEL_CONTROL_PLANE_NS: control_namespace,
                },
            }))
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&Value::Array(groups)).expect("JSON values print");
    text.push('\n');
    text
}

/// Keeps `path` equal to [`render`] of the index's newest state until `shutdown` changes.
pub struct Writer {
    path: PathBuf,
    control_namespace: String,
    /// What the file holds (`None`: not written yet, or the last write failed).
    written: Option<String>,
}

impl Writer {
    pub fn new(path: PathBuf, control_namespace: &str) -> Writer {
        Writer {
            path,
            control_namespace: control_namespace.to_string(),
            written: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the file if `state` renders differently from what it holds; `Ok(true)`: written.
    pub fn update(&mut self, state: &State) -> Result<bool, WriteError> {
        let text = render(state, &self.control_namespace);
        if self.written.as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        self.written = None;
        write_atomic(&self.path, text.as_bytes(), false)?;
        self.written = Some(text);
        Ok(true)
    }
}

/// Writes the targets file at once (Prometheus may start before the first workload), then again
/// on each state the index applies that changes it. A failed write is logged and tried again
/// with the next state.
pub async fn run(mut writer: Writer, index: Arc<Index>, mut shutdown: watch::Receiver<bool>) {
    let mut applied = index.applied();
    loop {
        let state = applied.borrow_and_update().clone();
        match writer.update(&state) {
            Ok(true) => {
                tracing::debug!(path = %writer.path().display(), "prometheus targets written")
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "cannot write the Prometheus targets file"),
        }
        tokio::select! {
            changed = applied.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
#[path = "file_sd_tests.rs"]
mod tests;
