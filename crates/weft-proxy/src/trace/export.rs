//! The background exporter: spans wait in a bounded queue (a full queue drops the span, never
//! the request's time), leave in batches (when a batch fills or a second after its first span)
//! over OTLP/gRPC `TraceService/Export`, and a failing collector is retried after a growing
//! backoff while new spans keep being dropped at the full queue.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::{sync::mpsc, time::Instant};

use super::otlp::{
    self, ExportTraceServiceRequest, ExportTraceServiceResponse, InstrumentationScope,
    ResourceSpans, ScopeSpans,
};
use crate::{backoff::Backoff, metrics::Counter};

/// How the exporter batches and backs off.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Spans waiting for export at most; more are dropped.
    pub queue: usize,
    /// Spans per export at most.
    pub batch: usize,
    /// A batch leaves at the latest this long after its first span arrived.
    pub interval: Duration,
    /// Waits after a failed export (doubling from `min` to `max`).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// One export call's deadline.
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            queue: 2048,
            batch: 512,
            interval: Duration::from_secs(1),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

/// The exporter's counters (`trace_*` in `/metrics`).
#[derive(Clone, Debug)]
pub struct Counters {
    pub exported: Counter,
    /// The queue was full.
    pub dropped_queue_full: Counter,
    /// Their export failed (not retried: the next batch is as likely to fail).
    pub dropped_export_failed: Counter,
    /// The collector accepted the export but rejected these spans (partial success).
    pub dropped_rejected: Counter,
    pub export_errors: Counter,
}

/// Where batches go (the collector over gRPC; a script in tests).
pub trait Export: Send + 'static {
    fn export(
        &mut self,
        req: ExportTraceServiceRequest,
    ) -> Pin<Box<dyn Future<Output = Result<ExportTraceServiceResponse, String>> + Send + '_>>;
}

/// OTLP/gRPC to a collector over a lazily (re)connecting plaintext channel.
pub struct Grpc {
    client: tonic::client::Grpc<tonic::transport::Channel>,
}

impl Grpc {
    pub fn new(channel: tonic::transport::Channel) -> Grpc {
        Grpc {
            client: tonic::client::Grpc::new(channel),
        }
    }
}

impl Export for Grpc {
    fn export(
        &mut self,
        req: ExportTraceServiceRequest,
    ) -> Pin<Box<dyn Future<Output = Result<ExportTraceServiceResponse, String>> + Send + '_>> {
        Box::pin(async move {
            self.client.ready().await.map_err(|e| e.to_string())?;
            let codec = tonic_prost::ProstCodec::default();
            let path = http::uri::PathAndQuery::from_static(otlp::EXPORT_PATH);
            self.client
                .unary(tonic::Request::new(req), path, codec)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| format!("{}: {}", s.code(), s.message()))
        })
    }
}

/// The resource and scope every batch carries.
#[derive(Clone, Debug)]
pub struct Source {
    pub resource: otlp::Resource,
    pub scope: InstrumentationScope,
}

/// Exports spans from `rx` until every sender is gone (then flushes what is left).
pub async fn run(
    mut rx: mpsc::Receiver<otlp::Span>,
    mut exporter: impl Export,
    source: Source,
    settings: Settings,
    counters: Counters,
) {
    let mut backoff = Backoff::new(settings.backoff_min, settings.backoff_max);
    let mut batch = Vec::with_capacity(settings.batch);
    loop {
        // 1. A batch: the first span, then more until it is full or the interval is over.
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = Instant::now() + settings.interval;
        let mut closed = false;
        while batch.len() < settings.batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        // 2. Export it; a failure drops it and waits before the next one.
        let n = batch.len() as u64;
        let req = request(&source, std::mem::take(&mut batch));
        let sent = tokio::time::timeout(settings.timeout, exporter.export(req)).await;
        match sent {
            Ok(Ok(resp)) => {
                backoff.reset();
                let rejected = resp
                    .partial_success
                    .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
                    .min(n);
                counters.exported.add(n - rejected);
                counters.dropped_rejected.add(rejected);
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => format!("no answer within {:?}", settings.timeout),
                };
                counters.export_errors.inc();
                counters.dropped_export_failed.add(n);
                let wait = backoff.next_delay();
                tracing::info!(%error, spans = n, ?wait, "span export failed; dropping the batch");
                if !closed {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        if closed {
            return;
        }
    }
}

fn request(source: &Source, spans: Vec<otlp::Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(source.resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(source.scope.clone()),
                spans,
            }],
        }],
    }
}
