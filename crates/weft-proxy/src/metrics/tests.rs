use super::*;

fn outbound_labels() -> Labels {
    Labels {
        direction: Direction::Outbound,
        authority: Some("web.default.svc.cluster.local:8080".into()),
        target_addr: "127.0.0.1:18080".parse().expect("addr"),
        tls: TlsLabel::NoIdentity(NO_TLS_FROM_DISCOVERY),
        dst: Arc::new(BTreeMap::from([
            ("namespace".to_string(), "default".to_string()),
            ("service".to_string(), "web".to_string()),
        ])),
    }
}

const L: &str = r#"direction="outbound",authority="web.default.svc.cluster.local:8080",target_addr="127.0.0.1:18080",tls="no_identity",no_tls_reason="not_provided_by_service_discovery",dst_namespace="default",dst_service="web""#;

#[test]
fn http_text() {
    let m = Metrics::new();
    let h = m.http(&outbound_labels());
    h.request();
    h.request();
    h.response(200, None, false, Duration::from_micros(1500));
    h.response(503, None, false, Duration::from_millis(70));
    // Same labels share one handle.
    m.http(&outbound_labels()).request();

    let text = m.render();
    assert!(text.contains("# TYPE request_total counter\n"), "{text}");
    assert!(
        text.contains(&format!("request_total{{{L}}} 3\n")),
        "{text}"
    );
    assert!(text.contains(&format!(
        "response_total{{{L},status_code=\"200\",classification=\"success\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "response_total{{{L},status_code=\"503\",classification=\"failure\"}} 1\n"
    )));
    assert!(text.contains("# TYPE response_latency_ms histogram\n"));
    let bucket = |status: &str, le: &str, n: u64| {
        format!("response_latency_ms_bucket{{{L},status_code=\"{status}\",le=\"{le}\"}} {n}\n")
    };
    assert!(text.contains(&bucket("200", "1", 0)), "{text}");
    assert!(text.contains(&bucket("200", "2", 1)));
    assert!(text.contains(&bucket("200", "+Inf", 1)));
    assert!(text.contains(&bucket("503", "50", 0)));
    assert!(text.contains(&bucket("503", "100", 1)));
    assert!(text.contains(&format!(
        "response_latency_ms_sum{{{L},status_code=\"200\"}} 1.5\n"
    )));
    assert!(text.contains(&format!(
        "response_latency_ms_count{{{L},status_code=\"503\"}} 1\n"
    )));
    // 26 buckets per status code.
    assert_eq!(text.matches("response_latency_ms_bucket{").count(), 52);
}

#[test]
fn grpc_status_label() {
    let m = Metrics::new();
    let h = m.http(&outbound_labels());
    h.response(200, Some(14), false, Duration::from_millis(1));
    let text = m.render();
    assert!(text.contains(&format!(
        "response_total{{{L},status_code=\"200\",classification=\"failure\",grpc_status=\"14\"}} 1\n"
    )));
}

#[test]
fn tcp_text_and_tls_labels() {
    let m = Metrics::new();
    let labels = Labels {
        direction: Direction::Inbound,
        authority: None,
        target_addr: "127.0.0.1:8080".parse().expect("addr"),
        tls: TlsLabel::NoIdentity(NO_TLS_FROM_REMOTE),
        dst: Arc::default(),
    };
    let t = m.tcp_open(&labels, Peer::Src);
    drop(m.tcp_open(&labels, Peer::Src));
    t.read(10);
    t.write(7);
    let _dst = m.tcp_open(&labels, Peer::Dst);
    let l = r#"direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote""#;
    let text = m.render();
    for line in [
        format!("tcp_open_total{{{l},peer=\"src\"}} 2\n"),
        format!("tcp_close_total{{{l},peer=\"src\",errno=\"\"}} 1\n"),
        format!("tcp_open_connections{{{l},peer=\"src\"}} 1\n"),
        format!("tcp_read_bytes_total{{{l},peer=\"src\"}} 10\n"),
        format!("tcp_write_bytes_total{{{l},peer=\"src\"}} 7\n"),
        format!("tcp_open_connections{{{l},peer=\"dst\"}} 1\n"),
        "# TYPE tcp_open_connections gauge\n".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }

    let tls = Labels {
        tls: TlsLabel::Established {
            peer_id: Some("web.default.serviceaccount.identity.weft.cluster.local".into()),
        },
        ..labels
    };
    let _c = m.tcp_open(&tls, Peer::Src);
    assert!(m.render().contains(
        r#"tls="true",client_id="web.default.serviceaccount.identity.weft.cluster.local",peer="src"} 1"#
    ));
}

#[test]
fn process_gauges_and_escaping() {
    let m = Metrics::new();
    let text = m.render();
    assert!(text.contains("# TYPE process_start_time_seconds gauge\n"));
    assert!(text.contains("\nprocess_resident_memory_bytes "));
    let mut labels = outbound_labels();
    labels.authority = Some("a\"b\\c".into());
    m.http(&labels).request();
    assert!(m.render().contains(r#"authority="a\"b\\c""#));
}

fn inbound_labels(port: u16) -> Labels {
    Labels {
        direction: Direction::Inbound,
        authority: None,
        target_addr: SocketAddr::from(([127, 0, 0, 1], port)),
        tls: TlsLabel::NoIdentity(NO_TLS_FROM_REMOTE),
        dst: Arc::default(),
    }
}

/// A connection the peer resets (SO_LINGER 0, then close) is closed with `errno="ECONNRESET"`;
/// a connection that ends with EOF closes cleanly (`errno=""`); both observe their lifetime.
#[tokio::test]
async fn close_is_classified_by_the_socket_error() {
    use crate::relay::Metered;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    let m = Metrics::new();
    let labels = inbound_labels(8080);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();

    // Reset by the peer.
    let client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    server.set_zero_linger().unwrap();
    drop(server);
    let mut io = Metered::new(client, m.tcp_open(&labels, Peer::Dst));
    let mut buf = [0u8; 16];
    let e = io.read(&mut buf).await.expect_err("reset");
    assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET), "{e}");
    drop(io);

    // Closed cleanly by the peer.
    let client = TcpStream::connect(addr).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    drop(server);
    let mut io = Metered::unattached(client);
    assert_eq!(io.read(&mut buf).await.unwrap(), 0);
    io.attach(m.tcp_open(&labels, Peer::Dst));
    drop(io);

    let text = m.render();
    let l = r#"direction="inbound",target_addr="127.0.0.1:8080",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="dst""#;
    for line in [
        format!("tcp_close_total{{{l},errno=\"\"}} 1\n"),
        format!("tcp_close_total{{{l},errno=\"ECONNRESET\"}} 1\n"),
        format!("tcp_connection_duration_ms_count{{{l},errno=\"ECONNRESET\"}} 1\n"),
        format!("tcp_connection_duration_ms_bucket{{{l},errno=\"\",le=\"+Inf\"}} 1\n"),
        format!("tcp_open_connections{{{l}}} 0\n"),
        "# TYPE tcp_connection_duration_ms histogram\n".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    // 26 buckets per errno class.
    assert_eq!(
        text.matches("tcp_connection_duration_ms_bucket{").count(),
        52
    );
}

#[test]
fn errno_labels() {
    assert_eq!(tcp::errno_label(0), "");
    assert_eq!(tcp::errno_label(libc::ETIMEDOUT), "ETIMEDOUT");
    assert_eq!(tcp::errno_label(libc::EPIPE), "EPIPE");
    assert_eq!(tcp::errno_label(4242), "4242");
}

/// The connection's lifetime is measured on the runtime's clock, from the accept.
#[tokio::test(start_paused = true)]
async fn connection_duration_counts_from_the_accept() {
    let m = Metrics::new();
    let labels = inbound_labels(9090);
    let (a, _b) = tokio::io::duplex(8);
    let mut io = crate::relay::Metered::unattached(a);
    tokio::time::advance(Duration::from_millis(1500)).await;
    io.attach(m.tcp_open(&labels, Peer::Src));
    tokio::time::advance(Duration::from_millis(1000)).await;
    drop(io);
    let text = m.render();
    let l = r#"direction="inbound",target_addr="127.0.0.1:9090",tls="no_identity",no_tls_reason="no_tls_from_remote",peer="src",errno="""#;
    assert!(
        text.contains(&format!(
            "tcp_connection_duration_ms_bucket{{{l},le=\"2000\"}} 0\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "tcp_connection_duration_ms_bucket{{{l},le=\"3000\"}} 1\n"
    )));
    assert!(text.contains(&format!("tcp_connection_duration_ms_sum{{{l}}} 2500\n")));
}

/// Series nobody holds and that did not change for the retention are dropped; held ones, and
/// ones that keep changing, stay.
#[tokio::test(start_paused = true)]
async fn idle_series_expire() {
    let retain = Duration::from_secs(600);
    let m = Metrics::with_retain_idle(retain);
    let step = Duration::from_secs(60);

    // Many short-lived targets: one request each, handles dropped.
    for port in 1..=50 {
        let h = m.http(&inbound_labels(port));
        h.request();
        h.response(200, None, false, Duration::from_millis(1));
        drop(m.tcp_open(&inbound_labels(port), Peer::Dst));
        m.count(TLS_HANDSHAKE_ERRORS, None, &[("port", &port.to_string())]);
    }
    // A target with an open connection (a held handle) and a busy one.
    let open = m.tcp_open(&inbound_labels(7000), Peer::Src);
    let busy = inbound_labels(7001);
    assert_eq!(m.series(), 151);

    for _ in 0..11 {
        m.sweep();
        tokio::time::advance(step).await;
        // Busy: a new handle per request, dropped at once, but its counters change.
        m.http(&busy).request();
    }
    // First seen idle by the sweep at t=0, dropped by the one at t=600s.
    m.sweep();
    assert_eq!(m.series(), 2, "{}", m.render());
    let text = m.render();
    assert!(!text.contains("target_addr=\"127.0.0.1:1\""), "{text}");
    assert!(
        text.contains("tcp_open_connections{direction=\"inbound\",target_addr=\"127.0.0.1:7000\"")
    );
    assert!(text.contains("request_total{direction=\"inbound\",target_addr=\"127.0.0.1:7001\""));
    assert!(!text.contains(TLS_HANDSHAKE_ERRORS), "{text}");

    // A series that comes back starts again from 0 (a counter reset for Prometheus).
    m.http(&inbound_labels(1)).request();
    assert!(m
        .render()
        .contains("request_total{direction=\"inbound\",target_addr=\"127.0.0.1:1\",tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\"} 1\n"));

    // The open connection's series stays while it is open, and expires after it closed.
    drop(open);
    for _ in 0..12 {
        m.sweep();
        tokio::time::advance(step).await;
    }
    assert!(!m.render().contains("127.0.0.1:7000"));
}

/// A series used again before the retention ends is kept (its idle time restarts).
#[tokio::test(start_paused = true)]
async fn a_series_used_within_the_retention_stays() {
    let m = Metrics::with_retain_idle(Duration::from_secs(100));
    let labels = inbound_labels(1);
    m.http(&labels).request();
    m.sweep();
    tokio::time::advance(Duration::from_secs(90)).await;
    m.http(&labels).request();
    m.sweep();
    tokio::time::advance(Duration::from_secs(90)).await;
    m.sweep();
    assert_eq!(m.series(), 1);
    tokio::time::advance(Duration::from_secs(10)).await;
    m.sweep();
    assert_eq!(m.series(), 0);
}

#[test]
fn detection_families() {
    let m = Metrics::new();
    assert!(!m.render().contains("protocol_detection"));
    m.detected(
        Direction::Inbound,
        DetectResult::Http1,
        Duration::from_micros(300),
    );
    m.detected(
        Direction::Inbound,
        DetectResult::Timeout,
        Duration::from_secs(1),
    );
    m.detected(
        Direction::Outbound,
        DetectResult::OpaquePort,
        Duration::ZERO,
    );
    let text = m.render();
    for line in [
        "# TYPE protocol_detection_total counter\n",
        "protocol_detection_total{direction=\"inbound\",result=\"http1\"} 1\n",
        "protocol_detection_total{direction=\"inbound\",result=\"timeout\"} 1\n",
        "protocol_detection_total{direction=\"outbound\",result=\"opaque_port\"} 1\n",
        "# TYPE protocol_detection_duration_seconds histogram\n",
        "protocol_detection_duration_seconds_bucket{direction=\"inbound\",result=\"http1\",le=\"0.001\"} 1\n",
        "protocol_detection_duration_seconds_bucket{direction=\"inbound\",result=\"timeout\",le=\"0.5\"} 0\n",
        "protocol_detection_duration_seconds_bucket{direction=\"inbound\",result=\"timeout\",le=\"1\"} 1\n",
        "protocol_detection_duration_seconds_sum{direction=\"inbound\",result=\"timeout\"} 1\n",
        "protocol_detection_duration_seconds_count{direction=\"outbound\",result=\"opaque_port\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("result=\"http2\""));
}

/// Destination labels in two `Arc`s with the same content are one series; different content,
/// two; the shared-`Arc` shortcut in `Labels`' order agrees with its equality.
#[test]
fn labels_order_compares_destination_labels_by_content() {
    let a = outbound_labels();
    let same_content = outbound_labels();
    assert!(!Arc::ptr_eq(&a.dst, &same_content.dst));
    assert_eq!(a.cmp(&same_content), std::cmp::Ordering::Equal);
    assert_eq!(a.cmp(&a.clone()), std::cmp::Ordering::Equal);
    let mut other = outbound_labels();
    Arc::make_mut(&mut other.dst).insert("pod".into(), "web-1".into());
    assert_ne!(a.cmp(&other), std::cmp::Ordering::Equal);
    assert_eq!(a.cmp(&other), other.cmp(&a).reverse());
    assert_eq!(a == other, a.cmp(&other) == std::cmp::Ordering::Equal);

    let m = Metrics::new();
    m.http(&a).request();
    m.http(&same_content).request();
    m.http(&other).request();
    let text = m.render();
    assert!(
        text.contains(&format!("request_total{{{L}}} 2\n")),
        "{text}"
    );
    assert_eq!(text.matches("request_total{").count(), 2, "{text}");
}
