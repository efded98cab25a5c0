//! `weft init`: installs the transparent-proxy redirect rules in the current network namespace,
//! as a mesh init container does (Linkerd's proxy-init is the model, chain names included):
//!
//! ```text
//! nat PREROUTING ─> PROXY_INIT_REDIRECT: skip-inbound ports RETURN, else tcp REDIRECT :4143
//! nat OUTPUT     ─> PROXY_INIT_OUTPUT:   proxy uid RETURN, -o lo RETURN, skip-outbound ports
//!                                        and CIDRs RETURN, else tcp REDIRECT :4140
//! ```
//!
//! The rule set is computed by a pure function ([`Plan::new`]) and applied with the `iptables-nft`
//! (default) or `iptables-legacy` binary. Applying is idempotent: our chains are created or
//! flushed and refilled, and the jumps into them are added only when `-C` does not find them, so
//! running twice leaves `iptables-save` unchanged. Nothing here knows about the host it runs on:
//! the same code is the Kubernetes init container.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::Context as _;

/// Chain for inbound packets (jumped to from nat PREROUTING).
pub const REDIRECT_CHAIN: &str = "PROXY_INIT_REDIRECT";
/// Chain for outbound packets (jumped to from nat OUTPUT).
pub const OUTPUT_CHAIN: &str = "PROXY_INIT_OUTPUT";
/// iptables' multiport match takes at most 15 port references (a range counts as two).
const MULTIPORT_LIMIT: usize = 15;
/// Every rule carries a stable comment with this prefix (no timestamps: idempotence).
const COMMENT_PREFIX: &str = "weft-init/";

/// `weft init`: install the mesh's iptables redirect rules in the current network namespace.
#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// Uid the proxy runs as; its own connections are never redirected.
    #[arg(long, default_value_t = 2102, value_name = "UID")]
    pub proxy_uid: u32,
    /// The proxy's inbound port: every inbound TCP connection is redirected here.
    #[arg(long, default_value_t = 4143, value_name = "PORT")]
    pub inbound_port: u16,
    /// The proxy's outbound port: every outbound TCP connection is redirected here.
    #[arg(long, default_value_t = 4140, value_name = "PORT")]
    pub outbound_port: u16,
    /// Inbound destination ports that bypass the proxy (e.g. `4190,4191,9000-9010`).
    #[arg(long, default_value = "4190,4191", value_name = "PORTS")]
    pub skip_inbound_ports: PortList,
    /// Outbound destination ports that bypass the proxy.
    #[arg(long, default_value = "", value_name = "PORTS")]
    pub skip_outbound_ports: PortList,
    /// Outbound destination networks that bypass the proxy (e.g. `10.0.0.0/8,192.168.1.5`).
    #[arg(long, value_delimiter = ',', value_name = "CIDRS")]
    pub skip_outbound_cidrs: Vec<Cidr>,
    /// Inbound ports the proxy relays without protocol detection. Not a rule: printed as the
    /// proxy variable `WEFT_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION` to set.
    #[arg(long, default_value = "", value_name = "PORTS")]
    pub opaque_ports: PortList,
    /// Which iptables backend to drive: `nft` (iptables-nft) or `legacy` (iptables-legacy).
    #[arg(long, default_value = "nft", value_name = "MODE")]
    pub iptables_mode: Mode,
    /// Print the commands (a runnable, idempotent shell script) instead of running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// The iptables backend.
impl InitArgs {
    /// The `weft init` flags that reproduce these arguments (for running it elsewhere, e.g.
    /// inside a pod's namespace).
    pub fn to_flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--proxy-uid".to_string(),
            self.proxy_uid.to_string(),
            "--inbound-port".into(),
            self.inbound_port.to_string(),
            "--outbound-port".into(),
            self.outbound_port.to_string(),
            "--skip-inbound-ports".into(),
            self.skip_inbound_ports.to_string(),
            "--skip-outbound-ports".into(),
            self.skip_outbound_ports.to_string(),
            "--opaque-ports".into(),
            self.opaque_ports.to_string(),
            "--iptables-mode".into(),
            self.iptables_mode.to_string(),
        ];
        if !self.skip_outbound_cidrs.is_empty() {
            flags.push("--skip-outbound-cidrs".into());
            let cidrs: Vec<String> = self
                .skip_outbound_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect();
            flags.push(cidrs.join(","));
        }
        if self.dry_run {
            flags.push("--dry-run".into());
        }
        flags
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Nft,
    Legacy,
}

impl Mode {
    pub fn binary(self) -> &'static str {
        match self {
            Mode::Nft => "iptables-nft",
            Mode::Legacy => "iptables-legacy",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Nft => "nft",
            Mode::Legacy => "legacy",
        })
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nft" => Ok(Mode::Nft),
            "legacy" => Ok(Mode::Legacy),
            other => Err(format!("unknown iptables mode {other:?} (nft or legacy)")),
        }
    }
}

/// A list of ports and inclusive ranges, `25,3306,5000-5010`; empty means none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<(u16, u16)>);

impl FromStr for PortList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let port = |p: &str| -> Result<u16, String> {
                match p.trim().parse::<u16>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!("{p:?} is not a port (1-65535)")),
                }
            };
            let range = match item.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => (port(item)?, port(item)?),
            };
            if range.0 > range.1 {
                return Err(format!("{item:?}: range is backwards"));
            }
            ranges.push(range);
        }
        Ok(PortList(ranges))
    }
}

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|&(lo, hi)| match lo == hi {
                true => lo.to_string(),
                false => format!("{lo}-{hi}"),
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

impl PortList {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Groups for `-m multiport --dports`, each within the 15-reference limit, as `a,b:c`.
    fn multiport_groups(&self) -> Vec<String> {
        let mut groups = Vec::new();
        let (mut current, mut used) = (Vec::new(), 0);
        for &(lo, hi) in &self.0 {
            let (item, cost) = match lo == hi {
                true => (lo.to_string(), 1),
                false => (format!("{lo}:{hi}"), 2),
            };
            if used + cost > MULTIPORT_LIMIT {
                groups.push(std::mem::take(&mut current).join(","));
                used = 0;
            }
            current.push(item);
            used += cost;
        }
        if !current.is_empty() {
            groups.push(current.join(","));
        }
        groups
    }
}

/// An IPv4 network, `10.0.0.0/8`, or one address (`/32`). Host bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (
                a,
                p.parse::<u8>().map_err(|_| format!("{s:?}: bad prefix"))?,
            ),
            None => (s.trim(), 32),
        };
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 address or network"))?;
        if prefix > 32 {
            return Err(format!("{s:?}: prefix must be 0..32"));
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return Err(format!("{s:?}: host bits are set"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One step of the rule set, all in the nat table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the chain, or flush it if it exists.
    Chain(&'static str),
    /// Append a rule (the arguments after `-A`).
    Append(Vec<String>),
    /// Append a jump rule unless the same rule is already there (`-C` then `-A`).
    Jump(Vec<String>),
}

/// The complete, ordered rule set for one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

fn rule(chain: &str, args: &[&str], comment: &str) -> Vec<String> {
    let mut v: Vec<String> = std::iter::once(chain)
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    v.extend([
        "-m".into(),
        "comment".into(),
        "--comment".into(),
        format!("{COMMENT_PREFIX}{comment}"),
    ]);
    v
}

/// RETURN rules for destination ports that bypass the proxy, in multiport groups.
fn skip_ports<'a>(
    chain: &'a str,
    ports: &PortList,
    comment: &'a str,
) -> impl Iterator<Item = Step> + 'a {
    ports.multiport_groups().into_iter().map(move |group| {
        let args = [
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            &group,
            "-j",
            "RETURN",
        ];
        Step::Append(rule(chain, &args, comment))
    })
}

impl Plan {
    /// The rules for `args` (pure: no system access).
    pub fn new(args: &InitArgs) -> Plan {
        let mut steps = vec![Step::Chain(REDIRECT_CHAIN)];
        steps.extend(skip_ports(
            REDIRECT_CHAIN,
            &args.skip_inbound_ports,
            "ignore-inbound-ports",
        ));
        let inbound = args.inbound_port.to_string();
        steps.push(Step::Append(rule(
            REDIRECT_CHAIN,
            &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound],
            "redirect-all-incoming-to-proxy-port",
        )));
        steps.push(Step::Jump(rule(
            "PREROUTING",
            &["-j", REDIRECT_CHAIN],
            "install-proxy-init-prerouting",
        )));

        steps.push(Step::Chain(OUTPUT_CHAIN));
        let uid = args.proxy_uid.to_string();
        steps.push(Step::Append(rule(
            OUTPUT_CHAIN,
            &["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"],
            "ignore-proxy-user-id",
        )));
        // Everything routed over loopback stays local: 127.0.0.0/8, and the pod's own address
        // (the app talking to itself), as Linkerd does.
        steps.push(Step::Append(rule(
            OUTPUT_CHAIN,
            &["-o", "lo", "-j", "RETURN"],
            "ignore-loopback",
        )));
        steps.extend(skip_ports(
            OUTPUT_CHAIN,
            &args.skip_outbound_ports,
            "ignore-outbound-ports",
        ));
        for cidr in &args.skip_outbound_cidrs {
            steps.push(Step::Append(rule(
                OUTPUT_CHAIN,
                &["-d", &cidr.to_string(), "-j", "RETURN"],
                "ignore-outbound-cidr",
            )));
        }
        let outbound = args.outbound_port.to_string();
        steps.push(Step::Append(rule(
            OUTPUT_CHAIN,
            &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &outbound],
            "redirect-all-outgoing-to-proxy-port",
        )));
        steps.push(Step::Jump(rule(
            "OUTPUT",
            &["-j", OUTPUT_CHAIN],
            "install-proxy-init-output",
        )));
        Plan { steps }
    }

    /// The plan as a shell script for `bin`; running it is idempotent, like [`apply`].
    pub fn script(&self, bin: &str) -> String {
        let cmd = |op: &str, args: &[String]| format!("{bin} -t nat {op} {}", args.join(" "));
        let mut out = String::new();
        for step in &self.steps {
            let line = match step {
                Step::Chain(c) => format!("{bin} -t nat -N {c} || {bin} -t nat -F {c}"),
                Step::Append(args) => cmd("-A", args),
                Step::Jump(args) => format!("{} || {}", cmd("-C", args), cmd("-A", args)),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Why applying the rules failed (callers branch on [`Error::NoNetAdmin`]).
#[derive(Debug)]
pub enum Error {
    NoNetAdmin {
        command: String,
        stderr: String,
    },
    MissingBinary {
        bin: String,
        source: std::io::Error,
    },
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoNetAdmin { command, stderr } => write!(
                f,
                "weft init needs the NET_ADMIN capability in this network namespace (run it as \
                 root, or give the init container NET_ADMIN): `{command}` said: {stderr}"
            ),
            Error::MissingBinary { bin, source } => write!(
                f,
                "{bin} not found ({source}); install iptables, or choose the other backend with \
                 --iptables-mode"
            ),
            Error::Failed {
                command,
                status,
                stderr,
            } => write!(f, "`{command}` failed ({status}): {stderr}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::MissingBinary { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The outcome of one iptables invocation that may legitimately fail (`-N` on an existing
/// chain, `-C` for an absent rule).
struct Outcome {
    ok: bool,
    command: String,
    status: std::process::ExitStatus,
    stderr: String,
}

impl Outcome {
    fn into_error(self) -> Error {
        Error::Failed {
            command: self.command,
            status: self.status,
            stderr: self.stderr,
        }
    }
}

async fn iptables(bin: &str, op: &str, args: &[String]) -> Result<Outcome, Error> {
    let command = format!("{bin} -t nat {op} {}", args.join(" "));
    // -w: wait for the xtables lock (legacy) instead of failing when another tool holds it.
    let output = tokio::process::Command::new(bin)
        .args(["-w", "-t", "nat", op])
        .args(args)
        .output()
        .await
        .map_err(|source| Error::MissingBinary {
            bin: bin.to_string(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !output.status.success() && is_permission_error(&stderr) {
        return Err(Error::NoNetAdmin { command, stderr });
    }
    Ok(Outcome {
        ok: output.status.success(),
        command,
        status: output.status,
        stderr,
    })
}

/// iptables reports a missing capability as EPERM/EACCES in its message ("Permission denied
/// (you must be root)", "Operation not permitted").
fn is_permission_error(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("permission denied") || s.contains("operation not permitted")
}

/// Applies `plan` with `bin` in the current network namespace; idempotent.
pub async fn apply(plan: &Plan, bin: &str) -> Result<(), Error> {
    for step in &plan.steps {
        match step {
            Step::Chain(chain) => {
                let args = [chain.to_string()];
                let created = iptables(bin, "-N", &args).await?;
                if !created.ok {
                    let flushed = iptables(bin, "-F", &args).await?;
                    if !flushed.ok {
                        return Err(created.into_error());
                    }
                }
            }
            Step::Append(args) => {
                let done = iptables(bin, "-A", args).await?;
                if !done.ok {
                    return Err(done.into_error());
                }
            }
            Step::Jump(args) => {
                if !iptables(bin, "-C", args).await?.ok {
                    let done = iptables(bin, "-A", args).await?;
                    if !done.ok {
                        return Err(done.into_error());
                    }
                }
            }
        }
    }
    Ok(())
}

/// The proxy variables that go with these rules (what an injector sets on the proxy).
pub fn proxy_env(args: &InitArgs) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (
            weft_proxy::config::ENV_INBOUND_LISTEN_ADDR,
            format!("0.0.0.0:{}", args.inbound_port),
        ),
        (
            weft_proxy::config::ENV_OUTBOUND_LISTEN_ADDR,
            format!("127.0.0.1:{}", args.outbound_port),
        ),
    ];
    if !args.opaque_ports.is_empty() {
        env.push((
            weft_proxy::config::ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
            args.opaque_ports.to_string(),
        ));
    }
    env
}

pub async fn run(args: InitArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args);
    let bin = args.iptables_mode.binary();
    if args.dry_run {
        print!("{}", plan.script(bin));
        return Ok(());
    }
    apply(&plan, bin)
        .await
        .context("installing the redirect rules")?;
    let env: serde_json::Map<String, serde_json::Value> = proxy_env(&args)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "event": "initialized",
            "iptables": bin,
            "rules": plan.steps.iter().filter(|s| !matches!(s, Step::Chain(_))).count(),
            "proxy_env": env,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    fn args(flags: &[&str]) -> InitArgs {
        let argv = std::iter::once("init").chain(flags.iter().copied());
        Cli::try_parse_from(argv).expect("parse").init
    }

    #[test]
    fn flags_round_trip() {
        let a = args(&[
            "--proxy-uid",
            "7",
            "--skip-inbound-ports",
            "22,4190-4191",
            "--skip-outbound-cidrs",
            "10.0.0.0/8,198.18.0.0/15",
            "--opaque-ports",
            "6379",
            "--iptables-mode",
            "legacy",
            "--dry-run",
        ]);
        let flags = a.to_flags();
        let again = args(&flags.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(format!("{again:?}"), format!("{a:?}"));
        let plain = args(&[]);
        let again = args(
            &plain
                .to_flags()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert_eq!(format!("{again:?}"), format!("{plain:?}"));
    }

    #[test]
    fn default_rules_match_linkerd_proxy_init() {
        let script = Plan::new(&args(&[])).script("iptables-nft");
        let expected = "\
iptables-nft -t nat -N PROXY_INIT_REDIRECT || iptables-nft -t nat -F PROXY_INIT_REDIRECT
iptables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 -j RETURN -m comment --comment weft-init/ignore-inbound-ports
iptables-nft -t nat -A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 4143 -m comment --comment weft-init/redirect-all-incoming-to-proxy-port
iptables-nft -t nat -C PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment weft-init/install-proxy-init-prerouting || iptables-nft -t nat -A PREROUTING -j PROXY_INIT_REDIRECT -m comment --comment weft-init/install-proxy-init-prerouting
iptables-nft -t nat -N PROXY_INIT_OUTPUT || iptables-nft -t nat -F PROXY_INIT_OUTPUT
iptables-nft -t nat -A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 -j RETURN -m comment --comment weft-init/ignore-proxy-user-id
iptables-nft -t nat -A PROXY_INIT_OUTPUT -o lo -j RETURN -m comment --comment weft-init/ignore-loopback
iptables-nft -t nat -A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 4140 -m comment --comment weft-init/redirect-all-outgoing-to-proxy-port
iptables-nft -t nat -C OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment weft-init/install-proxy-init-output || iptables-nft -t nat -A OUTPUT -j PROXY_INIT_OUTPUT -m comment --comment weft-init/install-proxy-init-output
";
        assert_eq!(script, expected);
    }

    #[test]
    fn skips_and_ports_are_configurable() {
        let a = args(&[
            "--proxy-uid",
            "999",
            "--inbound-port",
            "15006",
            "--outbound-port",
            "15001",
            "--skip-inbound-ports",
            "22",
            "--skip-outbound-ports",
            "25,5000-5010",
            "--skip-outbound-cidrs",
            "10.0.0.0/8,192.168.1.5",
            "--iptables-mode",
            "legacy",
        ]);
        assert_eq!(a.iptables_mode.binary(), "iptables-legacy");
        let script = Plan::new(&a).script(a.iptables_mode.binary());
        for line in [
            "-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 22 -j RETURN",
            "-A PROXY_INIT_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A PROXY_INIT_OUTPUT -m owner --uid-owner 999 -j RETURN",
            "-A PROXY_INIT_OUTPUT -p tcp -m multiport --dports 25,5000:5010 -j RETURN",
            "-A PROXY_INIT_OUTPUT -d 10.0.0.0/8 -j RETURN",
            "-A PROXY_INIT_OUTPUT -d 192.168.1.5/32 -j RETURN",
            "-A PROXY_INIT_OUTPUT -p tcp -j REDIRECT --to-ports 15001",
        ] {
            assert!(script.contains(line), "missing {line:?} in\n{script}");
        }
        // Skips come before the catch-all redirect in each chain.
        let skip = script.find("--dports 25,5000:5010").expect("skip");
        let redirect = script.find("--to-ports 15001").expect("redirect");
        assert!(skip < redirect);
        assert!(script.lines().all(|l| l.starts_with("iptables-legacy ")));
    }

    #[test]
    fn no_inbound_skips_means_no_rule() {
        let plan = Plan::new(&args(&["--skip-inbound-ports", ""]));
        assert!(!plan.script("x").contains("multiport"));
    }

    #[test]
    fn long_port_lists_are_split_for_multiport() {
        let ports: Vec<String> = (1000..1020).map(|p| p.to_string()).collect();
        let list: PortList = format!("{},2000-2010", ports.join(","))
            .parse()
            .expect("ports");
        let groups = list.multiport_groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].split(',').count(), 15);
        assert_eq!(groups[1], "1015,1016,1017,1018,1019,2000:2010");
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!("0".parse::<PortList>().is_err());
        assert!("70000".parse::<PortList>().is_err());
        assert!("10-5".parse::<PortList>().is_err());
        assert!("10.0.0.1/8".parse::<Cidr>().is_err());
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fe80::/10".parse::<Cidr>().is_err());
        assert_eq!("0.0.0.0/0".parse::<Cidr>().expect("any").prefix, 0);
    }

    #[test]
    fn opaque_ports_become_the_proxy_variable() {
        let env = proxy_env(&args(&["--opaque-ports", "6379,5432-5433"]));
        assert!(env.contains(&(
            weft_proxy::config::ENV_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION,
            "6379,5432-5433".to_string()
        )));
    }

    #[test]
    fn permission_errors_are_recognised() {
        assert!(is_permission_error(
            "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"
        ));
        assert!(is_permission_error(
            "iptables v1.8.9 (legacy): can't initialize iptables table `nat': Permission denied (you must be root)"
        ));
        assert!(!is_permission_error("iptables: Chain already exists."));
    }
}
