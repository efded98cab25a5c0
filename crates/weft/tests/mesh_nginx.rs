//! A real nginx behind a proxy pair (explicit mode): the client's HTTP/1 requests travel between
//! the proxies as HTTP/2 (`l5d-orig-proto`) and must reach nginx with exactly one `Host` equal to
//! the one the client sent. nginx answers 400 to a request without `Host` or with two, so the
//! status alone shows a lost or duplicated header; the body echoes `$http_host`.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use support::clients::{empty, Reply, H1};
use support::{
    authority, free_port, service, set_pdeathsig, which, workload_doc, write_docs, ChildProc,
    Control, ProxySpec, TempDir, SOON,
};
use tokio::net::TcpStream;

/// nginx in the foreground, one process, every path under `dir`, answering every request with
/// `host=<Host>`.
async fn start_nginx(tmp: &TempDir, program: &Path) -> (ChildProc, u16) {
    let port = free_port();
    let dir = tmp.subdir("nginx");
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{}}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
         proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
         uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         server {{\n    listen 127.0.0.1:{port};\n    \
         location / {{ return 200 \"host=$http_host\"; }}\n  }}\n}}\n"
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("-p").arg(&dir).arg("-c").arg(&conf_path);
    set_pdeathsig(&mut cmd);
    let proc = ChildProc::spawn("nginx", cmd, tmp.path());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    support::eventually("nginx listens", SOON, || async {
        TcpStream::connect(addr).await.ok().map(drop)
    })
    .await;
    (proc, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_gets_one_host_through_the_mesh() {
    let Some(nginx_bin) = which("nginx") else {
        support::skip_or_fail("nginx is not installed (apt-get install nginx-light)");
        return;
    };
    let tmp = TempDir::new("nginx-host");
    let (nginx, nginx_port) = start_nginx(&tmp, &nginx_bin).await;

    // Without the mesh nginx enforces Host: a request lacking it is refused (so the checks
    // below cannot pass by nginx being lenient).
    let mut direct = H1::connect(([127, 0, 0, 1], nginx_port).into())
        .await
        .expect("connect nginx");
    let no_host = hyper::Request::get("/").body(empty()).unwrap();
    let reply = Reply::read(direct.send(no_host).await.expect("direct GET"))
        .await
        .expect("direct body");
    assert_eq!(reply.status, 400, "{}", reply.describe());

    let store = tmp.subdir("store");
    write_docs(
        &store,
        "services.yaml",
        &[service("web", "nginx", 8080, "http")],
    );
    let control = Control::start(&store, tmp.path()).await;
    let server = ProxySpec::new("nginx-1", control.grpc)
        .forward(&[nginx_port])
        .spawn(tmp.path())
        .await;
    let doc = workload_doc(
        "default",
        "nginx-1",
        &[("app", "nginx")],
        "127.0.0.1",
        &[("http", server.forward_addr(nginx_port).port())],
    );
    control.register("default", "nginx-1", &doc).await;
    let target = authority("web", 8080);
    let client = ProxySpec::new("client", control.grpc)
        .upstreams(std::slice::from_ref(&target))
        .spawn(tmp.path())
        .await;

    let upstream = client.upstream_addr(&target);
    for path in ["/", "/a/b?c=d"] {
        let reply = support::eventually("nginx answers through the mesh", SOON, || async {
            let req = hyper::Request::get(path)
                .header("host", &target)
                .body(empty())
                .unwrap();
            let mut conn = H1::connect(upstream).await.ok()?;
            let reply = Reply::read(conn.send(req).await.ok()?).await.ok()?;
            // 503 while the client proxy still waits for its first endpoint.
            (reply.status != 503).then_some(reply)
        })
        .await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.describe());
        assert_eq!(reply.text(), format!("host={target}"), "{path}");
    }
    // Both requests went through the server's inbound proxy (as HTTP/2 marked
    // `l5d-orig-proto`: the control plane hints H2 for meshed workloads, which `mesh_http`
    // checks at the application).
    let inbound = server
        .metric_sum("request_total", &[("direction", "inbound")])
        .await;
    assert!(inbound >= 2.0, "{}", server.metrics().await);
    drop(nginx);
}
