//! The outbound path's opaque byte streams: a connection relayed to one endpoint (chosen per
//! connection, by the target's policy or its discovered endpoints), and explicit mode's
//! `CONNECT` tunnels.

use super::*;

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
    let Picked {
        addr,
        endpoint,
        in_flight: _in_flight,
    } = ob.pick(target, dest, deadline, None).await?;
    let transport_port = endpoint.as_ref().and_then(|e| e.opaque_transport_port);
    let (tls, tls_label) = ob
        .tls_for(endpoint.as_ref(), transport_port.is_some(), deadline)
        .await?;
    let labels = ob.labels(None, addr, endpoint.as_ref(), tls_label);
    let (dial_addr, header) = opaque_dial(addr, endpoint.as_ref(), tls.is_some(), caller);
    let dial = Dial {
        addr: dial_addr,
        tls: tls.as_ref(),
        header: header.as_ref(),
    };
    let server = connect::connect(dial, ob.settings.connect_timeout, &ob.metrics, &labels).await?;
    let moved = relay::relay(client, server)
        .await
        .map_err(|source| Error::Relay { addr, source })?;
    tracing::debug!(%target, %addr, ?moved, "opaque connection closed");
    Ok(())
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
    // after the answer, so TLS routes select as for a ClientHello without SNI.
    let picked = match async {
        let dest = ob.opaque_dest(&target, dest, Hello::Unread).await?;
        ob.pick(&target, dest, deadline, None).await
    }
    .await
    {
        Ok(picked) => picked,
        Err(e) => {
            let labels = ob.labels(Some(authority), target_addr_of(&target), None, NO_TLS);
            return early_error(&ob, &labels, e, started);
        }
    };
    // A gateway endpoint is only reachable through opaque transport (its header names the
    // service behind it); other tunnels go to the endpoint itself, as before.
    let gateway = picked
        .endpoint
        .as_ref()
        .is_some_and(|e| e.authority_override.is_some() && e.opaque_transport_port.is_some());
    let (tls, tls_label) = match ob
        .tls_for(picked.endpoint.as_ref(), gateway, deadline)
        .await
    {
        Ok(tls) => tls,
        Err(e) => {
            let labels = ob.labels(
                Some(authority),
                picked.addr,
                picked.endpoint.as_ref(),
                NO_TLS,
            );
            return early_error(&ob, &labels, e, started);
        }
    };
    let labels = ob.labels(
        Some(authority),
        picked.addr,
        picked.endpoint.as_ref(),
        tls_label,
    );
    let metrics = ob.metrics.http(&labels);
    metrics.request();
    let (dial_addr, header) = match gateway {
        true => opaque_dial(picked.addr, picked.endpoint.as_ref(), tls.is_some(), None),
        false => (picked.addr, None),
    };
    let dial = Dial {
        addr: dial_addr,
        tls: tls.as_ref(),
        header: header.as_ref(),
    };
    let server =
        match connect::connect(dial, ob.settings.connect_timeout, &ob.metrics, &labels).await {
            Ok(server) => server,
            Err(e) => return record_error(metrics, e.into(), started),
        };
    let client = hyper::upgrade::on(&mut req);
    let addr = picked.addr;
    tokio::spawn(async move {
        // The endpoint counts as loaded for as long as the tunnel is open.
        let _in_flight = picked.in_flight;
        match client.await {
            Ok(upgraded) => match relay::relay(TokioIo::new(upgraded), server).await {
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
