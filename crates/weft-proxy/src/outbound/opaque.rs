//! The outbound path's opaque byte streams: a connection relayed to one endpoint (chosen per
//! connection, by the target's policy or its discovered endpoints), and explicit mode's
//! `CONNECT` tunnels.

use super::*;
use crate::connect::Io;

/// Opaque TCP: one endpoint for the whole connection, bytes relayed both ways with half-close.
/// A meshed endpoint whose discovery hint names an opaque-transport port is reached on that port
/// (its proxy's inbound listener) with ALPN `transport.l5d.io/v1`, the transport header naming the
/// endpoint's own port; otherwise over mTLS (or plaintext) to the endpoint itself. `hello`:
/// the application's ClientHello when the policy routes TLS by SNI (it is in `client`'s
/// replayed bytes: the application's own TLS goes through untouched). `caller`: the identity
/// a gateway relays the stream for, named in the transport header (none from an application).
pub(super) async fn forward_opaque<I>(
    ob: &Outbound,
    client: Prefixed<I>,
    target: &Target,
    dest: Dest,
    hello: Hello<'_>,
    deadline: Instant,
    caller: Option<&str>,
) -> Result<(), Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let dest = ob.opaque_dest(target, dest, hello).await?;
    // `picked` keeps the endpoint loaded while the stream is open.
    let Opened { picked, server, .. } = open(ob, target, dest, deadline, None, caller, false)
        .await
        .map_err(|f| f.error)?;
    let addr = picked.addr;
    let moved = relay::relay(client, server)
        .await
        .map_err(|source| Error::Relay { addr, source })?;
    tracing::debug!(%target, %addr, ?moved, "opaque connection closed");
    Ok(())
}

/// An opaque stream's endpoint and the connection made to it.
struct Opened {
    /// Holds the endpoint as loaded while the stream is open.
    picked: Picked,
    labels: Labels,
    server: Io,
}

/// Why no stream could be opened, with the labels to count it under.
struct Failed {
    error: Error,
    labels: Labels,
}

/// Picks an endpoint of `dest` and connects to it: mTLS to a meshed one, and opaque transport
/// (the transport header, on its proxy's port) to one that takes it — to a gateway only, when
/// `gateway_only`. An endpoint no connection could be made to leaves rotation and another is
/// picked until `deadline`, as for HTTP requests (nothing was sent on the stream yet); when the
/// deadline passes that way, the last connect error is the answer.
async fn open(
    ob: &Outbound,
    target: &Target,
    dest: Dest,
    deadline: Instant,
    authority: Option<String>,
    caller: Option<&str>,
    gateway_only: bool,
) -> Result<Opened, Failed> {
    let (mut dest, mut avoid, mut authority) = (dest, None, authority);
    let mut not_connected = None;
    loop {
        let mut picked = match ob.pick(target, dest, deadline, avoid).await {
            Ok(picked) => picked,
            Err(error) => {
                // Out of time after failed connects: the last one says why.
                let error = not_connected.unwrap_or(error);
                let labels = ob.labels(authority, target_addr_of(target), None, NO_TLS);
                return Err(Failed { error, labels });
            }
        };
        let (addr, endpoint) = (picked.addr, picked.endpoint.as_ref());
        let transport = endpoint.is_some_and(|e| {
            e.opaque_transport_port.is_some() && (!gateway_only || e.authority_override.is_some())
        });
        let (tls, tls_label) = match ob.tls_for(endpoint, transport, deadline).await {
            Ok(tls) => tls,
            Err(error) => {
                let labels = ob.labels(authority, addr, endpoint, NO_TLS);
                return Err(Failed { error, labels });
            }
        };
        let mut labels = ob.labels(authority, addr, endpoint, tls_label);
        let (dial_addr, header) = match transport {
            true => opaque_dial(addr, endpoint, tls.is_some(), caller),
            false => (addr, None),
        };
        let dial = Dial {
            addr: dial_addr,
            tls: tls.as_ref(),
            header: header.as_ref(),
        };
        let error: Error =
            match connect::connect(dial, ob.settings.connect_timeout, &ob.metrics, &labels).await {
                Ok(server) => {
                    return Ok(Opened {
                        picked,
                        labels,
                        server,
                    });
                }
                Err(e) => e.into(),
            };
        match picked.in_flight.as_mut() {
            Some(f) if Instant::now() < deadline => {
                tracing::debug!(%addr, %error, "no connection to the endpoint; picking another");
                if f.connect_failed() {
                    // A TLS connection made and closed proves the endpoint is back (without
                    // the transport header: it opens nothing behind the peer's proxy).
                    let (metrics, timeout) = (ob.metrics.clone(), ob.settings.connect_timeout);
                    let (labels, tls) = (labels.clone(), tls.clone());
                    f.balancer().spawn_reconnect(addr, move || {
                        let (metrics, labels, tls) = (metrics.clone(), labels.clone(), tls.clone());
                        async move {
                            let dial = Dial {
                                addr: dial_addr,
                                tls: tls.as_ref(),
                                header: None,
                            };
                            connect::connect(dial, timeout, &metrics, &labels)
                                .await
                                .map(drop)
                        }
                    });
                }
                dest = Dest::Balanced(f.balancer().clone());
                avoid = Some(addr);
                authority = labels.authority.take();
                not_connected = Some(error);
            }
            _ => return Err(Failed { error, labels }),
        }
    }
}

/// Where an opaque byte stream to `addr` is dialled, and the transport header it starts with: a
/// meshed endpoint with an opaque-transport port is reached there, the header naming the
/// endpoint's own port, or for a gateway endpoint its authority override, and `caller` when a
/// gateway relays the stream. The header only travels inside TLS (`tls`): without it, the
/// endpoint is dialled as it is (and a caller cannot be named).
fn opaque_dial(
    addr: SocketAddr,
    endpoint: Option<&Endpoint>,
    tls: bool,
    caller: Option<&str>,
) -> (SocketAddr, Option<TransportHeader>) {
    let Some((port, ep)) = endpoint
        .and_then(|e| Some((e.opaque_transport_port?, e)))
        .filter(|_| tls)
    else {
        return (addr, None);
    };
    let mut header = match ep.authority_override.as_deref() {
        Some(o) => o.transport_header(None),
        None => TransportHeader {
            port: addr.port(),
            name: None,
            protocol: None,
            client_id: None,
        },
    };
    header.client_id = caller.map(str::to_owned);
    (SocketAddr::new(addr.ip(), port), Some(header))
}

/// Explicit mode `CONNECT host:port`: the proxy is the application's HTTP proxy, so it answers
/// the CONNECT itself — 200 once a connection to the target is open (an error response
/// otherwise) — and relays the tunnel as opaque TCP. A mesh service gets one balanced endpoint
/// per tunnel; a name discovery rejects goes to `host:port` through DNS.
pub(super) async fn tunnel<B>(
    ob: Arc<Outbound>,
    mut req: Request<B>,
    authority: Option<String>,
    started: Instant,
) -> Response<Body> {
    let deadline = started + ob.settings.failfast_timeout;
    let Some((target, discover)) = explicit_target(&ob, authority.as_deref()) else {
        return Error::NoAuthority.into_response();
    };
    let authority = authority.unwrap_or_else(|| target.to_string());
    let dest = if discover {
        ob.dest(&target).await
    } else {
        Dest::Passthrough(target.clone())
    };
    // A tunnel is opaque: a policy target's opaque backend, else its endpoints. Its bytes start
    // after the answer, so TLS routes select as for a ClientHello without SNI. A gateway
    // endpoint is only reachable through opaque transport (its header names the service behind
    // it); other tunnels go to the endpoint itself.
    let opened = match ob.opaque_dest(&target, dest, Hello::Unread).await {
        Ok(dest) => open(&ob, &target, dest, deadline, Some(authority), None, true).await,
        Err(error) => Err(Failed {
            error,
            labels: ob.labels(Some(authority), target_addr_of(&target), None, NO_TLS),
        }),
    };
    let Opened {
        picked,
        labels,
        server,
    } = match opened {
        Ok(opened) => opened,
        Err(Failed { error, labels }) => return early_error(&ob, &labels, error, started),
    };
    let metrics = ob.metrics.http(&labels);
    metrics.request();
    let client = http::upgrade_on(&mut req);
    let addr = picked.addr;
    tokio::spawn(async move {
        // The endpoint counts as loaded for as long as the tunnel is open.
        let _in_flight = picked.in_flight;
        match client.await {
            Ok(upgraded) => match relay::relay(upgraded, server).await {
                Ok(moved) => tracing::debug!(%addr, ?moved, "CONNECT tunnel closed"),
                Err(e) => tracing::debug!(%addr, error = %e, "CONNECT tunnel ended with an error"),
            },
            Err(e) => tracing::debug!(error = %e, "CONNECT client never switched to the tunnel"),
        }
    });
    http::metered_response(
        Response::new(http::empty()),
        metrics,
        started.into_std(),
        None,
    )
}
