//! An ExternalWorkload's `status`: Linkerd's `ExternalWorkloadStatus`, a list of conditions of
//! the upstream shape (`type`, `status` True/False/Unknown, `lastProbeTime`,
//! `lastTransitionTime`, `reason`, `message`). Its `Ready` condition decides whether the workload
//! is an endpoint of the Services that select it: `weft run` registers a workload `Ready=False`
//! (so its sidecar gets its token before the command starts) and sets `Ready=True` once the
//! command's ports accept connections.
//!
//! One difference from Linkerd, on purpose: a workload without a `Ready` condition is ready
//! (Linkerd's endpoints controller skips it), so hand-written documents without a `status` keep
//! serving as they always did. Only `Ready=True` is ready when the condition is there.

use serde_json::{json, Map, Value};

use super::route::{list, object, opt_str, parse_rfc3339};
use super::Ctx;

/// The condition type that decides readiness (Linkerd's `WorkloadReady`).
pub const READY: &str = "Ready";

/// A condition's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// One entry of `status.conditions`. Times are kept as written (validated RFC 3339 UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: String,
    pub status: ConditionStatus,
    pub last_probe_time: Option<String>,
    pub last_transition_time: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl Condition {
    /// A `Ready` condition that changed at `now` (RFC 3339).
    pub fn ready(ready: bool, reason: &str, message: &str, now: &str) -> Condition {
        Condition {
            type_: READY.into(),
            status: if ready {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            last_probe_time: None,
            last_transition_time: Some(now.into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
        }
    }

    fn to_value(&self) -> Value {
        let mut v = json!({"type": self.type_, "status": self.status.as_str()});
        for (key, field) in [
            ("lastProbeTime", &self.last_probe_time),
            ("lastTransitionTime", &self.last_transition_time),
            ("reason", &self.reason),
            ("message", &self.message),
        ] {
            if let Some(text) = field {
                v[key] = json!(text);
            }
        }
        v
    }
}

/// Whether a workload with these conditions is ready: its `Ready` condition is `True`, or it
/// has none.
pub fn is_ready(conditions: &[Condition]) -> bool {
    conditions
        .iter()
        .find(|c| c.type_ == READY)
        .is_none_or(|c| c.status == ConditionStatus::True)
}

/// The document's `status` (`{"conditions": [...]}`); `None` when there are no conditions.
pub fn to_value(conditions: &[Condition]) -> Option<Value> {
    (!conditions.is_empty()).then(
        || json!({"conditions": conditions.iter().map(Condition::to_value).collect::<Vec<_>>()}),
    )
}

/// The conditions of a status update's body: a document whose `status` is taken, everything
/// else in it ignored (as Kubernetes' status subresource does). `prefix` starts every error.
pub fn validate_update(doc: &Value, prefix: &str) -> Result<Vec<Condition>, Vec<String>> {
    let mut ctx = Ctx::new(prefix.to_string());
    match doc.get("status") {
        None | Some(Value::Null) => ctx.err("status", "required (the workload's new status)"),
        status => {
            let conditions = parse(status, &mut ctx);
            if ctx.errors.is_empty() {
                return Ok(conditions);
            }
        }
    }
    Err(ctx.errors)
}

/// Validates a document's `status` (absent or null: no conditions). Every error is reported.
pub(super) fn parse(status: Option<&Value>, ctx: &mut Ctx) -> Vec<Condition> {
    let status = match status {
        None | Some(Value::Null) => return Vec::new(),
        Some(v) => match object(v, "status", ctx) {
            Some(m) => m,
            None => return Vec::new(),
        },
    };
    let mut out: Vec<Condition> = Vec::new();
    for (i, item) in list(status.get("conditions"), "status.conditions", ctx) {
        let f = format!("status.conditions[{i}]");
        let Some(m) = object(item, &f, ctx) else {
            continue;
        };
        let Some(condition) = condition(m, &f, ctx) else {
            continue;
        };
        if out.iter().any(|c| c.type_ == condition.type_) {
            ctx.err(
                &format!("{f}.type"),
                format!("duplicate condition {:?}", condition.type_),
            );
            continue;
        }
        out.push(condition);
    }
    out
}

fn condition(m: &Map<String, Value>, f: &str, ctx: &mut Ctx) -> Option<Condition> {
    let type_ = match m.get("type") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        None | Some(Value::Null) => {
            ctx.err(&format!("{f}.type"), "required");
            None
        }
        Some(other) => {
            ctx.err(
                &format!("{f}.type"),
                format!("must be a non-empty string, got {other}"),
            );
            None
        }
    };
    let status = match m.get("status") {
        Some(Value::String(s)) if s == "True" => Some(ConditionStatus::True),
        Some(Value::String(s)) if s == "False" => Some(ConditionStatus::False),
        Some(Value::String(s)) if s == "Unknown" => Some(ConditionStatus::Unknown),
        None | Some(Value::Null) => {
            ctx.err(&format!("{f}.status"), "required (True, False or Unknown)");
            None
        }
        Some(other) => {
            ctx.err(
                &format!("{f}.status"),
                format!("must be \"True\", \"False\" or \"Unknown\", got {other}"),
            );
            None
        }
    };
    let mut time = |key: &str| {
        let field = format!("{f}.{key}");
        let text = opt_str(m, key, &field, ctx)?;
        match parse_rfc3339(&text) {
            Ok(_) => Some(text),
            Err(e) => {
                ctx.err(&field, e);
                None
            }
        }
    };
    let last_probe_time = time("lastProbeTime");
    let last_transition_time = time("lastTransitionTime");
    let reason = opt_str(m, "reason", &format!("{f}.reason"), ctx);
    let message = opt_str(m, "message", &format!("{f}.message"), ctx);
    Some(Condition {
        type_: type_?,
        status: status?,
        last_probe_time,
        last_transition_time,
        reason,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{validate_one, Defaults, Resource};

    fn workload(status: Value) -> Result<Resource, Vec<String>> {
        let doc = json!({
            "apiVersion": "workload.linkerd.io/v1beta1",
            "kind": "ExternalWorkload",
            "metadata": {"name": "web-1", "namespace": "default"},
            "spec": {"workloadIPs": [{"ip": "127.0.0.1"}]},
            "status": status,
        });
        validate_one(&doc, "web.yaml", &Defaults::default())
    }

    #[test]
    fn the_upstream_shape_is_read_and_written_back() {
        let status = json!({"conditions": [{
            "type": "Ready", "status": "False",
            "lastProbeTime": "2026-01-01T00:00:00Z",
            "lastTransitionTime": "2026-01-01T00:00:01Z",
            "reason": "Starting", "message": "ports not accepting yet",
        }]});
        let Ok(Resource::Workload(w)) = workload(status.clone()) else {
            panic!("rejected")
        };
        assert!(!w.ready());
        assert_eq!(w.conditions[0].status, ConditionStatus::False);
        assert_eq!(w.to_document()["status"], status);
        // No status: ready, and no status written.
        let Ok(Resource::Workload(w)) = workload(Value::Null) else {
            panic!("rejected")
        };
        assert!(w.ready() && w.conditions.is_empty());
        assert!(w.to_document().get("status").is_none());
    }

    #[test]
    fn bad_conditions_are_precise_errors() {
        let errors = workload(json!({"conditions": [
            {"type": "Ready", "status": "yes"},
            {"status": "True"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"},
            {"type": "Ready", "status": "True"},
            "Ready",
        ]}))
        .unwrap_err();
        let want = [
            "web.yaml: status.conditions[0].status: must be \"True\", \"False\" or \"Unknown\", got \"yes\"",
            "web.yaml: status.conditions[1].type: required",
            "web.yaml: status.conditions[2].lastTransitionTime: must be an RFC 3339 UTC time",
            "web.yaml: status.conditions[3].type: duplicate condition \"Ready\"",
            "web.yaml: status.conditions[4]: expected a mapping, got a string",
        ];
        for w in want {
            assert!(errors.iter().any(|e| e.starts_with(w)), "{w}\n{errors:#?}");
        }
        let errors = workload(json!("Ready")).unwrap_err();
        assert!(
            errors[0].starts_with("web.yaml: status: expected a mapping"),
            "{errors:?}"
        );
    }
}
