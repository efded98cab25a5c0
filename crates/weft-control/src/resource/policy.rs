//! Linkerd's traffic-policy annotations, on routes and Services: timeouts
//! (`timeout.linkerd.io/*`), retries (`retry.linkerd.io/*`) and, on Services only, failure
//! accrual (`balancer.linkerd.io/failure-accrual*`, plus Weft's additions for the `unified`
//! kind and the ejection floor). Defaults are Linkerd's where it has them; see `docs/traffic.md`.

use super::Ctx;
use std::collections::BTreeMap;
use std::time::Duration;

pub const TIMEOUT_REQUEST: &str = "timeout.linkerd.io/request";
pub const TIMEOUT_RESPONSE: &str = "timeout.linkerd.io/response";
pub const TIMEOUT_IDLE: &str = "timeout.linkerd.io/idle";
pub const RETRY_HTTP: &str = "retry.linkerd.io/http";
pub const RETRY_GRPC: &str = "retry.linkerd.io/grpc";
pub const RETRY_LIMIT: &str = "retry.linkerd.io/limit";
pub const RETRY_TIMEOUT: &str = "retry.linkerd.io/timeout";
pub const FAILURE_ACCRUAL: &str = "balancer.linkerd.io/failure-accrual";
pub const FA_MAX_FAILURES: &str = "balancer.linkerd.io/failure-accrual-consecutive-max-failures";
pub const FA_MIN_PENALTY: &str = "balancer.linkerd.io/failure-accrual-consecutive-min-penalty";
pub const FA_MAX_PENALTY: &str = "balancer.linkerd.io/failure-accrual-consecutive-max-penalty";
pub const FA_JITTER: &str = "balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio";
/// Weft addition (`unified` only): trip when the success-rate EWMA falls below this, 0..1.
pub const FA_SUCCESS_RATE: &str = "balancer.linkerd.io/failure-accrual-success-rate-threshold";
/// Weft addition (`unified` only): requests seen before the success rate may trip.
pub const FA_MIN_REQUESTS: &str = "balancer.linkerd.io/failure-accrual-min-requests";
/// Weft addition (`unified` only): the success-rate EWMA's decay window.
pub const FA_DECAY: &str = "balancer.linkerd.io/failure-accrual-decay";
/// Weft addition (either kind): endpoints never ejected, whatever their failures.
pub const FA_MIN_READY: &str = "balancer.linkerd.io/failure-accrual-min-ready-endpoints";

/// Linkerd's default retry limit when an annotation enables retries without one.
pub const DEFAULT_RETRY_LIMIT: u32 = 1;
/// Linkerd's default consecutive-failure policy.
pub const DEFAULT_MAX_FAILURES: u32 = 7;
pub const DEFAULT_MIN_PENALTY: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_PENALTY: Duration = Duration::from_secs(60);
pub const DEFAULT_JITTER: f32 = 0.5;
/// Weft's `unified` defaults.
pub const DEFAULT_SUCCESS_RATE: f64 = 0.9;
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
pub const DEFAULT_SR_DECAY: Duration = Duration::from_secs(10);

/// `timeout.linkerd.io/*`. All `None` never happens in a `Some(Timeouts)` from annotations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub request: Option<Duration>,
    pub response: Option<Duration>,
    pub idle: Option<Duration>,
}

/// `retry.linkerd.io/*`. Conditions left `None` get the defaults of the route's protocol when
/// the policy is applied (HTTP `5xx`; gRPC the five retryable codes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    pub limit: u32,
    pub timeout: Option<Duration>,
    /// Inclusive HTTP status ranges.
    pub http: Option<Vec<(u16, u16)>>,
    pub grpc: Option<GrpcConditions>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcConditions {
    pub cancelled: bool,
    pub deadline_exceeded: bool,
    pub internal: bool,
    pub resource_exhausted: bool,
    pub unavailable: bool,
}

impl GrpcConditions {
    /// What `retry.linkerd.io/grpc` lists when a route enables retries without it.
    pub const DEFAULT: GrpcConditions = GrpcConditions {
        cancelled: true,
        deadline_exceeded: true,
        internal: true,
        resource_exhausted: true,
        unavailable: true,
    };
}

/// Failure accrual for a Service's endpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct FailureAccrual {
    pub kind: AccrualKind,
    pub min_penalty: Duration,
    pub max_penalty: Duration,
    pub jitter: f32,
    /// 0: no floor.
    pub min_ready_endpoints: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum AccrualKind {
    /// Linkerd's `consecutive`.
    Consecutive { max_failures: u32 },
    /// Weft's `unified`: success-rate EWMA and consecutive failures.
    Unified {
        success_rate_threshold: f64,
        decay: Duration,
        min_requests: u32,
        max_failures: u32,
    },
}

/// The policy a Service's annotations set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServicePolicy {
    pub timeouts: Option<Timeouts>,
    pub retry: Option<Retry>,
    pub failure_accrual: Option<FailureAccrual>,
}

/// Parses a Service's policy annotations. Validation reports the errors (the Service is then
/// rejected); the index, which only sees valid Services, uses the value.
pub(crate) fn service_policy(
    annotations: &BTreeMap<String, String>,
    ctx: &mut Ctx,
) -> ServicePolicy {
    ServicePolicy {
        timeouts: timeouts(annotations, ctx),
        retry: retry(annotations, None, ctx),
        failure_accrual: failure_accrual(annotations, ctx),
    }
}

/// [`service_policy`] of a valid Service (its annotations were checked when it was read).
pub fn service_policy_of(annotations: &BTreeMap<String, String>) -> ServicePolicy {
    service_policy(annotations, &mut Ctx::new(String::new()))
}

/// A route's timeouts and retry annotations. `retry.linkerd.io/http` is an error on a gRPC
/// route and `retry.linkerd.io/grpc` on an HTTP one, as in Linkerd.
pub(super) fn route_annotations(
    annotations: &BTreeMap<String, String>,
    grpc: bool,
    ctx: &mut Ctx,
) -> (Option<Timeouts>, Option<Retry>) {
    (
        timeouts(annotations, ctx),
        retry(annotations, Some(grpc), ctx),
    )
}

fn field(name: &str) -> String {
    format!("metadata.annotations[{name:?}]")
}

fn timeouts(a: &BTreeMap<String, String>, ctx: &mut Ctx) -> Option<Timeouts> {
    let mut get = |name: &str| {
        let v = a.get(name)?;
        match parse_duration(v, false) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                ctx.err(&field(name), e);
                None
            }
        }
    };
    let t = Timeouts {
        request: get(TIMEOUT_REQUEST),
        response: get(TIMEOUT_RESPONSE),
        idle: get(TIMEOUT_IDLE),
    };
    [TIMEOUT_REQUEST, TIMEOUT_RESPONSE, TIMEOUT_IDLE]
        .iter()
        .any(|k| a.contains_key(*k))
        .then_some(t)
}

/// `route_grpc`: `None` on a Service (both condition annotations allowed), else whether the
/// route is a gRPC one.
fn retry(a: &BTreeMap<String, String>, route_grpc: Option<bool>, ctx: &mut Ctx) -> Option<Retry> {
    if ![RETRY_HTTP, RETRY_GRPC, RETRY_LIMIT, RETRY_TIMEOUT]
        .iter()
        .any(|k| a.contains_key(*k))
    {
        return None;
    }
    let limit = match a.get(RETRY_LIMIT) {
        None => DEFAULT_RETRY_LIMIT,
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if n <= 10_000 => n,
            _ => {
                ctx.err(
                    &field(RETRY_LIMIT),
                    format!("must be a number 0..10000, got {v:?}"),
                );
                DEFAULT_RETRY_LIMIT
            }
        },
    };
    let timeout = a
        .get(RETRY_TIMEOUT)
        .and_then(|v| match parse_duration(v, false) {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                ctx.err(&field(RETRY_TIMEOUT), e);
                None
            }
        });
    let mut http = None;
    if let Some(v) = a.get(RETRY_HTTP) {
        if route_grpc == Some(true) {
            ctx.err(
                &field(RETRY_HTTP),
                "not valid on a GRPCRoute (use retry.linkerd.io/grpc)",
            );
        } else {
            match http_conditions(v) {
                Ok(c) => http = Some(c),
                Err(e) => ctx.err(&field(RETRY_HTTP), e),
            }
        }
    }
    let mut grpc = None;
    if let Some(v) = a.get(RETRY_GRPC) {
        if route_grpc == Some(false) {
            ctx.err(
                &field(RETRY_GRPC),
                "not valid on an HTTPRoute (use retry.linkerd.io/http)",
            );
        } else {
            match grpc_conditions(v) {
                Ok(c) => grpc = Some(c),
                Err(e) => ctx.err(&field(RETRY_GRPC), e),
            }
        }
    }
    Some(Retry {
        limit,
        timeout,
        http,
        grpc,
    })
}

/// `5xx`, `gateway-error` (502-504), a status, or a range `500-504`, comma separated.
pub fn http_conditions(v: &str) -> Result<Vec<(u16, u16)>, String> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim) {
        let range = if part.eq_ignore_ascii_case("5xx") {
            Some((500, 599))
        } else if part.eq_ignore_ascii_case("gateway-error") {
            Some((502, 504))
        } else if let Some(c) = code(part) {
            Some((c, c))
        } else if let Some((a, b)) = part.split_once('-') {
            code(a).zip(code(b)).filter(|(a, b)| a <= b)
        } else {
            None
        };
        match range {
            Some(r) => out.push(r),
            None => {
                return Err(format!(
                    "{part:?} is not 5xx, gateway-error, a status 100..599 or a range like 500-504"
                ))
            }
        }
    }
    Ok(out)
}

pub fn grpc_conditions(v: &str) -> Result<GrpcConditions, String> {
    let mut c = GrpcConditions::default();
    for part in v.split(',').map(str::trim) {
        let flag = match part.to_ascii_lowercase().as_str() {
            "cancelled" => &mut c.cancelled,
            "deadline-exceeded" => &mut c.deadline_exceeded,
            "internal" => &mut c.internal,
            "resource-exhausted" => &mut c.resource_exhausted,
            "unavailable" => &mut c.unavailable,
            _ => {
                return Err(format!(
                    "{part:?} is not one of cancelled, deadline-exceeded, internal, resource-exhausted, unavailable"
                ))
            }
        };
        *flag = true;
    }
    Ok(c)
}

fn failure_accrual(a: &BTreeMap<String, String>, ctx: &mut Ctx) -> Option<FailureAccrual> {
    let num = |name: &str, default: u32, ctx: &mut Ctx| match a.get(name) {
        None => default,
        Some(v) => v.trim().parse::<u32>().unwrap_or_else(|_| {
            ctx.err(
                &field(name),
                format!("must be a non-negative integer, got {v:?}"),
            );
            default
        }),
    };
    let dur = |name: &str, default: Duration, ctx: &mut Ctx| match a.get(name) {
        None => default,
        Some(v) => parse_duration(v, false).unwrap_or_else(|e| {
            ctx.err(&field(name), e);
            default
        }),
    };
    let ratio = |name: &str, default: f64, ctx: &mut Ctx| match a.get(name) {
        None => default,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(x) if (0.0..=1.0).contains(&x) => x,
            _ => {
                ctx.err(
                    &field(name),
                    format!("must be a number from 0 to 1, got {v:?}"),
                );
                default
            }
        },
    };
    let kind = match a.get(FAILURE_ACCRUAL).map(|s| s.trim()) {
        None => {
            // Tuning annotations without the switch do nothing, as in Linkerd; say so.
            return None;
        }
        Some("consecutive") => AccrualKind::Consecutive {
            max_failures: num(FA_MAX_FAILURES, DEFAULT_MAX_FAILURES, ctx),
        },
        Some("unified") => AccrualKind::Unified {
            success_rate_threshold: ratio(FA_SUCCESS_RATE, DEFAULT_SUCCESS_RATE, ctx),
            decay: dur(FA_DECAY, DEFAULT_SR_DECAY, ctx),
            min_requests: num(FA_MIN_REQUESTS, DEFAULT_MIN_REQUESTS, ctx),
            max_failures: num(FA_MAX_FAILURES, DEFAULT_MAX_FAILURES, ctx),
        },
        Some(other) => {
            ctx.err(
                &field(FAILURE_ACCRUAL),
                format!("must be consecutive or unified, got {other:?}"),
            );
            return None;
        }
    };
    if matches!(kind, AccrualKind::Consecutive { .. }) {
        for name in [FA_SUCCESS_RATE, FA_MIN_REQUESTS, FA_DECAY] {
            if a.contains_key(name) {
                ctx.err(&field(name), "applies only to failure-accrual: unified");
            }
        }
    }
    let min_penalty = dur(FA_MIN_PENALTY, DEFAULT_MIN_PENALTY, ctx);
    let max_penalty = dur(FA_MAX_PENALTY, DEFAULT_MAX_PENALTY, ctx);
    if max_penalty < min_penalty {
        ctx.err(
            &field(FA_MAX_PENALTY),
            format!("must not be below the min-penalty ({max_penalty:?} < {min_penalty:?})"),
        );
    }
    let jitter = ratio(FA_JITTER, f64::from(DEFAULT_JITTER), ctx) as f32;
    Some(FailureAccrual {
        kind,
        min_penalty,
        max_penalty,
        jitter,
        min_ready_endpoints: num(FA_MIN_READY, 0, ctx),
    })
}

/// A duration as `1h2m3s4ms`: up to four `<digits><h|m|s|ms>` parts. `strict` is the Gateway
/// API's format (at most 5 digits a part, each unit once, in that order); annotations
/// (`strict` false) also take larger numbers, as Linkerd's `100000ms`.
pub fn parse_duration(s: &str, strict: bool) -> Result<Duration, String> {
    let bad = |why: &str| format!("{why}: expected a duration like 1h2m3s4ms or 500ms, got {s:?}");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    let mut last_rank = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("a number must come before each unit"));
        }
        if strict && digits > 5 {
            return Err(bad("at most 5 digits per unit"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let (unit, rank, len): (Duration, u8, usize) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 4, 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1, 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 2, 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 3, 1)
        } else {
            return Err(bad("units are h, m, s and ms"));
        };
        if strict && rank <= last_rank {
            return Err(bad("each unit at most once, largest first"));
        }
        last_rank = rank;
        rest = &rest[len..];
        parts += 1;
        if parts > 4 {
            return Err(bad("at most 4 parts"));
        }
        let add = u32::try_from(n)
            .ok()
            .and_then(|n| unit.checked_mul(n))
            .ok_or_else(|| bad("too large"))?;
        total = total.checked_add(add).ok_or_else(|| bad("too large"))?;
    }
    Ok(total)
}
