//! Opaque TCP through the mesh (explicit mode, upstream ports): a real `redis-server` (SET/GET
//! and a pipelined batch of 100 hand-written RESP commands) and a server-speaks-first server whose
//! greeting must reach the client before it sends anything — well before the 10 s detect timeout
//! this test configures, so a proxy that waited for client bytes would show.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::apps::Greeter;
use support::{
    authority, free_port, set_pdeathsig, which, workload_doc, write_docs, ChildProc, Control,
    Proxy, ProxySpec, ServiceDoc, TempDir, SOON,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weft_proxy::config;

fn opaque_service(name: &str, port: u16) -> String {
    ServiceDoc {
        name,
        app: "tcp-backend",
        port,
        target: name,
        app_protocol: None,
        opaque: true,
        cluster_ip: None,
    }
    .yaml()
}

/// Control plane, one workload serving `apps` (port name → app port) with those app ports
/// opaque on its inbound side, and a client proxy with upstream ports for `upstreams`.
async fn tcp_mesh(
    tmp: &TempDir,
    apps: &[(&str, u16)],
    upstreams: &[String],
) -> (Control, Proxy, Proxy) {
    let store = tmp.subdir("store");
    let docs: Vec<String> = upstreams
        .iter()
        .filter_map(|a| {
            let (host, port) = a.rsplit_once(':')?;
            let name = host.split('.').next()?;
            Some(opaque_service(name, port.parse().ok()?))
        })
        .collect();
    write_docs(&store, "services.yaml", &docs);
    let control = Control::start(&store, tmp.path()).await;
    let app_ports: Vec<u16> = apps.iter().map(|(_, p)| *p).collect();
    let opaque: Vec<String> = app_ports.iter().map(|p| p.to_string()).collect();
    let server = ProxySpec::new("tcp-backend-1", control.grpc)
        .forward(&app_ports)
        .env(
            config::ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
            &opaque.join(","),
        )
        .env(config::ENV_INBOUND_DETECT_TIMEOUT, "10s")
        .spawn(tmp.path())
        .await;
    let ports: Vec<(&str, u16)> = apps
        .iter()
        .map(|(name, app)| (*name, server.forward_addr(*app).port()))
        .collect();
    let doc = workload_doc(
        "default",
        "tcp-backend-1",
        &[("app", "tcp-backend")],
        "127.0.0.1",
        &ports,
    );
    control.register("default", "tcp-backend-1", &doc).await;
    let client = ProxySpec::new("tcp-client", control.grpc)
        .upstreams(upstreams)
        .env(config::ENV_OUTBOUND_DETECT_TIMEOUT, "10s")
        .spawn(tmp.path())
        .await;
    (control, server, client)
}

/// Encodes one RESP command (array of bulk strings).
fn resp(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Reads one RESP reply: `+simple`, `-error`, `:int`, or `$bulk` (nil as `(nil)`).
async fn read_reply(reader: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .map_err(|_| "reply timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let line = line.trim_end_matches("\r\n").to_string();
    match line.chars().next() {
        Some('+') | Some(':') => Ok(line[1..].to_string()),
        Some('-') => Err(format!("redis error: {line}")),
        Some('$') => {
            let len: i64 = line[1..].parse().map_err(|_| format!("bad bulk {line}"))?;
            if len < 0 {
                return Ok("(nil)".into());
            }
            let mut buf = vec![0u8; len as usize + 2];
            tokio::time::timeout(Duration::from_secs(10), reader.read_exact(&mut buf))
                .await
                .map_err(|_| "bulk timed out".to_string())?
                .map_err(|e| e.to_string())?;
            buf.truncate(len as usize);
            String::from_utf8(buf).map_err(|e| e.to_string())
        }
        _ => Err(format!("unexpected reply line {line:?}")),
    }
}

async fn start_redis(tmp: &TempDir, program: &std::path::Path) -> (ChildProc, u16) {
    let port = free_port();
    let dir = tmp.subdir("redis");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .arg("--dir")
        .arg(&dir);
    set_pdeathsig(&mut cmd);
    let proc = ChildProc::spawn("redis-server", cmd, tmp.path());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    support::eventually("redis-server answers PING", SOON, || async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let mut reader = BufReader::new(stream);
        reader.get_mut().write_all(&resp(&["PING"])).await.ok()?;
        (read_reply(&mut reader).await.ok()? == "PONG").then_some(())
    })
    .await;
    (proc, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_through_mesh() {
    let Some(redis_bin) = which("redis-server") else {
        support::skip_or_fail("redis-server is not installed (apt-get install redis-server)");
        return;
    };
    let tmp = TempDir::new("redis");
    let (_redis, redis_port) = start_redis(&tmp, &redis_bin).await;
    let target = authority("redis", 6379);
    let (_control, server, client) = tcp_mesh(
        &tmp,
        &[("redis", redis_port)],
        std::slice::from_ref(&target),
    )
    .await;

    let stream = TcpStream::connect(client.upstream_addr(&target))
        .await
        .expect("connect upstream port");
    let mut conn = BufReader::new(stream);
    conn.get_mut()
        .write_all(&resp(&["SET", "weft:greeting", "hello mesh"]))
        .await
        .expect("write SET");
    assert_eq!(read_reply(&mut conn).await.expect("SET reply"), "OK");
    conn.get_mut()
        .write_all(&resp(&["GET", "weft:greeting"]))
        .await
        .expect("write GET");
    assert_eq!(
        read_reply(&mut conn).await.expect("GET reply"),
        "hello mesh"
    );

    // 100 commands written in one go, 100 replies read back in order.
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend(resp(&["SET", &format!("k{i}"), &format!("value-{i}")]));
        batch.extend(resp(&["GET", &format!("k{i}")]));
    }
    conn.get_mut().write_all(&batch).await.expect("write batch");
    for i in 0..50 {
        assert_eq!(
            read_reply(&mut conn).await.expect("SET reply"),
            "OK",
            "SET k{i}"
        );
        assert_eq!(
            read_reply(&mut conn).await.expect("GET reply"),
            format!("value-{i}"),
            "GET k{i}"
        );
    }
    drop(conn);

    // Both proxies saw the connection as TCP.
    support::eventually("tcp_open_total counted on both sides", SOON, || async {
        let out = client
            .metric_sum("tcp_open_total", &[("direction", "outbound")])
            .await;
        let inb = server
            .metric_sum("tcp_open_total", &[("direction", "inbound")])
            .await;
        (out >= 1.0 && inb >= 1.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_through_mesh() {
    let tmp = TempDir::new("greeter");
    let greeter = Greeter::start().await;
    let target = authority("greeter", 2525);
    let (_control, server, client) = tcp_mesh(
        &tmp,
        &[("greeter", greeter.addr.port())],
        std::slice::from_ref(&target),
    )
    .await;

    let start = Instant::now();
    let mut stream = TcpStream::connect(client.upstream_addr(&target))
        .await
        .expect("connect upstream port");
    let mut greeting = vec![0u8; Greeter::GREETING.len()];
    tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut greeting))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no greeting within 3 s of connecting (detect timeout is 10 s): the mesh waited \
                 for the client to speak; client proxy stderr:\n{}",
                client.proc.stderr_tail(3000)
            )
        })
        .expect("read greeting");
    assert_eq!(greeting, Greeter::GREETING);
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "greeting took {elapsed:?}"
    );

    // Then the connection carries bytes both ways.
    stream.write_all(b"ping\r\n").await.expect("write");
    let mut echoed = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
        .await
        .expect("echo timed out")
        .expect("read echo");
    assert_eq!(&echoed, b"ping\r\n");
    drop(stream);

    // The connection really crossed both proxies.
    support::eventually("tcp_open_total counted on both sides", SOON, || async {
        let out = client
            .metric_sum("tcp_open_total", &[("direction", "outbound")])
            .await;
        let inb = server
            .metric_sum("tcp_open_total", &[("direction", "inbound")])
            .await;
        (out >= 1.0 && inb >= 1.0).then_some(())
    })
    .await;
}
