//! Connect errors over real loopback sockets: refused, timed out; the no-route mapping by errno.

use super::*;
use crate::metrics::{Direction, TlsLabel};
use std::{collections::BTreeMap, sync::Arc};

fn labels(addr: SocketAddr) -> Labels {
    Labels {
        direction: Direction::Outbound,
        authority: None,
        target_addr: addr,
        tls: TlsLabel::NoIdentity(crate::metrics::NO_TLS_FROM_DISCOVERY),
        dst: Arc::new(BTreeMap::new()),
    }
}

async fn dial(addr: SocketAddr, timeout: Duration) -> Result<Io, ConnectError> {
    let dial = Dial {
        addr,
        tls: None,
        header: None,
    };
    connect(dial, timeout, &Metrics::new(), &labels(addr)).await
}

#[tokio::test]
async fn a_closed_port_is_connection_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = dial(addr, Duration::from_secs(1))
        .await
        .err()
        .expect("nothing listens there");
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("connection refused by {addr}"));
}

/// A listener whose accept queue is full drops new SYNs (Linux), so a connect to it hangs until
/// the timeout: the message names the timeout and the address.
#[tokio::test]
async fn a_full_accept_queue_times_out_with_the_timeout_in_words() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let _listener = socket.listen(0).unwrap();
    // Fill the queue (never accepted): connects succeed until one hangs.
    let mut held = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("connect: {e}"),
            Err(_) => break,
        }
        assert!(held.len() < 64, "the accept queue never filled");
    }
    let timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = dial(addr, timeout).await.err().expect("queue is full");
    assert!(matches!(err, ConnectError::Timeout { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("timed out after 300ms connecting to {addr}")
    );
    assert!(started.elapsed() >= timeout);
}

#[test]
fn unreachable_hosts_and_networks_say_no_route() {
    let addr: SocketAddr = "198.18.0.9:80".parse().unwrap();
    for errno in [libc::EHOSTUNREACH, libc::ENETUNREACH] {
        let err = ConnectError::tcp(addr, io::Error::from_raw_os_error(errno));
        assert!(matches!(err, ConnectError::NoRoute { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "no route to host 198.18.0.9:80 (is IP forwarding enabled on the host?)"
        );
    }
    let other = ConnectError::tcp(addr, io::Error::from_raw_os_error(libc::EACCES));
    assert!(matches!(other, ConnectError::Io { .. }), "{other:?}");
}
