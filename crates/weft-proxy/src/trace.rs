//! Distributed tracing: W3C `traceparent` and B3 context propagation, one span per proxy hop
//! (inbound: SERVER, outbound: CLIENT), exported over OTLP/gRPC with sampling
//! (`WEFT_PROXY_TRACE_*`).
//!
//! A request is traced when the caller sampled it, or when it carries no decision and the
//! proxy's own sample rate picks it. Its hop gets a span with a new id whose parent is the
//! caller's span, and the propagation headers it came with are rewritten so the next hop's
//! parent is this span. Unsampled requests are left untouched. Without a collector there is no
//! [`Tracer`] and the request paths skip all of this with one branch.
//!
//! - [`propagation`]: reading and writing the headers;
//! - [`span`]: a span in flight and its attributes;
//! - [`otlp`]: the OTLP messages, by hand;
//! - [`export`]: the bounded queue's consumer, batching, backoff.

pub mod export;
pub mod otlp;
pub mod propagation;
pub mod span;

use std::{future::Future, sync::Arc};

use http::{Request, Response};
use tokio::sync::mpsc;

use crate::{
    config::{TraceConfig, Workload},
    metrics::{self as m, Counter, Metrics},
};
use propagation::{Formats, Outgoing, Read, Sampled, SpanId, TraceId};
pub use span::{Kind, Span};

/// Starts spans for sampled requests and queues them for export.
#[derive(Debug)]
pub struct Tracer {
    sample_rate: f64,
    /// This proxy's identity: the server's on inbound spans, the client's on outbound ones.
    local_id: Option<String>,
    queue: mpsc::Sender<otlp::Span>,
    dropped_queue_full: Counter,
    malformed_inbound: Counter,
    malformed_outbound: Counter,
}

impl Tracer {
    /// The tracer and its exporter task (to spawn), sending to `cfg`'s collector.
    pub fn new(
        cfg: &TraceConfig,
        workload: &Workload,
        local_id: Option<String>,
        metrics: &Metrics,
    ) -> Result<(Arc<Tracer>, impl Future<Output = ()>), tonic::transport::Error> {
        let settings = export::Settings::default();
        let channel = crate::control::endpoint(&cfg.collector_addr, None, settings.backoff_max)?
            .request_timeout(settings.timeout)
            .connect_lazy();
        let source = export::Source {
            resource: resource(cfg, workload),
            scope: otlp::InstrumentationScope {
                name: "weft-proxy".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
        };
        Ok(Tracer::with_exporter(
            cfg.sample_rate,
            local_id,
            metrics,
            export::Grpc::new(channel),
            source,
            settings,
        ))
    }

    /// As [`Tracer::new`], exporting to `exporter`.
    pub fn with_exporter(
        sample_rate: f64,
        local_id: Option<String>,
        metrics: &Metrics,
        exporter: impl export::Export,
        source: export::Source,
        settings: export::Settings,
    ) -> (Arc<Tracer>, impl Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(settings.queue);
        let dropped = |reason| metrics.counter(m::TRACE_SPANS_DROPPED, None, &[("reason", reason)]);
        let malformed =
            |dir| metrics.counter(m::TRACE_CONTEXT_MALFORMED, None, &[("direction", dir)]);
        let counters = export::Counters {
            exported: metrics.counter(m::TRACE_SPANS_EXPORTED, None, &[]),
            dropped_queue_full: dropped("queue_full"),
            dropped_export_failed: dropped("export_failed"),
            dropped_rejected: dropped("rejected"),
            export_errors: metrics.counter(m::TRACE_EXPORT_ERRORS, None, &[]),
        };
        let tracer = Arc::new(Tracer {
            sample_rate,
            local_id,
            queue: tx,
            dropped_queue_full: counters.dropped_queue_full.clone(),
            malformed_inbound: malformed("inbound"),
            malformed_outbound: malformed("outbound"),
        });
        let task = export::run(rx, exporter, source, settings, counters);
        (tracer, task)
    }

    /// Reads `req`'s trace context; for a sampled request starts this hop's span and rewrites
    /// the propagation headers so the next hop's parent is that span. `None`: not traced
    /// (headers untouched).
    pub fn start<B>(&self, kind: Kind, req: &mut Request<B>) -> Option<Span> {
        let read = propagation::read(req.headers());
        if read == Read::Malformed {
            match kind {
                Kind::Inbound => self.malformed_inbound.inc(),
                Kind::Outbound => self.malformed_outbound.inc(),
            }
        }
        let out = match decide(read, self.sample()) {
            Decision::Skip => return None,
            Decision::Continue(ctx) => Outgoing {
                trace_id: ctx.trace_id,
                span_id: new_span_id(),
                parent: Some(ctx.parent),
                debug: ctx.debug,
                short_id: ctx.short_id,
            },
            Decision::Root => Outgoing {
                trace_id: new_trace_id(),
                span_id: new_span_id(),
                parent: None,
                debug: false,
                short_id: false,
            },
        };
        let formats = match read {
            Read::Context(ctx) => ctx.formats,
            // A trace this proxy starts is W3C.
            _ => Formats {
                w3c: true,
                ..Formats::default()
            },
        };
        let trace_state = match formats.w3c {
            true => req
                .headers()
                .get(propagation::TRACESTATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            false => String::new(),
        };
        propagation::write(req.headers_mut(), formats, &out);
        let span = Span::start(
            kind,
            (out.trace_id, out.span_id, out.parent),
            trace_state,
            req,
        );
        if let Some(id) = &self.local_id {
            span.local_identity(id);
        }
        Some(span)
    }

    /// Ends `span` at `resp`'s head and queues it (a full queue drops it, counted).
    pub fn end<B>(&self, span: Span, resp: &Response<B>) {
        if self.queue.try_send(span.finish(resp)).is_err() {
            self.dropped_queue_full.inc();
        }
    }

    fn sample(&self) -> bool {
        self.sample_rate > 0.0 && fastrand::f64() < self.sample_rate
    }
}

/// What to do with a request, given its headers and whether the proxy's sampler picked it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// Not traced: headers untouched.
    Skip,
    /// Continue the caller's trace.
    Continue(propagation::Incoming),
    /// Start a trace here.
    Root,
}

fn decide(read: Read, sampler: bool) -> Decision {
    match read {
        Read::Context(ctx) => match ctx.sampled {
            Sampled::Yes => Decision::Continue(ctx),
            Sampled::No => Decision::Skip,
            // B3 left the decision to us: the trace continues if we take it.
            Sampled::Deferred if sampler => Decision::Continue(ctx),
            Sampled::Deferred => Decision::Skip,
        },
        Read::Unsampled => Decision::Skip,
        Read::None | Read::Malformed if sampler => Decision::Root,
        Read::None | Read::Malformed => Decision::Skip,
    }
}

fn new_trace_id() -> TraceId {
    fastrand::u128(1..).to_be_bytes()
}

fn new_span_id() -> SpanId {
    fastrand::u64(1..).to_be_bytes()
}

/// The spans' resource: `service.name`, the workload, the host and process, then
/// `WEFT_PROXY_TRACE_ATTRIBUTES` (which may override any of them).
fn resource(cfg: &TraceConfig, workload: &Workload) -> otlp::Resource {
    let mut attrs = vec![
        ("service.name".to_string(), cfg.service_name.clone()),
        ("service.namespace".into(), workload.namespace.clone()),
        ("weft.workload".into(), workload.name.clone()),
        ("process.pid".into(), std::process::id().to_string()),
    ];
    if let Some(host) = crate::sys::host_name() {
        attrs.push(("host.name".into(), host));
    }
    for (k, v) in &cfg.attributes {
        attrs.retain(|(key, _)| key != k);
        attrs.push((k.clone(), v.clone()));
    }
    otlp::Resource {
        attributes: attrs
            .into_iter()
            .map(|(k, v)| match (k.as_str(), v.parse::<i64>()) {
                ("process.pid", Ok(pid)) => otlp::KeyValue::int(&k, pid),
                _ => otlp::KeyValue::string(&k, v),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests;
