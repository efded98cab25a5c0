//! `weft multicluster` against real control planes (any user): `link` refuses clusters that share
//! no trust anchor, `--print` applies nothing, a link is applied and followed, `gateways` and
//! `check` report it, and `unlink --revoke` removes it here and revokes its credential at west
//! (the token then opens no exports stream).

#[path = "support/mtls_mesh.rs"]
mod mtls_mesh;
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use mtls_mesh::{start_control, ControlOpts};
use support::{eventually, http_get, weft_bin, Control, TempDir, SOON};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// `weft ARGS`: (success, stdout, stderr).
async fn weft(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(weft_bin())
        .args(args)
        .output()
        .await
        .expect("run weft");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn control(tmp: &TempDir, name: &'static str, ca: &Path) -> Control {
    start_control(
        &tmp.subdir(&format!("{name}-store")),
        tmp.path(),
        ControlOpts {
            identity_dir: Some(ca),
            name,
            ..Default::default()
        },
    )
    .await
}

/// The status line west answers `GET /v1/multicluster/exports` with, for `token`.
async fn exports_status(west: SocketAddr, token: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(west).await.expect("connect");
    let req = format!(
        "GET /v1/multicluster/exports HTTP/1.1\r\nHost: {west}\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer")
        .expect("read");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The link token inside east's credentials Secret.
async fn link_token(east: &Control) -> String {
    let (code, body) = http_get(
        east.api,
        "/v1/resources/secrets/weft-multicluster/cluster-credentials-west",
    )
    .await
    .expect("GET the Secret");
    assert_eq!(code, 200, "{body}");
    let secret: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let kubeconfig = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["kubeconfig"].as_str().expect("kubeconfig"))
        .expect("base64");
    let doc: serde_json::Value = yaml_serde::from_slice(&kubeconfig).expect("YAML");
    doc["users"][0]["user"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_check_gateways_and_unlink_revoke() {
    let tmp = TempDir::new("mc-cli");
    let (west_ca, east_ca, other_ca) = (
        tmp.path().join("west-ca"),
        tmp.path().join("east-ca"),
        tmp.path().join("other-ca"),
    );
    let (w, e, o) = (
        west_ca.display().to_string(),
        east_ca.display().to_string(),
        other_ca.display().to_string(),
    );
    for args in [
        vec!["identity", "init", "--dir", &w],
        vec!["identity", "init", "--dir", &e, "--anchor-dir", &w],
        vec!["identity", "init", "--dir", &o],
    ] {
        let (ok, _, err) = weft(&args).await;
        assert!(ok, "{args:?}: {err}");
    }
    let west = control(&tmp, "west", &west_ca).await;
    let east = control(&tmp, "east", &east_ca).await;
    let other = control(&tmp, "other", &other_ca).await;
    let (west_api, east_api, other_api) = (
        west.api.to_string(),
        east.api.to_string(),
        other.api.to_string(),
    );
    let link = |local: &str| {
        [
            "multicluster",
            "link",
            "--name",
            "west",
            "--api-addr",
            &west_api,
            "--local-api-addr",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([local.to_string()])
        .collect::<Vec<_>>()
    };

    // A cluster under another anchor is refused, with the way out.
    let args = link(&other_api);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = weft(&args).await;
    assert!(!ok);
    assert!(
        err.contains("share no trust anchor") && err.contains("--anchor-dir"),
        "{err}"
    );

    // --print prints Linkerd's Secret and Link and applies nothing.
    let mut printing = link(&east_api);
    printing.push("--print".into());
    let printing: Vec<&str> = printing.iter().map(String::as_str).collect();
    let (ok, out, err) = weft(&printing).await;
    assert!(ok, "{err}");
    assert!(out.contains("kind: Secret") && out.contains("mirror.linkerd.io/remote-kubeconfig"));
    assert!(
        out.contains("kind: Link") && out.contains("targetClusterName: west"),
        "{out}"
    );
    assert!(
        err.contains("names no gateway"),
        "west runs no gateway: {err}"
    );
    let (code, _) = http_get(east.api, "/v1/resources/links/weft-multicluster/west")
        .await
        .expect("GET link");
    assert_eq!(code, 404, "--print applied the Link");

    // Linked: applied like `weft apply`, then followed.
    let args = link(&east_api);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = weft(&args).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("secret/cluster-credentials-west created")
            && out.contains("link.multicluster.linkerd.io/west created"),
        "{out}"
    );
    let rows = eventually("east follows west", SOON, || async {
        let (ok, out, _) = weft(&[
            "multicluster",
            "gateways",
            "--local-api-addr",
            &east_api,
            "-o",
            "json",
        ])
        .await;
        let rows: serde_json::Value = serde_json::from_str(&out).ok()?;
        (ok && rows[0]["connected"] == true).then_some(rows)
    })
    .await;
    assert_eq!(rows[0]["targetCluster"], "west");
    assert_eq!(
        rows[0]["gatewayAlive"],
        serde_json::Value::Null,
        "no gateway to probe"
    );
    let (ok, table, _) = weft(&["multicluster", "gateways", "--local-api-addr", &east_api]).await;
    assert!(ok);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["CLUSTER", "ALIVE", "NUM_SVC", "LATENCY"],
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap_or_default().starts_with("west"),
        "{table}"
    );

    let (ok, out, err) = weft(&["multicluster", "check", "--local-api-addr", &east_api]).await;
    assert!(ok, "{out}{err}");
    for line in [
        "✔ the link follows the linked cluster's exports",
        "✔ both clusters share a trust anchor",
        "Status check results are ✔",
    ] {
        assert!(out.contains(line), "{out}");
    }

    // `weft check` prints the same checks in a section per link.
    let (_, out, _) = weft(&["check", "--api-addr", &east_api]).await;
    assert!(
        out.contains("weft-multicluster west\n")
            && out.contains("✔ both clusters share a trust anchor"),
        "{out}"
    );

    // Unlinked with --revoke: gone here, and west refuses the credential from now on.
    let token = link_token(&east).await;
    assert!(exports_status(west.api, &token).await.contains(" 200 "));
    let (ok, out, err) = weft(&[
        "multicluster",
        "unlink",
        "--name",
        "west",
        "--revoke",
        "--local-api-addr",
        &east_api,
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("link.multicluster.linkerd.io/west deleted"),
        "{out}"
    );
    assert!(out.contains("revoked"), "{out}");
    assert!(exports_status(west.api, &token).await.contains(" 401 "));
    let (code, _) = http_get(east.api, "/v1/resources/links/weft-multicluster/west")
        .await
        .expect("GET link");
    assert_eq!(code, 404);
    eventually("east forgets the link", SOON, || async {
        let (_, body) = http_get(east.api, "/v1/multicluster/links").await.ok()?;
        (body.trim() == "[]").then_some(())
    })
    .await;
    let (ok, out, _) = weft(&["multicluster", "check", "--local-api-addr", &east_api]).await;
    assert!(ok && out.contains("no links"), "{out}");
}
