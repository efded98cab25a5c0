//! A small etcd v3 client over gRPC: ranges (paged), puts, deletes, transactions that compare a
//! key's `mod_revision`, and watches ([`watch`] keeps a prefix mirrored across failures).
//!
//! It talks to one endpoint at a time and moves to the next one when a call fails for a reason
//! another member may not have (unreachable, no leader, timeout); answers that would be the same
//! from every member (a compacted revision, a bad request) are returned as they are.

pub mod proto;
pub mod watch;

use proto::{
    Compare, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Request, RequestOp, ResponseHeader, TxnRequest,
    TxnResponse, WatchCreateRequest, WatchRequest, WatchRequestUnion, WatchResponse,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The scheme of an etcd store address: `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
pub const SCHEME: &str = "etcd://";
/// How long one call may take before the next endpoint is tried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys per page when listing a range (each page is one response, well under gRPC's 4 MiB).
const PAGE: i64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{url:?}: {msg} (expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX)")]
    BadAddress { url: String, msg: String },
    /// Every endpoint failed; the message is the last endpoint's error.
    #[error("etcd {endpoints}: {msg}")]
    Unreachable { endpoints: String, msg: String },
    /// An answer every member would give (bad request, compacted revision, ...).
    #[error("etcd {endpoint}: {msg}")]
    Rejected { endpoint: String, msg: String },
    /// The watch's start revision is gone: list again and watch from there.
    #[error("etcd revision {0} is compacted")]
    Compacted(i64),
    #[error("etcd {endpoint}: the watch stream ended: {msg}")]
    WatchEnded { endpoint: String, msg: String },
}

/// Where an etcd store lives: its endpoints and the key prefix under which everything is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `HOST:PORT`, in the order they are tried.
    pub endpoints: Vec<String>,
    /// Starts with `/`, no trailing `/` (e.g. `/weft`).
    pub prefix: String,
}

impl Target {
    /// Parses `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
    pub fn parse(url: &str) -> Result<Target, Error> {
        let bad = |msg: &str| Error::BadAddress {
            url: url.to_string(),
            msg: msg.to_string(),
        };
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("must start with etcd://"))?;
        let (hosts, prefix) = rest
            .split_once('/')
            .ok_or_else(|| bad("a key prefix is required after the endpoints"))?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.is_empty() {
            return Err(bad("a key prefix is required after the endpoints"));
        }
        let mut endpoints = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad(&format!("endpoint {host:?} is not HOST:PORT")))?;
            if name.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad(&format!("endpoint {host:?} is not HOST:PORT")));
            }
            endpoints.push(host.to_string());
        }
        Ok(Target {
            endpoints,
            prefix: format!("/{prefix}"),
        })
    }

    /// `PREFIX/<rest>` as a key.
    pub fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}/{rest}", self.prefix).into_bytes()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}{}", self.endpoints.join(","), self.prefix)
    }
}

/// The end of the range of every key starting with `prefix` (etcd's "prefix + 1").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

/// A cheap handle to the client: every clone shares the endpoints and the one in use.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    channels: Vec<tonic::transport::Channel>,
    /// The endpoint calls start with: the last one that answered.
    current: AtomicUsize,
}

/// A call's failure: whether the next endpoint may do better.
enum Failure {
    Retry(String),
    Final(String),
}

/// A status as text, with its causes (tonic's "tcp connect error" alone does not say why).
fn describe(status: &tonic::Status) -> String {
    let mut msg = format!("{:?}: {}", status.code(), status.message());
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        let text = c.to_string();
        if !msg.ends_with(&text) {
            msg = format!("{msg}: {text}");
        }
        cause = c.source();
    }
    msg
}

fn classify(status: tonic::Status) -> Failure {
    use tonic::Code;
    let msg = describe(&status);
    match status.code() {
        // The member is down, cut off from its leader, or the connection broke.
        Code::Unavailable
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Internal => Failure::Retry(msg),
        _ => Failure::Final(msg),
    }
}

impl Client {
    /// A client for `endpoints` (`HOST:PORT`). Connects lazily: nothing is dialled until the
    /// first call.
    pub fn new(endpoints: &[String]) -> Result<Client, Error> {
        let mut channels = Vec::new();
        for e in endpoints {
            let url = format!("http://{e}");
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|err| Error::BadAddress {
                    url: url.clone(),
                    msg: err.to_string(),
                })?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                // A member that vanishes without closing the connection (power loss, a
                // partition) is noticed by the pings, not only by the next call.
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            channels.push(endpoint.connect_lazy());
        }
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: endpoints.to_vec(),
                channels,
                current: AtomicUsize::new(0),
            }),
        })
    }

    fn endpoints(&self) -> String {
        self.inner.endpoints.join(",")
    }

    /// One unary call, on the current endpoint first and then on each other once.
    async fn unary<Req, Resp>(&self, path: &'static str, req: Req) -> Result<Resp, Error>
    where
        Req: prost::Message + Clone + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let n = self.inner.channels.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for attempt in 0..n {
            let i = (start + attempt) % n;
            let mut grpc = tonic::client::Grpc::new(self.inner.channels[i].clone());
            let call = async {
                grpc.ready()
                    .await
                    .map_err(|e| Failure::Retry(format!("connecting: {e}")))?;
                let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
                let path = http::uri::PathAndQuery::from_static(path);
                grpc.unary(tonic::Request::new(req.clone()), path, codec)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(classify)
            };
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(resp)) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Ok(resp);
                }
                Ok(Err(Failure::Final(msg))) => {
                    return Err(Error::Rejected {
                        endpoint: self.inner.endpoints[i].clone(),
                        msg,
                    })
                }
                Ok(Err(Failure::Retry(msg))) => last = msg,
                Err(_) => last = format!("no answer within {CALL_TIMEOUT:?}"),
            }
            if n > 1 {
                tracing::debug!(endpoint = %self.inner.endpoints[i], "etcd call failed, trying the next endpoint: {last}");
            }
        }
        Err(Error::Unreachable {
            endpoints: self.endpoints(),
            msg: last,
        })
    }

    /// Every key under `prefix` at one revision, in key order, and that revision.
    pub async fn list(&self, prefix: &[u8]) -> Result<(Vec<KeyValue>, i64), Error> {
        let end = prefix_end(prefix);
        let mut out = Vec::new();
        let mut from = prefix.to_vec();
        let mut revision = 0;
        loop {
            let resp: RangeResponse = self
                .unary(
                    proto::RANGE,
                    RangeRequest {
                        key: from,
                        range_end: end.clone(),
                        limit: PAGE,
                        // Later pages read the first page's revision: one consistent view.
                        revision,
                    },
                )
                .await?;
            if revision == 0 {
                revision = ResponseHeader::revision_of(&resp.header);
            }
            let more = resp.more;
            out.extend(resp.kvs);
            match (more, out.last()) {
                (true, Some(last)) => {
                    from = last.key.clone();
                    from.push(0);
                }
                _ => return Ok((out, revision)),
            }
        }
    }

    /// One key, if it exists.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Error> {
        let resp: RangeResponse = self
            .unary(
                proto::RANGE,
                RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                },
            )
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Writes a key; returns the revision of the write.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<i64, Error> {
        let resp: PutResponse = self
            .unary(
                proto::PUT,
                PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    lease: 0,
                },
            )
            .await?;
        Ok(ResponseHeader::revision_of(&resp.header))
    }

    /// Deletes a key; returns whether it existed, and the revision after the call.
    pub async fn delete(&self, key: &[u8]) -> Result<(bool, i64), Error> {
        let resp: DeleteRangeResponse = self
            .unary(
                proto::DELETE_RANGE,
                DeleteRangeRequest {
                    key: key.to_vec(),
                    range_end: Vec::new(),
                },
            )
            .await?;
        Ok((resp.deleted > 0, ResponseHeader::revision_of(&resp.header)))
    }

    /// Writes `value` (or deletes the key when `None`) only if the key's `mod_revision` is still
    /// `expected` (0: the key must not exist). Returns the revision of the write, or `None`
    /// when someone else changed the key first.
    pub async fn swap(
        &self,
        key: &[u8],
        expected: i64,
        value: Option<&[u8]>,
    ) -> Result<Option<i64>, Error> {
        self.swap_leased(key, expected, value, 0).await
    }

    /// [`Client::swap`], the written key attached to `lease` (0: none): it disappears when the
    /// lease ends.
    pub async fn swap_leased(
        &self,
        key: &[u8],
        expected: i64,
        value: Option<&[u8]>,
        lease: i64,
    ) -> Result<Option<i64>, Error> {
        let op = match value {
            Some(v) => Request::Put(PutRequest {
                key: key.to_vec(),
                value: v.to_vec(),
                lease,
            }),
            None => Request::DeleteRange(DeleteRangeRequest {
                key: key.to_vec(),
                range_end: Vec::new(),
            }),
        };
        let resp: TxnResponse = self
            .unary(
                proto::TXN,
                TxnRequest {
                    compare: vec![Compare {
                        result: proto::COMPARE_EQUAL,
                        target: proto::COMPARE_MOD,
                        key: key.to_vec(),
                        target_union: Some(CompareTarget::ModRevision(expected)),
                    }],
                    success: vec![RequestOp { request: Some(op) }],
                    failure: Vec::new(),
                },
            )
            .await?;
        Ok(resp
            .succeeded
            .then(|| ResponseHeader::revision_of(&resp.header)))
    }

    /// A new lease of `ttl`; returns its id and the TTL etcd granted (seconds).
    pub async fn grant(&self, ttl: Duration) -> Result<(i64, i64), Error> {
        let resp: proto::LeaseGrantResponse = self
            .unary(
                proto::LEASE_GRANT,
                proto::LeaseGrantRequest {
                    ttl: ttl.as_secs().max(1) as i64,
                    id: 0,
                },
            )
            .await?;
        if !resp.error.is_empty() {
            return Err(Error::Rejected {
                endpoint: self.endpoints(),
                msg: resp.error,
            });
        }
        Ok((resp.id, resp.ttl))
    }

    /// Refreshes a lease once; returns the TTL left (0: the lease has expired or was revoked).
    /// etcd's keep-alive is a stream; one request and its answer on a fresh stream is enough
    /// at the rate a leader refreshes (every third of the TTL).
    pub async fn keep_alive(&self, lease: i64) -> Result<i64, Error> {
        let i = self.inner.current.load(Ordering::Relaxed);
        let endpoint = self.inner.endpoints[i].clone();
        let failed = |msg: String| Error::Unreachable {
            endpoints: endpoint.clone(),
            msg,
        };
        let call = async {
            let mut grpc = tonic::client::Grpc::new(self.inner.channels[i].clone());
            grpc.ready()
                .await
                .map_err(|e| failed(format!("connecting: {e}")))?;
            let codec = tonic_prost::ProstCodec::<
                proto::LeaseKeepAliveRequest,
                proto::LeaseKeepAliveResponse,
            >::default();
            let path = http::uri::PathAndQuery::from_static(proto::LEASE_KEEP_ALIVE);
            let request = tokio_stream::once(proto::LeaseKeepAliveRequest { id: lease });
            let mut responses = grpc
                .streaming(tonic::Request::new(request), path, codec)
                .await
                .map_err(|s| failed(describe(&s)))?
                .into_inner();
            match responses.message().await {
                Ok(Some(r)) => Ok(r.ttl),
                Ok(None) => Err(failed("keep-alive stream closed without an answer".into())),
                Err(s) => Err(failed(describe(&s))),
            }
        };
        let result = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(result) => result,
            Err(_) => Err(failed(format!("no answer within {CALL_TIMEOUT:?}"))),
        };
        if result.is_err() {
            // The next call starts on another member.
            let n = self.inner.channels.len();
            let _ = self.inner.current.compare_exchange(
                i,
                (i + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        result
    }

    /// Ends a lease now: every key attached to it is deleted.
    pub async fn revoke(&self, lease: i64) -> Result<(), Error> {
        let _: proto::LeaseRevokeResponse = self
            .unary(proto::LEASE_REVOKE, proto::LeaseRevokeRequest { id: lease })
            .await?;
        Ok(())
    }

    /// Discards every revision before `revision` (what operators schedule, and how tests make
    /// a watch's start revision disappear).
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        let _: proto::CompactionResponse = self
            .unary(
                proto::COMPACT,
                proto::CompactionRequest {
                    revision,
                    physical: true,
                },
            )
            .await?;
        Ok(())
    }

    /// Opens a watch of every key under `prefix` from `start_revision` (inclusive), on the
    /// first endpoint that accepts it.
    pub async fn watch(&self, prefix: &[u8], start_revision: i64) -> Result<Watch, Error> {
        let n = self.inner.channels.len();
        let start = self.inner.current.load(Ordering::Relaxed);
        let mut last = None;
        for attempt in 0..n {
            let i = (start + attempt) % n;
            let endpoint = self.inner.endpoints[i].clone();
            match tokio::time::timeout(CALL_TIMEOUT, self.open_watch(i, prefix, start_revision))
                .await
            {
                Ok(Ok(w)) => {
                    self.inner.current.store(i, Ordering::Relaxed);
                    return Ok(w);
                }
                Ok(Err(e @ Error::Compacted(_))) => return Err(e),
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some(format!("{endpoint}: no answer within {CALL_TIMEOUT:?}")),
            }
        }
        Err(Error::Unreachable {
            endpoints: self.endpoints(),
            msg: last.unwrap_or_default(),
        })
    }

    async fn open_watch(
        &self,
        i: usize,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<Watch, Error> {
        let endpoint = self.inner.endpoints[i].clone();
        let ended = |msg: String| Error::WatchEnded {
            endpoint: endpoint.clone(),
            msg,
        };
        let mut grpc = tonic::client::Grpc::new(self.inner.channels[i].clone());
        grpc.ready()
            .await
            .map_err(|e| ended(format!("connecting: {e}")))?;
        // The request side stays open for as long as the watch lives: etcd ends a watch
        // stream whose client half-closes.
        let (requests, rx) = mpsc::channel(1);
        let create = WatchRequest {
            request_union: Some(WatchRequestUnion::CreateRequest(WatchCreateRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                start_revision,
                progress_notify: true,
            })),
        };
        let _ = requests.send(create).await;
        let codec = tonic_prost::ProstCodec::<WatchRequest, WatchResponse>::default();
        let path = http::uri::PathAndQuery::from_static(proto::WATCH);
        let mut responses = grpc
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
                path,
                codec,
            )
            .await
            .map_err(|s| ended(describe(&s)))?
            .into_inner();
        // The first response confirms (or refuses) the watch.
        match responses.message().await {
            Ok(Some(r)) if r.compact_revision > 0 => Err(Error::Compacted(r.compact_revision)),
            Ok(Some(r)) if r.created && !r.canceled => Ok(Watch {
                endpoint,
                responses,
                _requests: requests,
            }),
            Ok(Some(r)) => Err(ended(format!("watch refused: {}", r.cancel_reason))),
            Ok(None) => Err(ended("closed before the watch was created".into())),
            Err(s) => Err(ended(describe(&s))),
        }
    }
}

/// An open watch: its responses, in revision order.
pub struct Watch {
    endpoint: String,
    responses: tonic::Streaming<WatchResponse>,
    _requests: mpsc::Sender<WatchRequest>,
}

impl Watch {
    /// The next response with events or progress. Errors when the stream ends or breaks, and
    /// with [`Error::Compacted`] when etcd cancels the watch because it fell behind compaction.
    pub async fn next(&mut self) -> Result<WatchResponse, Error> {
        let ended = |msg: String| Error::WatchEnded {
            endpoint: self.endpoint.clone(),
            msg,
        };
        match self.responses.message().await {
            Ok(Some(r)) if r.compact_revision > 0 => Err(Error::Compacted(r.compact_revision)),
            Ok(Some(r)) if r.canceled => Err(ended(format!("canceled: {}", r.cancel_reason))),
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(ended("closed by the server".into())),
            Err(s) => Err(ended(describe(&s))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_addresses() {
        let t = Target::parse("etcd://127.0.0.1:2379,etcd-2:2379/weft/prod/").expect("parses");
        assert_eq!(t.endpoints, ["127.0.0.1:2379", "etcd-2:2379"]);
        assert_eq!(t.prefix, "/weft/prod");
        assert_eq!(t.key("resources/a.yaml"), b"/weft/prod/resources/a.yaml");
        assert_eq!(t.to_string(), "etcd://127.0.0.1:2379,etcd-2:2379/weft/prod");
        for (bad, why) in [
            ("http://127.0.0.1:2379/weft", "must start with etcd://"),
            ("etcd://127.0.0.1:2379", "a key prefix is required"),
            ("etcd://127.0.0.1:2379/", "a key prefix is required"),
            (
                "etcd://127.0.0.1/weft",
                "endpoint \"127.0.0.1\" is not HOST:PORT",
            ),
            ("etcd://a:1,:2/weft", "endpoint \":2\" is not HOST:PORT"),
            (
                "etcd://a:99999/weft",
                "endpoint \"a:99999\" is not HOST:PORT",
            ),
        ] {
            let e = Target::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/weft/"), b"/weft0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }
}
