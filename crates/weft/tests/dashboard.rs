//! The web dashboard in a real browser, and `weft dashboard`.
//!
//! `weft demo` runs (its policy applied after 3 s); Debian's headless chromium, driven through
//! chromedriver over WebDriver, opens the control plane's API root (redirected to `/dashboard/`),
//! picks the demo's namespace and finds: every demo workload and Service with traffic; the
//! topology graph's edges (traffic→web, web→books, web→ratings, ...) drawn as mTLS; the routes
//! the policy added with requests; a live tap on `web` whose count of requests grows. The
//! browser's console log holds no SEVERE entry. A screenshot of each view is saved in
//! `target/dashboard-screenshots/` for a person to look at. Without chromium or chromedriver
//! the test is skipped locally and fails under `CI=true`.
//!
//! Against a bare `weft control`, the page shows empty views without an error, and when the
//! control plane goes away it says so in the page and recovers when it is back, with nothing
//! logged by the page itself (only chromium's own reports of the refused connections).
//!
//! Against a stand-in API (the real dashboard files, fixed answers): a plaintext edge is dashed
//! red without a padlock, an unmeshed and stale workload is marked, a failing query and a
//! refused tap are shown in words, and the page's code logs nothing.
//!
//! `weft dashboard` against a real `weft control`: `--show url` prints the URL the dashboard is
//! served at; without it the URL is opened with `$BROWSER` (a script that records what it was
//! given), or, with no opener at all, printed with a word saying so (exit 0); a control plane
//! that does not answer is an error naming the address (exit 1). Runs as any user.

#[path = "support/dashboard_stub.rs"]
mod dashboard_stub;
mod support;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{
    eventually, free_port, http_get, set_pdeathsig, skip_or_fail, weft_bin, ChildProc, Control,
    TempDir,
};
use webdriver::Browser;

/// The demo's workloads (and, but for `traffic`, its Services).
const WORKLOADS: [&str; 5] = ["books", "books-v2", "ratings", "traffic", "web"];
/// Edges every demo run has, as `src -> dst` in namespace `demo`.
const EDGES: [(&str, &str); 3] = [("traffic", "web"), ("web", "books"), ("web", "ratings")];
/// Bound on each "the page shows it" wait: the control plane scrapes every 2 s in the demo, and
/// a rate needs two scrapes.
const PAGE_WAIT: Duration = Duration::from_secs(60);

/// Where the screenshots go: `target/dashboard-screenshots/` (beside the binaries' directory).
fn screenshot_dir() -> PathBuf {
    let bin = weft_bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("weft binary is in target/<profile>/");
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("create the screenshot directory");
    dir
}

async fn screenshot(browser: &Browser, name: &str) -> PathBuf {
    let path = screenshot_dir().join(format!("{name}.png"));
    browser.screenshot(&path).await;
    println!("screenshot: {}", path.display());
    path
}

/// Clicks the tab `name` and waits until its view is the one shown.
async fn open_tab(browser: &Browser, name: &str) {
    browser
        .eval(&format!(
            "document.querySelector('.tab[data-tab=\"{name}\"]').click(); return true"
        ))
        .await;
    browser
        .wait_for(
            &format!("the {name} view is shown"),
            Duration::from_secs(10),
            &format!("return !document.getElementById('view-{name}').hidden"),
        )
        .await;
}

/// A script answering the rows of a metrics table (`workloads-table`, `services-table`) as
/// `{name: rps}` once web, books and ratings have traffic, else `null`.
fn busy_rows(table: &str) -> String {
    format!(
        "const out = {{}};
         for (const r of document.querySelectorAll('#{table} tbody tr'))
             out[r.dataset.name] = Number(r.dataset.rps);
         return ['web', 'books', 'ratings'].every(n => out[n] > 0) ? out : null;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_demo_in_a_real_browser() {
    if let Some(why) = webdriver::missing() {
        skip_or_fail(&why);
        return;
    }
    let tmp = TempDir::new("dashboard");
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut cmd = tokio::process::Command::new(weft_bin());
    cmd.args(["demo", "--duration", "300", "--rps", "20", "--json"])
        // The routes view needs the policy's routes (ratings' HTTPRoute, books' canary).
        .args(["--traffic-policy-after", "3"])
        .args(["--api-addr", &api.to_string()])
        .env(weft_testbed::mesh::ENV_WEFT_PROXY_BIN, support::proxy_bin());
    set_pdeathsig(&mut cmd);
    let mut demo = ChildProc::spawn("weft-demo", cmd, tmp.path());
    eventually(
        "the demo's control plane API answers",
        Duration::from_secs(30),
        || async { matches!(http_get(api, "/live").await, Ok((200, _))).then_some(()) },
    )
    .await;

    // The demo says where its dashboard is.
    let said = format!("web dashboard on http://{api}/dashboard/");
    eventually(
        "the demo names its dashboard",
        Duration::from_secs(10),
        || {
            let named = demo.stderr_tail(8000).contains(&said);
            async move { named.then_some(()) }
        },
    )
    .await;

    let mut browser = Browser::start(tmp.path()).await;

    // 1. The API's root redirects to the page, which loads and refreshes from the API.
    browser.goto(&format!("http://{api}/")).await;
    let location = browser.eval("return window.location.pathname").await;
    assert_eq!(location, "/dashboard/", "GET / redirects to the dashboard");
    assert_eq!(
        browser.eval("return document.title").await,
        "Weft dashboard"
    );
    browser
        .wait_for(
            "the namespace selector offers demo",
            PAGE_WAIT,
            "return Array.from(document.getElementById('namespace').options)
                .some(o => o.value === 'demo') || null",
        )
        .await;
    browser
        .eval(
            "const s = document.getElementById('namespace');
             s.value = 'demo'; s.dispatchEvent(new Event('change')); return true",
        )
        .await;
    assert_eq!(
        browser.eval("return window.location.search").await,
        "?namespace=demo",
        "the chosen namespace is in the URL"
    );

    // 2. Overview: every workload, and web, books and ratings with traffic, as workloads and
    // as Services.
    for table in ["workloads-table", "services-table"] {
        let rows = browser
            .wait_for(
                &format!("{table} shows traffic"),
                PAGE_WAIT,
                &busy_rows(table),
            )
            .await;
        println!("{table}: {rows}");
        if table == "workloads-table" {
            for name in WORKLOADS {
                assert!(rows.get(name).is_some(), "{table} lacks {name}: {rows}");
            }
        }
    }
    let cells = browser
        .eval(
            "return Array.from(document.querySelectorAll(
                '#workloads-table tr[data-name=\"web\"] td')).map(td => td.textContent)",
        )
        .await;
    // namespace, name, meshed, success, RPS, p50, p95, p99, TCP connections
    assert_eq!(cells[0], "demo", "{cells}");
    assert_eq!(cells[2], "1/1", "{cells}");
    assert!(
        cells[3].as_str().is_some_and(|s| s.ends_with('%')),
        "{cells}"
    );
    assert!(
        cells[5].as_str().is_some_and(|s| s.ends_with(" ms")),
        "{cells}"
    );
    screenshot(&browser, "overview").await;

    // 3. Topology: the demo's edges, marked mTLS (solid green with a lock), with their RPS.
    open_tab(&browser, "topology").await;
    let edges = browser
        .wait_for(
            "the graph shows the demo's edges with traffic",
            PAGE_WAIT,
            "const want = arguments_edges;
             const edges = Array.from(document.querySelectorAll('#graph g.edge')).map(g => ({
                 src: g.dataset.src, dst: g.dataset.dst, secured: g.dataset.secured,
                 rps: Number(g.dataset.rps),
                 stroke: getComputedStyle(g.querySelector('path')).stroke,
                 dash: getComputedStyle(g.querySelector('path')).strokeDasharray,
                 lock: g.querySelector('.lock') !== null,
             }));
             const all = want.every(([s, d]) =>
                 edges.some(e => e.src === `demo/${s}` && e.dst === `demo/${d}` && e.rps > 0));
             return all ? edges : null;"
                .replace(
                    "arguments_edges",
                    &serde_json::to_string(&EDGES).expect("json"),
                )
                .as_str(),
        )
        .await;
    println!("edges: {edges}");
    for (src, dst) in EDGES {
        let edge = edges
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["src"] == format!("demo/{src}") && e["dst"] == format!("demo/{dst}"))
            .unwrap_or_else(|| panic!("no edge {src} -> {dst}: {edges}"));
        assert_eq!(edge["secured"], "true", "{edge}");
        assert_eq!(edge["lock"], true, "an mTLS edge carries a lock: {edge}");
        assert_eq!(edge["stroke"], "rgb(27, 127, 59)", "drawn green: {edge}");
        assert_eq!(edge["dash"], "none", "drawn solid: {edge}");
    }
    let nodes = browser
        .eval(
            "return Array.from(document.querySelectorAll('#graph g.node'))
                .map(g => g.dataset.workload)",
        )
        .await;
    for name in WORKLOADS {
        assert!(
            nodes
                .as_array()
                .is_some_and(|n| n.contains(&Value::from(format!("demo/{name}")))),
            "graph lacks node demo/{name}: {nodes}"
        );
    }
    screenshot(&browser, "topology").await;

    // 4. Routes: the policy's routes, with requests.
    open_tab(&browser, "routes").await;
    let routes = browser
        .wait_for(
            "the routes table shows the policy's routes with traffic",
            PAGE_WAIT,
            "const rows = Array.from(document.querySelectorAll('#routes-table tbody tr'))
                .map(r => ({service: r.dataset.service, route: r.dataset.route,
                            rps: Number(r.dataset.rps)}));
             const has = (s, n) => rows.some(r => r.service === s && r.route === n && r.rps > 0);
             return has('ratings', 'ratings') && has('books', 'books-canary') ? rows : null;",
        )
        .await;
    println!("routes: {routes}");
    screenshot(&browser, "routes").await;

    // 5. Tap: start on web; the request count grows as events stream in.
    open_tab(&browser, "tap").await;
    browser
        .wait_for(
            "the tap view offers demo/web",
            Duration::from_secs(10),
            "return Array.from(document.getElementById('tap-workload').options)
                .some(o => o.value === 'demo/web') || null",
        )
        .await;
    browser
        .eval(
            "document.getElementById('tap-workload').value = 'demo/web';
             document.getElementById('tap-start').click(); return true",
        )
        .await;
    let count = "const n = Number(document.getElementById('tap-count').dataset.requests);";
    let first = browser
        .wait_for(
            "tap events stream in",
            Duration::from_secs(30),
            &format!("{count} return n >= 5 ? n : null"),
        )
        .await
        .as_u64()
        .expect("a count");
    let later = browser
        .wait_for(
            "the tap's count grows",
            Duration::from_secs(30),
            &format!("{count} return n > {first} + 5 ? n : null"),
        )
        .await;
    println!("tap: {first} requests, then {later}");
    let row = browser
        .wait_for(
            "an inbound request of web with its status, latency and client identity",
            Duration::from_secs(30),
            "const r = Array.from(document.querySelectorAll(
                 '#tap-table tbody tr[data-direction=\"inbound\"]'))
                 .map(r => Array.from(r.cells).map(c => c.textContent))
                 .find(c => c[4] === '200' && c[5].endsWith('s'));
             return r || null;",
        )
        .await;
    println!("tap row: {row}");
    // direction, method, authority, path, status, latency, duration, source id, dest id, TLS
    assert_eq!(row[1], "GET", "{row}");
    assert_eq!(
        row[7],
        "traffic.demo.serviceaccount.identity.weft.cluster.local"
    );
    assert_eq!(
        row[8],
        "web.demo.serviceaccount.identity.weft.cluster.local"
    );
    assert_eq!(row[9], "true", "{row}");
    let shown = browser
        .eval("return document.querySelectorAll('#tap-table tbody tr').length")
        .await;
    assert!(shown.as_u64().is_some_and(|n| n <= 100), "bounded: {shown}");
    screenshot(&browser, "tap").await;
    browser
        .eval("document.getElementById('tap-stop').click(); return true")
        .await;
    browser
        .wait_for(
            "the tap stops",
            Duration::from_secs(10),
            "return document.getElementById('tap-state').dataset.state === 'idle' || null",
        )
        .await;

    // 6. Nothing went wrong in the page: no error shown, no SEVERE console entry.
    let errors = browser
        .eval(
            "return Array.from(document.querySelectorAll('.error'))
                .filter(e => !e.hidden).map(e => `${e.id}: ${e.textContent}`)",
        )
        .await;
    assert_eq!(errors, Value::Array(vec![]), "errors shown in the page");
    browser.read_log().await;
    println!("browser log: {} entries", browser.log.len());
    for entry in &browser.log {
        println!("  {entry}");
    }
    let severe: Vec<&Value> = browser
        .log
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .collect();
    assert!(severe.is_empty(), "SEVERE browser log entries: {severe:#?}");

    browser.quit().await;
    demo.kill().await;
}

/// Starts `weft control` with its API on `api` (retrying while the port is still held by the
/// previous one) and waits until it is ready.
async fn control_on(api: SocketAddr, store: &Path, log_dir: &Path, name: &str) -> ChildProc {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut cmd = tokio::process::Command::new(weft_bin());
        cmd.arg("control").arg("--store").arg(store).args([
            "--grpc-addr",
            "127.0.0.1:0",
            "--api-addr",
            &api.to_string(),
        ]);
        set_pdeathsig(&mut cmd);
        let mut proc = ChildProc::spawn(name, cmd, log_dir);
        match proc.listening_line(Duration::from_secs(20)).await {
            Ok(_) => {
                eventually(
                    "the control plane is ready",
                    Duration::from_secs(20),
                    || async {
                        matches!(http_get(api, "/ready").await, Ok((200, _))).then_some(())
                    },
                )
                .await;
                return proc;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("control start failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("weft control did not start: {e}"),
        }
    }
}

/// The page's status line once it says `state` (`ok`, `error`) after more than `after` updates.
async fn status_after(browser: &Browser, state: &str, after: u64) -> String {
    let status = browser
        .wait_for(
            &format!("the page's status is {state} after update {after}"),
            Duration::from_secs(30),
            &format!(
                "const s = document.getElementById('status');
                 return s.dataset.state === '{state}' && Number(s.dataset.updates) > {after}
                     ? [s.textContent, Number(s.dataset.updates)] : null;"
            ),
        )
        .await;
    println!("status: {status}");
    status[0].as_str().expect("text").to_string()
}

async fn updates(browser: &Browser) -> u64 {
    browser
        .eval("return Number(document.getElementById('status').dataset.updates)")
        .await
        .as_u64()
        .expect("a count of updates")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_copes_with_an_empty_mesh_and_a_control_plane_restart() {
    if let Some(why) = webdriver::missing() {
        skip_or_fail(&why);
        return;
    }
    let tmp = TempDir::new("dashboard-empty");
    let store = tmp.subdir("store");
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut control = control_on(api, &store, tmp.path(), "control-1").await;
    let mut browser = Browser::start(tmp.path()).await;

    // Nothing meshed: every view says it has nothing, and a tap asks for a workload.
    browser.goto(&format!("http://{api}/dashboard/")).await;
    status_after(&browser, "ok", 0).await;
    for empty in [
        "workloads-empty",
        "services-empty",
        "edges-empty",
        "routes-empty",
    ] {
        let shown = browser
            .eval(&format!(
                "return !document.getElementById('{empty}').hidden"
            ))
            .await;
        assert_eq!(shown, true, "{empty} is shown");
    }
    open_tab(&browser, "tap").await;
    browser
        .eval("document.getElementById('tap-start').click(); return true")
        .await;
    let said = browser
        .wait_for(
            "the tap view asks for a workload",
            Duration::from_secs(10),
            "const e = document.getElementById('tap-error');
             return e.hidden ? null : e.textContent;",
        )
        .await;
    assert!(
        said.as_str()
            .is_some_and(|s| s.contains("choose a workload")),
        "{said}"
    );
    open_tab(&browser, "overview").await;
    screenshot(&browser, "empty").await;
    let log = browser.read_log().await;
    assert!(log.is_empty(), "browser log of an empty mesh: {log:#?}");

    // The control plane goes away: the page says so and keeps asking.
    control.kill().await;
    let seen = updates(&browser).await;
    let status = status_after(&browser, "error", seen).await;
    assert!(
        status.contains("cannot reach the control plane"),
        "{status}"
    );
    let shown = browser
        .eval(
            "return !document.getElementById('workloads-error').hidden &&
                 document.getElementById('workloads-error').textContent",
        )
        .await;
    assert!(
        shown.as_str().is_some_and(|s| s.contains("cannot reach")),
        "{shown}"
    );
    screenshot(&browser, "api-down").await;

    // It comes back on the same address: the page recovers on its own.
    let _control = control_on(api, &store, tmp.path(), "control-2").await;
    let seen = updates(&browser).await;
    status_after(&browser, "ok", seen).await;
    // (The tap view's hint to choose a workload stays until the next Start.)
    let errors = browser
        .eval(
            "return Array.from(document.querySelectorAll('.error'))
                .filter(e => !e.hidden && e.id !== 'tap-error').map(e => e.id)",
        )
        .await;
    assert_eq!(
        errors,
        Value::Array(vec![]),
        "errors still shown after recovery"
    );

    // While it was away the browser itself reported the refused connections (source
    // "network"); the page's own code logged nothing and threw nothing.
    browser.read_log().await;
    for entry in &browser.log {
        println!("  {entry}");
    }
    let ours: Vec<&Value> = browser
        .log
        .iter()
        .filter(|e| e["source"] != "network")
        .collect();
    assert!(ours.is_empty(), "page log entries: {ours:#?}");
    // While the control plane is unreachable the page asks one thing per refresh, not five.
    let refused: Vec<&Value> = browser
        .log
        .iter()
        .filter(|e| e["source"] == "network")
        .collect();
    assert!(
        !refused.is_empty(),
        "the browser saw the refused connections"
    );
    for entry in refused {
        let message = entry["message"].as_str().unwrap_or("");
        assert!(message.contains("/v1/stat/namespaces?"), "{entry}");
    }
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_marks_plaintext_stale_and_failing_parts() {
    if let Some(why) = webdriver::missing() {
        skip_or_fail(&why);
        return;
    }
    let tmp = TempDir::new("dashboard-stub");
    let api = dashboard_stub::serve().await;
    let mut browser = Browser::start(tmp.path()).await;
    browser
        .goto(&format!("http://{api}/dashboard/?namespace=shop#topology"))
        .await;
    status_after(&browser, "error", 0).await;

    // The plaintext edge: dashed red, no padlock, its reason in the table.
    let edge = browser
        .wait_for(
            "the plaintext edge is drawn",
            Duration::from_secs(10),
            "const g = document.querySelector('#graph g.edge');
             if (!g) return null;
             const p = getComputedStyle(g.querySelector('path'));
             return {src: g.dataset.src, dst: g.dataset.dst, secured: g.dataset.secured,
                     stroke: p.stroke, dash: p.strokeDasharray,
                     lock: g.querySelector('.lock') !== null,
                     unmeshed: document.querySelector(
                         '#graph g.node[data-workload=\"shop/legacy\"]').classList
                         .contains('unmeshed'),
                     reason: document.querySelector('#edges-table tbody tr').lastChild
                         .textContent};",
        )
        .await;
    println!("plaintext edge: {edge}");
    assert_eq!(edge["src"], "shop/front");
    assert_eq!(edge["dst"], "shop/legacy");
    assert_eq!(edge["secured"], "false");
    assert_eq!(edge["stroke"], "rgb(192, 57, 43)", "drawn red: {edge}");
    assert_ne!(edge["dash"], "none", "drawn dashed: {edge}");
    assert_eq!(edge["lock"], false, "no padlock: {edge}");
    assert_eq!(
        edge["unmeshed"], true,
        "the unmeshed workload is marked: {edge}"
    );
    assert_eq!(edge["reason"], "not_provided_by_service_discovery");
    screenshot(&browser, "plaintext").await;

    // Overview: the stale workload greyed with its error, the failing Service query in words.
    open_tab(&browser, "overview").await;
    let overview = browser
        .eval(
            "const legacy = document.querySelector('#workloads-table tr[data-name=\"legacy\"]');
             const front = document.querySelector('#workloads-table tr[data-name=\"front\"]');
             const e = document.getElementById('services-error');
             return {stale: legacy.classList.contains('stale'), why: legacy.title,
                     rate: front.cells[3].className, error: e.hidden ? null : e.textContent};",
        )
        .await;
    println!("overview: {overview}");
    assert_eq!(overview["stale"], true);
    assert!(overview["why"]
        .as_str()
        .is_some_and(|s| s.contains("Connection refused")));
    assert!(
        overview["rate"]
            .as_str()
            .is_some_and(|s| s.contains("poor")),
        "{overview}"
    );
    assert!(
        overview["error"]
            .as_str()
            .is_some_and(|s| s.contains("502") && s.contains("did not answer within 5s")),
        "{overview}"
    );
    screenshot(&browser, "failing-service-query").await;

    // Routes: none, said so.
    open_tab(&browser, "routes").await;
    let none = browser
        .eval("return !document.getElementById('routes-empty').hidden")
        .await;
    assert_eq!(none, true);

    // A tap the API refuses: its error in the view, the view back to Start.
    open_tab(&browser, "tap").await;
    browser
        .eval(
            "document.getElementById('tap-workload').value = 'shop/front';
             document.getElementById('tap-start').click(); return true",
        )
        .await;
    let tap = browser
        .wait_for(
            "the tap's refusal is shown",
            Duration::from_secs(10),
            "const e = document.getElementById('tap-error');
             const s = document.getElementById('tap-state');
             return e.hidden ? null : {error: e.textContent, state: s.dataset.state,
                 start: !document.getElementById('tap-start').disabled};",
        )
        .await;
    println!("tap: {tap}");
    assert!(
        tap["error"]
            .as_str()
            .is_some_and(|s| s.contains("404") && s.contains("no linkerd-tap port")),
        "{tap}"
    );
    assert_eq!(tap["state"], "error");
    assert_eq!(tap["start"], true);

    // Only chromium's own reports of the error answers; nothing from the page's code.
    browser.read_log().await;
    let ours: Vec<&Value> = browser
        .log
        .iter()
        .filter(|e| e["source"] != "network")
        .collect();
    assert!(ours.is_empty(), "page log entries: {ours:#?}");
    browser.quit().await;
}

/// `weft dashboard ARGS` with `env` set (and `remove` unset): exit code, stdout, stderr.
async fn weft_dashboard(
    args: &[&str],
    env: &[(&str, &str)],
    remove: &[&str],
) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(weft_bin());
    cmd.arg("dashboard").args(args).env_remove("WEFT_API_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in remove {
        cmd.env_remove(k);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("weft dashboard ends within 30 s")
        .expect("weft dashboard runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_command_prints_and_opens_the_url() {
    let tmp = TempDir::new("dashboard-cli");
    let control = Control::start(&tmp.subdir("store"), tmp.path()).await;
    let api = control.api.to_string();
    let url = format!("http://{api}/dashboard/");

    // --show url: the URL on stdout, nothing opened; the page is there.
    let (code, out, err) = weft_dashboard(&["--show", "url", "--api-addr", &api], &[], &[]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{url}\n").as_str()),
        "{err}"
    );
    let (status, page) = http_get(control.api, "/dashboard/")
        .await
        .expect("GET page");
    assert_eq!(status, 200);
    assert!(page.contains("<title>Weft dashboard</title>"), "{page}");

    // $WEFT_API_ADDR is read like the other commands read it.
    let (code, out, err) =
        weft_dashboard(&["--show", "url"], &[("WEFT_API_ADDR", &api)], &[]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{url}\n").as_str()),
        "{err}"
    );

    // $BROWSER opens it: a script that records its arguments.
    let record = tmp.path().join("opened");
    let opener = tmp.path().join("open-it");
    std::fs::write(
        &opener,
        format!("#!/bin/sh\necho \"$@\" > {}\n", record.display()),
    )
    .expect("write opener");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&opener, std::fs::Permissions::from_mode(0o755))
            .expect("chmod opener");
    }
    let browser = opener.display().to_string();
    let (code, out, err) =
        weft_dashboard(&["--api-addr", &api], &[("BROWSER", &browser)], &[]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{url}\n").as_str()),
        "{err}"
    );
    assert!(err.contains("opened with"), "{err}");
    let opened = eventually("the opener ran", Duration::from_secs(10), || async {
        std::fs::read_to_string(&record).ok()
    })
    .await;
    assert_eq!(opened.trim(), url);

    // No opener at all ($BROWSER unset, no xdg-open on PATH): the URL and a word, exit 0.
    let empty = tmp.subdir("empty-path");
    let (code, out, err) = weft_dashboard(
        &["--api-addr", &api],
        &[("PATH", &empty.display().to_string())],
        &["BROWSER"],
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, format!("{url}\n").as_str()),
        "{err}"
    );
    assert!(
        err.contains("no browser to open it with") && err.contains(&url),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_command_fails_clearly_without_a_control_plane() {
    // Nothing listens there (a port just freed).
    let api = format!("127.0.0.1:{}", free_port());
    let (code, out, err) = weft_dashboard(&["--api-addr", &api], &[], &[]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.is_empty(),
        "no URL for a dashboard that is not there: {out}"
    );
    assert!(
        err.contains(&format!("the control plane API at {api} does not answer"))
            && err.contains("--wait"),
        "{err}"
    );

    // --wait keeps asking, says so once, then fails the same way.
    let (code, _, err) = weft_dashboard(&["--api-addr", &api, "--wait", "2s"], &[], &[]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("waiting up to"), "{err}");
    assert!(err.contains("does not answer"), "{err}");
}
