//! `weft init` in fresh network namespaces (root only; skipped locally without root, failing
//! under `CI=true`): the rules it installs, idempotence (a second run leaves `iptables-save`
//! unchanged, in both backends), `--dry-run` printing exactly what it applies, and the message
//! when NET_ADMIN is missing.

use std::process::Command;

use weft_testbed::{require_root, serial, unique_name, HostState, Netns};

const WEFT: &str = env!("CARGO_BIN_EXE_weft");

fn init(ns: &Netns, flags: &[&str]) -> String {
    let mut args = vec![WEFT, "init"];
    args.extend_from_slice(flags);
    ns.exec(&args).unwrap_or_else(|e| panic!("weft init: {e}"))
}

/// The nat table without comments lines and counters.
fn nat_rules(ns: &Netns, save: &str) -> String {
    ns.exec(&[save, "-t", "nat"])
        .expect("iptables-save")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(i)) => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn init_is_idempotent_in_both_backends() {
    let _serial = serial();
    let Some(_root) = require_root(&["iptables-nft", "iptables-legacy"]) else {
        return;
    };
    let host = HostState::capture().expect("host");
    for (mode, save) in [
        ("nft", "iptables-nft-save"),
        ("legacy", "iptables-legacy-save"),
    ] {
        let ns = Netns::create(&unique_name("init")).expect("netns");
        let flags = [
            "--iptables-mode",
            mode,
            "--skip-outbound-ports",
            "25,5000-5010",
            "--skip-outbound-cidrs",
            "198.19.255.0/24",
        ];
        let line = init(&ns, &flags);
        assert!(line.contains(r#""event":"initialized""#), "{line}");
        let first = nat_rules(&ns, save);
        for expected in [
            "-A PREROUTING -m comment --comment \"weft-init/install-proxy-init-prerouting\" -j PROXY_INIT_REDIRECT",
            "-A OUTPUT -m comment --comment \"weft-init/install-proxy-init-output\" -j PROXY_INIT_OUTPUT",
            "-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102",
            "-A PROXY_INIT_OUTPUT -o lo",
            "--dports 25,5000:5010",
            "-A PROXY_INIT_OUTPUT -d 198.19.255.0/24",
            "-j REDIRECT --to-ports 4140",
            "-j REDIRECT --to-ports 4143",
        ] {
            assert!(first.contains(expected), "{mode}: missing {expected:?} in\n{first}");
        }
        init(&ns, &flags);
        assert_eq!(
            first,
            nat_rules(&ns, save),
            "{mode}: a second run changed the rules"
        );
    }
    host.assert_unchanged();
}

#[test]
fn dry_run_prints_exactly_what_init_applies() {
    let _serial = serial();
    let Some(_root) = require_root(&["sh"]) else {
        return;
    };
    let flags = [
        "--skip-inbound-ports",
        "22,4190-4191",
        "--opaque-ports",
        "6379",
    ];
    let applied = Netns::create(&unique_name("dry1")).expect("netns");
    init(&applied, &flags);
    let mut dry = flags.to_vec();
    dry.push("--dry-run");
    let out = Command::new(WEFT)
        .arg("init")
        .args(&dry)
        .output()
        .expect("dry run");
    let script = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        out.status.success() && !script.trim().is_empty(),
        "{}: {script}",
        out.status
    );
    assert!(
        script.lines().all(|l| l.starts_with("iptables-nft ")),
        "{script}"
    );
    let scripted = Netns::create(&unique_name("dry2")).expect("netns");
    // Twice: the script is idempotent too.
    for _ in 0..2 {
        scripted
            .exec(&["sh", "-e", "-c", &script])
            .expect("run the printed script");
    }
    assert_eq!(
        nat_rules(&applied, "iptables-nft-save"),
        nat_rules(&scripted, "iptables-nft-save")
    );
}

#[test]
fn missing_net_admin_is_explained() {
    let _serial = serial();
    let Some(_root) = require_root(&[]) else {
        return;
    };
    let ns = Netns::create(&unique_name("noadm")).expect("netns");
    let mut cmd = Command::new(WEFT);
    cmd.arg("init");
    ns.enter_on_exec(&mut cmd, Some(65534), libc::SIGKILL);
    let out = cmd.output().expect("run weft init as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("needs the NET_ADMIN capability"),
        "{stderr}"
    );
    assert!(nat_rules(&ns, "iptables-nft-save")
        .find("PROXY_INIT")
        .is_none());
}
