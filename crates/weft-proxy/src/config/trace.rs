//! `WEFT_PROXY_TRACE_*`: where the proxy exports its spans (OTLP/gRPC) and when it samples.
//! Linkerd's equivalents are `LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR`,
//! `LINKERD2_PROXY_TRACE_SERVICE_NAME` and `LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES`; Linkerd has
//! no sample rate (it only continues traces the caller sampled, our default).

use super::{
    parse::{items, parse_host_port},
    Env, VarError,
};

/// `host:port` of an OpenTelemetry collector's OTLP/gRPC receiver (plaintext HTTP/2). Unset or
/// empty: tracing is off and the request path reads no trace header. Linkerd's
/// `LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR`.
pub const ENV_TRACE_COLLECTOR_SVC_ADDR: &str = "WEFT_PROXY_TRACE_COLLECTOR_SVC_ADDR";
/// The `service.name` resource attribute of the spans. Default: the workload's name
/// (`WEFT_PROXY_POLICY_WORKLOAD`'s NAME), else [`DEFAULT_TRACE_SERVICE_NAME`]. Linkerd's
/// `LINKERD2_PROXY_TRACE_SERVICE_NAME`.
pub const ENV_TRACE_SERVICE_NAME: &str = "WEFT_PROXY_TRACE_SERVICE_NAME";
pub const DEFAULT_TRACE_SERVICE_NAME: &str = "weft-proxy";
/// The probability (0.0 to 1.0) that the proxy starts a trace for a request that arrives with
/// no trace context (or a B3 context that leaves the decision to it). A caller's own decision
/// (sampled or not) is always followed. Default 0: only continue traces the caller sampled,
/// as Linkerd does.
pub const ENV_TRACE_SAMPLE_RATE: &str = "WEFT_PROXY_TRACE_SAMPLE_RATE";
pub const DEFAULT_TRACE_SAMPLE_RATE: f64 = 0.0;
/// Extra resource attributes, `key=value,key=value`. Linkerd's
/// `LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES` (newline-separated there).
pub const ENV_TRACE_ATTRIBUTES: &str = "WEFT_PROXY_TRACE_ATTRIBUTES";

/// Tracing settings; present only when a collector is configured.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// [`ENV_TRACE_COLLECTOR_SVC_ADDR`].
    pub collector_addr: String,
    /// [`ENV_TRACE_SERVICE_NAME`], or its default resolved.
    pub service_name: String,
    /// [`ENV_TRACE_SAMPLE_RATE`], in `[0, 1]`.
    pub sample_rate: f64,
    /// [`ENV_TRACE_ATTRIBUTES`], in their order.
    pub attributes: Vec<(String, String)>,
}

// `Config` is `Eq`; the rate is checked to be a number in [0, 1] (never NaN).
impl Eq for TraceConfig {}

impl TraceConfig {
    /// `Ok(None)` without a collector (the other variables are still checked). `workload`: the
    /// workload's name, the default service name.
    pub fn from_env(
        env: &dyn Env,
        workload: Option<&str>,
    ) -> Result<Option<TraceConfig>, Vec<VarError>> {
        let mut errors = Vec::new();
        let read = |name: &'static str| {
            env.get(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let collector_addr = read(ENV_TRACE_COLLECTOR_SVC_ADDR);
        if let Some(v) = &collector_addr {
            if let Err(reason) = parse_host_port(v) {
                errors.push(bad(ENV_TRACE_COLLECTOR_SVC_ADDR, reason, v));
            }
        }
        let service_name = read(ENV_TRACE_SERVICE_NAME)
            .or_else(|| workload.map(str::to_string))
            .unwrap_or_else(|| DEFAULT_TRACE_SERVICE_NAME.to_string());
        let mut sample_rate = DEFAULT_TRACE_SAMPLE_RATE;
        if let Some(v) = read(ENV_TRACE_SAMPLE_RATE) {
            match v.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => sample_rate = r,
                _ => errors.push(bad(
                    ENV_TRACE_SAMPLE_RATE,
                    "must be a number from 0.0 to 1.0 (e.g. 0.01)".into(),
                    &v,
                )),
            }
        }
        let attributes = match read(ENV_TRACE_ATTRIBUTES) {
            None => Vec::new(),
            Some(v) => parse_attributes(&v).unwrap_or_else(|reason| {
                errors.push(bad(ENV_TRACE_ATTRIBUTES, reason, &v));
                Vec::new()
            }),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(collector_addr.map(|collector_addr| TraceConfig {
            collector_addr,
            service_name,
            sample_rate,
            attributes,
        }))
    }
}

/// `k=v,k2=v2` (keys non-empty, values may be empty).
fn parse_attributes(s: &str) -> Result<Vec<(String, String)>, String> {
    items(s)
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().into(), v.trim().into())),
            _ => Err(format!("{item:?} is not KEY=VALUE")),
        })
        .collect()
}

fn bad(name: &'static str, reason: String, value: &str) -> VarError {
    VarError {
        name,
        reason,
        value: Some(value.to_string()),
    }
}
