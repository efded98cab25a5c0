//! `docs/getting-started.md` as a test: the commands between its `getting-started:begin` and
//! `getting-started:end` markers run, one by one and unchanged, as root inside a fresh network
//! namespace standing in for a new machine (IP forwarding off, as on a fresh host, and a FORWARD
//! policy of DROP, as on a host with Docker). The real `python3 -m http.server` answers the real
//! `curl` by the Service's name, so the document cannot rot.
//!
//! Steps ending in `&` run in the background like in the user's shell; the next step starts once
//! the background one says it is ready (`weft control`'s listening line, `weft run`'s "runs in
//! network namespace" line), as a user reading the walk-through would wait.

mod support;

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{metric_sum, proxy_bin, weft_bin, TempDir};
use weft_testbed::Netns;

const DOC: &str = include_str!("../../../docs/getting-started.md");
/// Bound for one step (a pod, a sidecar and its certificate, a request).
const STEP: Duration = Duration::from_secs(60);

/// The walk-through's commands: one per line, a heredoc (`<<'EOF'` to `EOF`) with its line.
fn steps(doc: &str) -> Vec<String> {
    let begin = doc.find("getting-started:begin").expect("begin marker");
    let end = doc.find("getting-started:end").expect("end marker");
    let block = &doc[begin..end];
    let body = block
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a ```sh block between the markers")
        .0;
    let mut steps: Vec<String> = Vec::new();
    let mut heredoc: Option<(String, String)> = None;
    for line in body.lines() {
        if let Some((text, terminator)) = heredoc.as_mut() {
            text.push('\n');
            text.push_str(line);
            if line == terminator {
                steps.push(heredoc.take().expect("open").0);
            }
            continue;
        }
        if let Some((_, marker)) = line.split_once("<<") {
            let terminator = marker.trim().trim_matches('\'').to_string();
            heredoc = Some((line.to_string(), terminator));
        } else if !line.trim().is_empty() {
            steps.push(line.to_string());
        }
    }
    assert!(
        heredoc.is_none(),
        "unterminated heredoc in the walk-through"
    );
    steps
}

/// A shell step inside the host namespace, in `dir`, with the binaries under test on `PATH`.
fn shell(host: &Netns, dir: &Path, step: &str) -> Command {
    let bin_dir = weft_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host.name(), "sh", "-c"])
        // `exec`: the shell becomes the command, so SIGTERM reaches `weft` itself.
        .arg(format!("exec {step}"))
        .current_dir(dir)
        .env("PATH", path)
        .env("WEFT_PROXY_BIN", proxy_bin())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Lines of a child's stdout and stderr, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout"));
    let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr"));
    for stream in [out, err] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("  | {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// A background step, stopped with SIGTERM (then SIGKILL) when dropped, as Ctrl-C would.
struct Background {
    child: Child,
    _lines: mpsc::Receiver<String>,
    /// The pod a `weft run` announced, and its address.
    pod: Option<String>,
    pod_ip: Option<String>,
}

/// The namespace in `weft run: NS/NAME runs in network namespace POD at IP, ...`.
fn pod_of(line: &str) -> Option<String> {
    let rest = line.split_once("runs in network namespace ")?.1;
    Some(rest.split_whitespace().next()?.to_string())
}

/// The IP in that line.
fn pod_ip_of(line: &str) -> Option<String> {
    let rest = line.split_once("runs in network namespace ")?.1;
    let ip = rest.split_once(" at ")?.1.split(',').next()?;
    Some(ip.to_string())
}

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `step` and waits for the line that says it is ready.
fn background(host: &Netns, dir: &Path, step: &str) -> Background {
    let ready = if step.starts_with("weft control") {
        "\"event\":\"listening\""
    } else if step.starts_with("weft run") {
        "runs in network namespace"
    } else {
        panic!("no readiness line known for the background step {step:?}")
    };
    let mut child = shell(host, dir, step).spawn().expect("spawn");
    let lines = lines(&mut child);
    let deadline = Instant::now() + STEP;
    let (pod, pod_ip) = loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(ready) => break (pod_of(&line), pod_ip_of(&line)),
            Ok(_) => {}
            Err(_) => panic!("{step:?}: no {ready:?} line within {STEP:?}"),
        }
    };
    Background {
        child,
        _lines: lines,
        pod,
        pod_ip,
    }
}

/// Runs `step` to completion within [`STEP`]: (success, stdout, stderr).
fn foreground(host: &Netns, dir: &Path, step: &str) -> (bool, String, String) {
    let mut child = shell(host, dir, step).spawn().expect("spawn");
    let read = |s: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = { s }.read_to_string(&mut text);
            text
        })
    };
    let out = read(Box::new(child.stdout.take().expect("stdout")));
    let err = read(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{step:?} did not finish within {STEP:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().expect("stdout"), err.join().expect("stderr"));
    eprintln!("$ {step}\n{out}{err}");
    (status.success(), out, err)
}

fn sysctl_forward(host: &Netns) -> String {
    host.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"])
        .expect("read ip_forward")
        .trim()
        .to_string()
}

fn forward_chain(host: &Netns) -> String {
    host.exec(&["iptables-nft", "-S", "FORWARD"])
        .expect("iptables -S FORWARD")
}

#[test]
fn the_walk_through_parses_into_the_documented_commands() {
    let steps = steps(DOC);
    assert_eq!(steps.len(), 7, "{steps:#?}");
    assert!(steps[1].starts_with("cat > store/web.yaml <<'EOF'\n") && steps[1].ends_with("\nEOF"));
    assert!(
        !steps[1].contains("clusterIP"),
        "the Service is written as for Kubernetes"
    );
    assert_eq!(steps[3], "weft control --store store &");
    assert!(
        steps[6].starts_with("weft run --name client -- curl"),
        "{}",
        steps[6]
    );
}

#[test]
fn the_getting_started_walk_through_works_on_a_fresh_host() {
    let Some(_root) = weft_testbed::require_root(&["curl", "python3", "sysctl"]) else {
        return;
    };
    let _serial = weft_testbed::serial();
    let host = Netns::create(&weft_testbed::unique_name("gs")).expect("host namespace");
    assert_eq!(
        sysctl_forward(&host),
        "0",
        "a fresh namespace does not forward"
    );
    // A host whose FORWARD chain drops what no rule accepts (Docker sets this policy).
    host.exec(&["iptables-nft", "-P", "FORWARD", "DROP"])
        .expect("policy");
    let dir = TempDir::new("getting-started");

    // --host-forwarding off: fails at once, with the exact commands, and changes nothing.
    let started = Instant::now();
    let (ok, _, err) = foreground(
        &host,
        dir.path(),
        "weft run --host-forwarding off --name probe -- true",
    );
    assert!(!ok, "weft run must refuse: {err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("run `sysctl -w net.ipv4.ip_forward=1`"),
        "{err}"
    );
    assert!(
        err.contains("run `iptables-nft -I FORWARD 1 -s 198.18.0.0/15 -d 198.18.0.0/15 -j ACCEPT`"),
        "{err}"
    );
    assert_eq!(sysctl_forward(&host), "0");
    assert!(!forward_chain(&host).contains("198.18.0.0/15"));

    // The walk-through, step by step.
    let mut running = Vec::new();
    let mut services = None;
    let mut answer = None;
    let mut pods = Vec::new();
    for step in steps(DOC) {
        if let Some(cmd) = step.strip_suffix(" &") {
            running.push(background(&host, dir.path(), cmd));
            continue;
        }
        let (ok, out, err) = foreground(&host, dir.path(), &step);
        assert!(ok, "{step:?} failed:\n{out}{err}");
        if step.starts_with("weft get services") {
            services = Some(out);
        } else if step.starts_with("weft run --name client") {
            pods.extend(err.lines().find_map(pod_of));
            answer = Some(out);
        }
    }
    let services = services.expect("the walk-through lists services");
    let web = services
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("web"))
        .unwrap_or_else(|| panic!("no web in:\n{services}"));
    let ip = web.split_whitespace().nth(2).expect("a CLUSTER-IP column");
    assert!(
        ip.starts_with("198.19."),
        "allocated in 198.19.128.0/17: {web}"
    );
    // curl -f: any status but 2xx would have failed the step; the body is the server's file.
    assert_eq!(answer.expect("the client ran").trim(), "hello from web");
    // curl's one request left the instant it started, and over mTLS: `weft run` started it only
    // once its sidecar held a certificate (proxy-await). The web sidecar saw it so.
    // Its admin listens on the pod IP, which the host routes to the pod.
    let web_ip = running
        .iter()
        .find_map(|b| b.pod_ip.clone())
        .expect("web announced its pod's address");
    let metrics = host
        .exec(&["curl", "-sS", &format!("http://{web_ip}:4191/metrics")])
        .expect("scrape the web sidecar");
    let client_id = "client.default.serviceaccount.identity.weft.cluster.local";
    let mtls = metric_sum(
        &metrics,
        "request_total",
        &[
            ("direction", "inbound"),
            ("tls", "true"),
            ("client_id", client_id),
        ],
    );
    assert_eq!(
        mtls, 1.0,
        "curl's request over mTLS from {client_id}:\n{metrics}"
    );
    let plain: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("request_total{") && l.contains(r#"direction="inbound""#))
        .filter(|l| !l.contains(r#"tls="true""#))
        .collect();
    assert!(plain.is_empty(), "inbound requests without mTLS: {plain:?}");
    // weft run turned forwarding on for the pods, and the client's exit did not undo it while
    // web still runs (each weft run holds its share of the host).
    assert_eq!(sysctl_forward(&host), "1");
    assert!(forward_chain(&host).contains("-A FORWARD -s 198.18.0.0/15 -d 198.18.0.0/15 -j ACCEPT"));

    // Stopping the walk-through (web, then the control plane) undoes the host changes.
    pods.extend(running.iter().filter_map(|b| b.pod.clone()));
    assert_eq!(pods.len(), 2, "both pods announced themselves: {pods:?}");
    while let Some(step) = running.pop() {
        drop(step);
    }
    assert_eq!(
        sysctl_forward(&host),
        "0",
        "the last weft run sets forwarding back"
    );
    let chain = forward_chain(&host);
    assert!(
        !chain.contains("198.18.0.0/15") && chain.contains("-P FORWARD DROP"),
        "{chain}"
    );
    for pod in pods {
        assert!(
            !Path::new("/run/netns").join(&pod).exists(),
            "{pod} left behind"
        );
    }
    // ... and the record of the host's users goes with the last one.
    let ino = std::fs::metadata(Path::new("/run/netns").join(host.name()))
        .expect("host namespace")
        .ino();
    let record = std::env::temp_dir().join(format!("weft-host-{ino}"));
    assert!(!record.exists(), "{} left behind", record.display());
}
