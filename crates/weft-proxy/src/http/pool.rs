//! The client connection pool, per endpoint address: one multiplexed HTTP/2 connection and a few
//! idle keep-alive HTTP/1 connections. HTTP/1 upgrades (WebSocket) and CONNECT always get a fresh
//! HTTP/1 connection, which becomes a byte relay once both sides have switched protocols.
//!
//! Lifetimes:
//! - an HTTP/1 connection goes back to the pool when its response body ends; it is closed after
//!   [`PoolLimits::h1_idle_timeout`] unused, or at once when
//!   [`PoolLimits::max_idle_h1_per_endpoint`] are already idle;
//! - an HTTP/2 connection leaves the pool after a whole [`PoolLimits::h2_idle_timeout`] period without a new
//!   request, or when [`Pool::retire`] says its endpoint left discovery; it then closes as soon
//!   as its last stream ends (in-flight streams are never cut).
//!
//! Connections are pooled per [`Dst`]: the address and, for a meshed peer, the identity its TLS
//! certificate must carry, so a plaintext and an mTLS connection to one address never mix.
//! HTTP/2 connections send keep-alive PINGs ([`H2_KEEPALIVE_INTERVAL`]); one that gets no answer
//! within [`H2_KEEPALIVE_TIMEOUT`] is closed, so a request never waits on a dead peer (network
//! partition) for TCP's own retransmission timeout.
//!
//! Retries ("no request dropped that a retry could save"): a request is sent again, once, on a
//! fresh connection when the pooled one proved unusable before the request left: it never left
//! (hyper hands an HTTP/1 request back unsent; an HTTP/2 connection opens no new stream once
//! closed or gone away), or the HTTP/2 peer refused the stream with GOAWAY / REFUSED_STREAM
//! (RFC 9113 §8.7: not processed) before any request body byte was read. HTTP/2 connections are
//! driven on `h2` directly ([`h2client`]).

use super::{boxed, h2client, h2common, Body, BoxError, EndObserver, Error, OnEnd};
pub use crate::config::PoolLimits;
use crate::{
    connect::{self, Dial, Io},
    discovery::AuthorityOverride,
    fxhash::FxHashMap,
    metrics::{Labels, Metrics},
    mtls::{ClientTls, SessionProtocol},
    relay,
};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use hyper::client::conn::http1 as client1;
use hyper_util::rt::TokioIo;
use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Instant;

/// An HTTP/2 connection, client or server, sends a PING this often ...
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ... and is closed (its streams fail, the next request opens a new one) if the PING is not
/// answered within this.
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where pooled connections go: an address, plus the TLS for a meshed peer.
#[derive(Clone, Debug)]
pub struct Dst {
    pub addr: SocketAddr,
    pub tls: Option<ClientTls>,
    /// A gateway endpoint (only with `tls`): connections go to its opaque-transport port and
    /// start with a transport header naming the override, for the session protocol of the
    /// connection ([`Wire`]).
    pub tagged: Option<Tagged>,
}

/// How a gateway endpoint is reached: its proxy's port for opaque transport, and the name the
/// gateway forwards to (which also names the pool key's peer: [`AuthorityOverride::pool_peer`]).
#[derive(Clone, Debug)]
pub struct Tagged {
    pub port: u16,
    pub authority: Arc<AuthorityOverride>,
}

impl From<SocketAddr> for Dst {
    fn from(addr: SocketAddr) -> Dst {
        Dst {
            addr,
            tls: None,
            tagged: None,
        }
    }
}

/// The pool key: the address and the peer identity (`None` = plaintext) — for a gateway, the
/// identity and the name it forwards to ([`AuthorityOverride::pool_peer`]: one gateway serves many names, their
/// connections never mix; the common key stays two words to hash).
type Key = (SocketAddr, Option<Arc<str>>);

/// A pooled connection's key: the endpoint's, and the worker whose thread drives the connection
/// ([`crate::workers::shard`]).
type ShardKey = (Key, usize);

impl Dst {
    /// This worker's key for `self`.
    fn shard_key(&self) -> ShardKey {
        (self.key(), crate::workers::shard())
    }

    fn key(&self) -> Key {
        let peer = match (&self.tagged, &self.tls) {
            (Some(t), Some(_)) => Some(t.authority.pool_peer.clone()),
            (_, tls) => tls.as_ref().map(|t| t.identity.clone()),
        };
        (self.addr, peer)
    }
}

/// Which client protocol to use towards an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

/// Client connections, per endpoint address. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    connect_timeout: Duration,
    limits: PoolLimits,
    metrics: Metrics,
    /// Keyed by discovery's addresses and identities (FxHash: a lookup per request).
    /// Per worker ([`crate::workers::shard`]): a worker's requests use connections its own
    /// thread drives, and a peer with several workers gets a connection from each of ours.
    h2: Mutex<FxHashMap<ShardKey, Arc<H2Slot>>>,
    h1: Mutex<FxHashMap<ShardKey, Vec<H1Conn>>>,
    next_id: AtomicU64,
}

/// The one HTTP/2 connection to an endpoint; the async lock makes concurrent first requests share
/// one handshake.
#[derive(Default)]
struct H2Slot {
    conn: tokio::sync::Mutex<Option<H2Conn>>,
    /// Connects that failed, and the last one's error: requests that waited for a connect that
    /// failed fail with it rather than each trying again in turn (a blackholed endpoint would
    /// otherwise cost every waiter a whole connect timeout, one after the other).
    failures: AtomicU64,
    last_failure: Mutex<String>,
}

/// A connection ready for one request ([`Pool::checkout`]).
pub struct Checkout<'p> {
    pool: &'p Pool,
    conn: Ready,
}

enum Ready {
    H2(H2Conn),
    /// `reused`: an idle pooled connection, which the server may have closed meanwhile.
    H1 {
        conn: H1Conn,
        reused: bool,
    },
    /// A fresh connection for an upgrade or CONNECT.
    Upgrade(Io),
}

impl Checkout<'_> {
    /// Sends `req` (to the `dst` it was checked out for). A request a pooled connection proves
    /// unable to carry before it left is sent again on a fresh one (see the module's "Retries").
    pub async fn send(
        self,
        dst: &Dst,
        req: Request<Body>,
        labels: &Labels,
    ) -> Result<Response<Body>, Error> {
        match self.conn {
            Ready::H2(conn) => self.pool.send_h2(conn, dst, req, labels).await,
            Ready::H1 { conn, reused } => self.pool.send_h1(conn, reused, dst, req, labels).await,
            // Boxed: an upgrade's states are large and rare.
            Ready::Upgrade(io) => Box::pin(self.pool.send_upgrade_on(io, dst.addr, req)).await,
        }
    }
}

#[derive(Clone)]
struct H2Conn {
    id: u64,
    sender: h2client::Sender,
    /// Set by every request; the connection's driver clears it once per idle period.
    used: Arc<AtomicBool>,
}

/// An HTTP/1 connection; `idle` tells its driver task when it went idle, and dropping `_held`
/// tells it the connection is out of the pool for good.
struct H1Conn {
    sender: client1::SendRequest<Body>,
    idle: Arc<IdleSince>,
    _held: tokio::sync::oneshot::Sender<()>,
}

/// When a pooled HTTP/1 connection went idle (`None`: in use). A request takes the connection
/// from the pool and gives it back with one store each, waking nobody: the driver reads it when
/// its own timer fires (once per idle timeout), where a channel woke it twice per request.
struct IdleSince {
    epoch: Instant,
    /// 0: in use; else 1 + nanoseconds from `epoch` (exact: a timer never fires early).
    nanos: AtomicU64,
}

impl IdleSince {
    fn new() -> IdleSince {
        IdleSince {
            epoch: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    fn set(&self, since: Option<Instant>) {
        let nanos = since.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(self.epoch).as_nanos())
                .unwrap_or(u64::MAX - 1)
                + 1
        });
        self.nanos.store(nanos, Ordering::Release);
    }

    fn get(&self) -> Option<Instant> {
        match self.nanos.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.epoch + Duration::from_nanos(n - 1)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    pub fn new(connect_timeout: Duration, metrics: Metrics) -> Pool {
        Pool::with_limits(connect_timeout, PoolLimits::default(), metrics)
    }

    pub fn with_limits(connect_timeout: Duration, limits: PoolLimits, metrics: Metrics) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                connect_timeout,
                limits,
                metrics,
                h2: Mutex::default(),
                h1: Mutex::default(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Sends `req` to `dst` over a pooled connection. `labels` name the connection in the TCP
    /// metrics if a new one has to be opened.
    pub async fn send(
        &self,
        dst: impl Into<Dst>,
        wire: Wire,
        req: Request<Body>,
        labels: &Labels,
    ) -> Result<Response<Body>, Error> {
        let dst = dst.into();
        self.checkout(&dst, wire, labels)
            .await?
            .send(&dst, req, labels)
            .await
    }

    /// A connection to `dst` for one request: the pooled one, or a new one. An error here means
    /// no connection could be made (TCP, TLS or the HTTP handshake failed) and nothing was sent,
    /// so the request may go to another endpoint whatever it is.
    pub async fn checkout(
        &self,
        dst: &Dst,
        wire: Wire,
        labels: &Labels,
    ) -> Result<Checkout<'_>, Error> {
        let conn = match wire {
            Wire::Http2 => Ready::H2(self.h2_conn(dst, labels).await?),
            Wire::Http1 => match self.take_idle_h1(&dst.shard_key()) {
                Some(conn) => Ready::H1 { conn, reused: true },
                // Boxed, as for HTTP/2: opening a connection is the rare case.
                None => Ready::H1 {
                    conn: Box::pin(self.open_h1(dst, labels)).await?,
                    reused: false,
                },
            },
        };
        Ok(Checkout { pool: self, conn })
    }

    /// Makes a connection to `dst` ready for later requests (an endpoint's reconnect after a
    /// failed connect): HTTP/2 is kept as the endpoint's connection, HTTP/1 as an idle one.
    pub async fn reconnect(&self, dst: &Dst, wire: Wire, labels: &Labels) -> Result<(), Error> {
        if let Ready::H1 { conn, .. } = self.checkout(dst, wire, labels).await?.conn {
            self.put_idle_h1(dst.shard_key(), conn);
        }
        Ok(())
    }

    /// A fresh HTTP/1 connection to `dst` for an upgrade or CONNECT request (see
    /// [`Pool::send_upgrade`]); an error means nothing was sent, as for [`Pool::checkout`].
    pub async fn checkout_upgrade(
        &self,
        dst: &Dst,
        labels: &Labels,
    ) -> Result<Checkout<'_>, Error> {
        let io = self.connect(dst, Wire::Http1, labels).await?;
        Ok(Checkout {
            pool: self,
            conn: Ready::Upgrade(io),
        })
    }

    /// Sends an upgrade or CONNECT request on a fresh HTTP/1 connection. When the server switches
    /// protocols, the client's and the server's upgraded streams are relayed to each other.
    pub async fn send_upgrade(
        &self,
        dst: impl Into<Dst>,
        req: Request<Body>,
        labels: &Labels,
    ) -> Result<Response<Body>, Error> {
        let dst = dst.into();
        self.checkout_upgrade(&dst, labels)
            .await?
            .send(&dst, req, labels)
            .await
    }

    async fn send_h2(
        &self,
        conn: H2Conn,
        dst: &Dst,
        req: Request<Body>,
        labels: &Labels,
    ) -> Result<Response<Body>, Error> {
        let head = Head::of(&req);
        // A body already at its end (a GET) is rebuilt empty: no shared slot to keep it in.
        let (req, replay) = match http_body::Body::is_end_stream(req.body()) {
            true => (req, None),
            false => {
                let (req, replay) = replayable(req);
                (req, Some(replay))
            }
        };
        let err = match self.attempt_h2(conn, dst, req).await {
            Ok(resp) => return Ok(resp),
            Err(err) => err,
        };
        if !err.retry_safe() {
            return Err(err);
        }
        // The body was not read (or not at all): the request is built again around it.
        let req = match &replay {
            Some(replay) => match replay.take() {
                Some(body) => head.rebuild(body),
                None => return Err(err),
            },
            None => head.rebuild(super::empty()),
        };
        tracing::debug!(addr = %dst.addr, error = %err, "retrying a request the connection never delivered");
        // Boxed: rare, and its states would widen every request's future.
        Box::pin(async {
            let conn = self.h2_conn(dst, labels).await?;
            self.attempt_h2(conn, dst, req).await
        })
        .await
    }

    /// One attempt on `conn`; a connection that takes no new streams leaves the pool.
    async fn attempt_h2(
        &self,
        conn: H2Conn,
        dst: &Dst,
        req: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        let H2Conn { id, sender, used } = conn;
        used.store(true, Ordering::Relaxed);
        drop(used);
        let err = match sender.send(req).await {
            Ok(resp) => return Ok(resp),
            Err(e) => e,
        };
        let unprocessed = err.unsent || refused_unprocessed(&err.source);
        if unprocessed || err.closed {
            // This connection takes no new streams: the next request opens a fresh one.
            self.evict_h2(&dst.shard_key(), id);
        }
        Err(Error::Upstream {
            addr: dst.addr,
            source: err.into_error(),
            unprocessed,
        })
    }

    async fn send_h1(
        &self,
        conn: H1Conn,
        reused: bool,
        dst: &Dst,
        req: Request<Body>,
        labels: &Labels,
    ) -> Result<Response<Body>, Error> {
        let addr = dst.addr;
        let key = dst.shard_key();
        let upstream = |source: hyper::Error| Error::Upstream {
            addr,
            source: source.into(),
            unprocessed: false,
        };
        let mut conn = conn;
        let mut req = req;
        if reused {
            // A reused connection the server closed meanwhile hands the request back unsent:
            // retry it once on a fresh connection.
            match conn.sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.release_h1_after(key, conn, resp)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(upstream(e.into_error())),
                },
            }
            conn = Box::pin(self.open_h1(dst, labels)).await?;
        }
        let resp = conn.sender.send_request(req).await.map_err(upstream)?;
        Ok(self.release_h1_after(key, conn, resp))
    }

    /// The connection goes back to the pool when the response body ends (or is dropped).
    fn release_h1_after(
        &self,
        key: ShardKey,
        conn: H1Conn,
        resp: Response<hyper::body::Incoming>,
    ) -> Response<Body> {
        let release = Release {
            pool: Arc::downgrade(&self.inner),
            key,
            conn,
        };
        resp.map(|body| boxed(OnEnd::new(boxed(body), release)))
    }

    /// The upgrade exchange on `io`, a fresh connection (see [`Pool::send_upgrade`]).
    async fn send_upgrade_on(
        &self,
        io: Io,
        addr: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<Response<Body>, Error> {
        let client_side = super::upgrade_on(&mut req);
        let is_connect = req.method() == Method::CONNECT;
        let (mut sender, conn) = client1::handshake(TokioIo::new(io))
            .await
            .map_err(|source| Error::Handshake {
                addr,
                source: source.into(),
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "HTTP/1 upgrade connection ended");
            }
        });
        let mut resp = sender
            .send_request(req)
            .await
            .map_err(|source| Error::Upstream {
                addr,
                source: source.into(),
                unprocessed: false,
            })?;
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS
            || (is_connect && resp.status().is_success());
        if switched {
            let server_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                let server_side = async { server_side.await.map_err(BoxError::from) };
                match tokio::try_join!(client_side, server_side) {
                    Ok((c, s)) => {
                        if let Err(e) = relay::relay(c, TokioIo::new(s)).await {
                            tracing::debug!(error = %e, "upgraded relay ended with an error");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade did not complete"),
                }
            });
        }
        Ok(resp.map(boxed))
    }

    /// `addr` left discovery: its pooled connections take no new requests; each closes once its
    /// in-flight requests end.
    pub fn retire(&self, addr: SocketAddr) {
        let slots: Vec<Arc<H2Slot>> = {
            let mut map = lock(&self.inner.h2);
            let keys: Vec<ShardKey> = map.keys().filter(|k| k.0 .0 == addr).cloned().collect();
            keys.iter().filter_map(|k| map.remove(k)).collect()
        };
        for slot in slots {
            if let Ok(mut conn) = slot.conn.try_lock() {
                *conn = None;
            }
        }
        lock(&self.inner.h1).retain(|k, _| k.0 .0 != addr);
    }

    /// Endpoints with a pooled HTTP/2 connection.
    #[cfg(test)]
    pub fn h2_endpoints(&self) -> usize {
        lock(&self.inner.h2).len()
    }

    /// Idle pooled HTTP/1 connections to `addr`.
    #[cfg(test)]
    pub fn idle_h1(&self, addr: SocketAddr) -> usize {
        lock(&self.inner.h1)
            .iter()
            .filter(|(k, _)| k.0 .0 == addr)
            .flat_map(|(_, l)| l.iter())
            .filter(|c| !c.sender.is_closed() && c.idle.get().is_some())
            .count()
    }

    async fn h2_conn(&self, dst: &Dst, labels: &Labels) -> Result<H2Conn, Error> {
        let key = dst.shard_key();
        let slot = {
            let mut slots = lock(&self.inner.h2);
            match slots.get(&key) {
                Some(slot) => slot.clone(),
                None => slots.entry(key).or_default().clone(),
            }
        };
        // The common case, a live connection, without waiting for the slot's lock (it is held
        // for long only while connecting).
        if let Ok(conn) = slot.conn.try_lock() {
            if let Some(c) = conn.as_ref().filter(|c| !c.sender.is_closed()) {
                return Ok(c.clone());
            }
        }
        let failures = slot.failures.load(Ordering::Acquire);
        // One connection per endpoint: concurrent first requests wait for the same handshake.
        let mut conn = slot.conn.lock().await;
        if let Some(c) = conn.as_ref().filter(|c| !c.sender.is_closed()) {
            return Ok(c.clone());
        }
        if slot.failures.load(Ordering::Acquire) != failures {
            return Err(Error::Connect(connect::ConnectError::Concurrent {
                addr: dst.addr,
                reason: lock(&slot.last_failure).clone(),
            }));
        }
        // Boxed: connecting (TCP, TLS, handshake) is rare and its states are large; inline, they
        // would size every request's future (moved into its HTTP/2 stream's slot) for the common case.
        match Box::pin(self.open_h2(dst, labels)).await {
            Ok(c) => {
                *conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                *lock(&slot.last_failure) = e.to_string();
                slot.failures.fetch_add(1, Ordering::Release);
                Err(e)
            }
        }
    }

    async fn open_h2(&self, dst: &Dst, labels: &Labels) -> Result<H2Conn, Error> {
        let addr = dst.addr;
        let key = dst.shard_key();
        let io = self.connect(dst, Wire::Http2, labels).await?;
        let (sender, conn) = h2client::handshake(io)
            .await
            .map_err(|source| Error::Handshake {
                addr,
                source: source.into(),
            })?;
        let keep_alive = h2common::KeepAlive {
            interval: H2_KEEPALIVE_INTERVAL,
            timeout: H2_KEEPALIVE_TIMEOUT,
        };
        let c = H2Conn {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            sender,
            used: Arc::new(AtomicBool::new(true)),
        };
        let pool = Arc::downgrade(&self.inner);
        let (id, used, idle) = (c.id, c.used.clone(), self.inner.limits.h2_idle_timeout);
        tokio::spawn(async move {
            let conn = conn.run(keep_alive);
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%addr, error = %e, "HTTP/2 client connection ended");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(idle) => {
                        if used.swap(false, Ordering::Relaxed) {
                            continue;
                        }
                        // Idle for a whole period: out of the pool; the connection closes once
                        // the last handle and stream are gone.
                        if let Some(inner) = pool.upgrade() {
                            Pool { inner }.evict_h2(&key, id);
                        }
                        let _ = conn.as_mut().await;
                        return;
                    }
                }
            }
        });
        Ok(c)
    }

    /// Removes connection `id` from `key`'s slot (if it is still the pooled one).
    fn evict_h2(&self, key: &ShardKey, id: u64) {
        let mut map = lock(&self.inner.h2);
        let Some(slot) = map.get(key).cloned() else {
            return;
        };
        // A locked slot is being refilled by a request: leave it to that request.
        let Ok(mut conn) = slot.conn.try_lock() else {
            return;
        };
        if conn.as_ref().is_some_and(|c| c.id == id) {
            *conn = None;
            map.remove(key);
        }
    }

    /// The most recently used idle connection (LIFO, as hyper's own pool): under steady
    /// concurrency the same few stay warm and the rest reach the idle timeout. Closed ones met on
    /// the way are dropped; the walk passes only connections
    /// released a moment ago and still finishing, so it is short in the steady state.
    fn take_idle_h1(&self, key: &ShardKey) -> Option<H1Conn> {
        let mut map = lock(&self.inner.h1);
        let list = map.get_mut(key)?;
        let mut taken = None;
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            if list[i].sender.is_closed() {
                list.remove(i);
            } else if list[i].sender.is_ready() {
                taken = Some(list.remove(i));
                break;
            }
            // Alive but not ready yet (its last response is still finishing): skipped, kept.
        }
        if list.is_empty() {
            map.remove(key);
        }
        let conn = taken?;
        conn.idle.set(None);
        Some(conn)
    }

    fn put_idle_h1(&self, key: ShardKey, conn: H1Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let max = self.inner.limits.max_idle_h1_per_endpoint;
        let mut map = lock(&self.inner.h1);
        let list = map.entry(key).or_default();
        if list.len() >= max {
            // Connections that expired at the bottom of the stack are only swept when the list
            // is full, so the sweep costs O(n) once per n releases at most.
            list.retain(|c| !c.sender.is_closed());
        }
        if list.len() < max {
            conn.idle.set(Some(Instant::now()));
            list.push(conn);
        }
        // Else `conn` drops here: hyper closes a connection nobody can send on.
    }

    /// A new HTTP/1 connection, ready to send on.
    async fn open_h1(&self, dst: &Dst, labels: &Labels) -> Result<H1Conn, Error> {
        let addr = dst.addr;
        let io = TokioIo::new(self.connect(dst, Wire::Http1, labels).await?);
        let (mut sender, conn) =
            client1::handshake(io)
                .await
                .map_err(|source| Error::Handshake {
                    addr,
                    source: source.into(),
                })?;
        let idle = Arc::new(IdleSince::new());
        let (held, mut dropped) = tokio::sync::oneshot::channel::<()>();
        let timeout = self.inner.limits.h1_idle_timeout;
        let since = idle.clone();
        tokio::spawn(async move {
            tokio::pin!(conn);
            loop {
                // In use: looked at again a timeout from now; idle: when its timeout is up.
                let deadline = since.get().unwrap_or_else(Instant::now) + timeout;
                let expired = tokio::time::sleep_until(deadline);
                tokio::pin!(expired);
                tokio::select! {
                    biased;
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%addr, error = %e, "HTTP/1 client connection ended");
                        }
                        return;
                    }
                    _ = &mut dropped => {
                        // Out of the pool for good: finish the request in flight, if any.
                        let _ = conn.as_mut().await;
                        return;
                    },
                    _ = expired => {
                        if since.get().is_some_and(|t| t + timeout <= Instant::now()) {
                            tracing::debug!(%addr, "closing idle HTTP/1 connection");
                            return;
                        }
                    }
                }
            }
        });
        sender.ready().await.map_err(|source| Error::Handshake {
            addr,
            source: source.into(),
        })?;
        Ok(H1Conn {
            sender,
            idle,
            _held: held,
        })
    }

    /// Opens a metered TCP connection, with TLS for a meshed peer, within the connect timeout
    /// (one bound for TCP and TLS together). A gateway endpoint is dialled on its
    /// opaque-transport port, the transport header naming the override and `wire`.
    async fn connect(&self, dst: &Dst, wire: Wire, labels: &Labels) -> Result<Io, Error> {
        let tagged = dst.tagged.as_ref().filter(|_| dst.tls.is_some());
        let header = tagged.map(|t| {
            t.authority.transport_header(Some(match wire {
                Wire::Http1 => SessionProtocol::Http1,
                Wire::Http2 => SessionProtocol::Http2,
            }))
        });
        let dial = Dial {
            addr: tagged.map_or(dst.addr, |t| SocketAddr::new(dst.addr.ip(), t.port)),
            tls: dst.tls.as_ref(),
            header: header.as_ref(),
        };
        Ok(connect::connect(
            dial,
            self.inner.connect_timeout,
            &self.inner.metrics,
            labels,
        )
        .await?)
    }
}

/// Did the HTTP/2 peer refuse the stream in a way that proves it was not processed?
/// GOAWAY covers streams above its last-stream-id and streams opened after it arrived; a
/// REFUSED_STREAM reset is the same promise for one stream (RFC 9113 §6.8, §8.7).
fn refused_unprocessed(err: &h2::Error) -> bool {
    err.is_remote() && (err.is_go_away() || err.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// What is needed to send a request again (extensions are not cloneable and not needed by a
/// plain, non-upgrade request). The route retry loop (`retry::send`) uses it too.
pub(crate) struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    pub(crate) fn of<B>(req: &Request<B>) -> Head {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    pub(crate) fn rebuild(&self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Shares the request body with the pool so an unread body can be taken back for a retry.
struct Shared {
    body: Mutex<Option<Body>>,
    touched: AtomicBool,
}

struct Replay(Arc<Shared>);

impl Replay {
    /// The body, if nothing has read from it yet.
    fn take(&self) -> Option<Body> {
        if self.0.touched.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.0.body).take()
    }
}

fn replayable(req: Request<Body>) -> (Request<Body>, Replay) {
    let shared = Arc::new(Shared {
        body: Mutex::new(None),
        touched: AtomicBool::new(false),
    });
    let req = req.map(|body| {
        *lock(&shared.body) = Some(body);
        boxed(ReplayBody(shared.clone()))
    });
    (req, Replay(shared))
}

struct ReplayBody(Arc<Shared>);

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.touched.store(true, Ordering::Release);
        match lock(&self.0.body).as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        lock(&self.0.body)
            .as_ref()
            .is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        lock(&self.0.body)
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

/// Returns an HTTP/1 connection to its pool when its response body ends (or is dropped).
struct Release {
    pool: Weak<Inner>,
    key: ShardKey,
    conn: H1Conn,
}

impl EndObserver for Release {
    fn end(self, _stream_error: bool) {
        if let Some(inner) = self.pool.upgrade() {
            Pool { inner }.put_idle_h1(self.key, self.conn);
        }
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
