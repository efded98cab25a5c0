//! The proxies' `/metrics` against the exposition format's reference parser: `promtool check
//! metrics` (Debian's `prometheus` package) reads a real scrape of a client and a server proxy
//! that carried HTTP (an echo app) and opaque TCP (a server-speaks-first app): no parse error and
//! no lint finding except the deliberate ones (Linkerd's metric names).

mod support;

use std::process::Stdio;

use support::apps::{EchoServer, Greeter};
use support::clients::{empty, proxy_request, Reply, H1};
use support::{
    authority, service, which, workload_doc, write_docs, Control, Proxy, ProxySpec, ServiceDoc,
    TempDir, SOON,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `promtool check metrics` on `text`; returns its exit code and what it printed.
async fn promtool(program: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let mut child = tokio::process::Command::new(program)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start promtool");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("feed promtool");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool output");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), printed)
}

/// Lint findings we keep on purpose: Linkerd's metric names, which dashboards and queries
/// written for Linkerd use as they are (`docs/proxy-config.md`).
const DELIBERATE: &[&str] =
    &["response_latency_ms metric names should not contain abbreviated units"];

async fn assert_clean(program: &std::path::Path, who: &str, proxy: &Proxy) {
    let text = proxy.metrics().await;
    let (status, printed) = promtool(program, &text).await;
    // Exit 1 is a parse error, 3 lint findings only.
    let problems: Vec<&str> = printed
        .lines()
        .filter(|l| !l.trim().is_empty() && !DELIBERATE.contains(&l.trim()))
        .collect();
    assert!(
        matches!(status, Some(0 | 3)) && problems.is_empty(),
        "promtool on the {who} proxy's scrape (exit {status:?}): {printed}\n--- scrape ---\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_pass_promtool() {
    let Some(promtool_bin) = which("promtool") else {
        support::skip_or_fail("promtool is not installed (apt-get install prometheus)");
        return;
    };
    let tmp = TempDir::new("promtool");
    let store = tmp.subdir("store");
    let greeter_svc = ServiceDoc {
        name: "greeter",
        app: "backend",
        port: 2525,
        target: "smtp",
        app_protocol: Some("opaque"),
        opaque: false,
        cluster_ip: None,
    };
    write_docs(
        &store,
        "services.yaml",
        &[service("echo", "backend", 8080, "http"), greeter_svc.yaml()],
    );
    let control = Control::start(&store, tmp.path()).await;
    let echo = EchoServer::start("backend-1").await;
    let greeter = Greeter::start().await;
    let server = ProxySpec::new("backend-1", control.grpc)
        .forward(&[echo.port(), greeter.addr.port()])
        .env(
            "WEFT_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION",
            &greeter.addr.port().to_string(),
        )
        .spawn(tmp.path())
        .await;
    let doc = workload_doc(
        "default",
        "backend-1",
        &[("app", "backend")],
        "127.0.0.1",
        &[
            ("http", server.forward_addr(echo.port()).port()),
            ("smtp", server.forward_addr(greeter.addr.port()).port()),
        ],
    );
    control.register("default", "backend-1", &doc).await;
    let (http, tcp) = (authority("echo", 8080), authority("greeter", 2525));
    let client = ProxySpec::new("client", control.grpc)
        .upstreams(&[http.clone(), tcp.clone()])
        .spawn(tmp.path())
        .await;

    // HTTP: one request through both proxies.
    let reply = support::eventually("echo answers through the mesh", SOON, || async {
        let mut conn = H1::connect(client.upstream_addr(&http)).await.ok()?;
        let req = proxy_request("GET", &http, "/metrics-check", empty());
        let reply = Reply::read(conn.send(req).await.ok()?).await.ok()?;
        (reply.status != 503).then_some(reply)
    })
    .await;
    assert_eq!(reply.status, 200, "{}", reply.describe());
    // Opaque TCP: the greeting, one echoed line, close.
    let mut stream = TcpStream::connect(client.upstream_addr(&tcp))
        .await
        .expect("connect TCP upstream");
    let mut greeting = vec![0u8; Greeter::GREETING.len()];
    stream.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(greeting, Greeter::GREETING);
    stream.write_all(b"ping\r\n").await.expect("write");
    let mut echoed = [0u8; 6];
    stream.read_exact(&mut echoed).await.expect("echo");
    drop(stream);

    // Both scrapes hold every family the traffic touched before they are checked.
    for (who, proxy, direction) in [
        ("client", &client, "outbound"),
        ("server", &server, "inbound"),
    ] {
        support::eventually("HTTP and TCP series in the scrape", SOON, || async {
            let req = proxy
                .metric_sum("response_total", &[("direction", direction)])
                .await;
            let tcp = proxy
                .metric_sum("tcp_close_total", &[("direction", direction)])
                .await;
            (req >= 1.0 && tcp >= 1.0).then_some(())
        })
        .await;
        let text = proxy.metrics().await;
        assert!(
            text.contains("response_latency_ms_bucket{"),
            "{who}: {text}"
        );
        assert!(text.contains("tcp_read_bytes_total{"), "{who}: {text}");
        assert_clean(&promtool_bin, who, proxy).await;
    }
}
