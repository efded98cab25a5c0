//! Nodes and pods as network namespaces, and the faults injected into their links.
//!
//! Addressing (all inside 198.18.0.0/15, nothing routed elsewhere):
//! - hub: bridge `br0` 198.18.0.1/24, forwards between nodes, route `198.18.(i+1).0/24` via node i;
//! - node i: `uplink` 198.18.0.(i+2)/24 on the hub bridge, route `198.18.0.0/15` via the hub,
//!   pod gateway 198.18.(i+1).1 (a /32 on every pod-facing veth `p<j>`);
//! - pod j on node i: `eth0` 198.18.(i+1).(j+10)/32, routes: the gateway on-link, `198.18.0.0/15`
//!   via the gateway. No default route: anything else is unreachable.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::netns::{run, sweep_stale, unique_prefix};
use crate::{Error, Netns, Root};

/// Most nodes a cluster may have (node i uses 198.18.(i+1).0/24).
const MAX_NODES: usize = 100;
/// Most pods per node (addresses .10 to .249).
const MAX_PODS: usize = 240;

/// A set of nodes joined by a bridge in a hub namespace. Dropping it deletes every namespace it
/// made (drop the pods and processes first; they hold their own namespaces).
pub struct Cluster {
    prefix: String,
    // Fields drop in order: nodes before the hub their uplinks hang from.
    nodes: Vec<Node>,
    hub: Netns,
    pods: AtomicUsize,
}

/// One node: a namespace routing between its pods and the hub.
pub struct Node {
    index: usize,
    netns: Netns,
    ip: Ipv4Addr,
    next_pod: AtomicUsize,
}

/// One pod: a namespace with a veth to its node.
pub struct Pod {
    netns: Netns,
    ip: Ipv4Addr,
    node: usize,
    node_ns: String,
    /// The pod's veth as seen in the node.
    host_link: String,
}

impl Cluster {
    /// Builds a cluster of `nodes` nodes (no pods yet).
    pub fn new(_root: Root, nodes: usize) -> Result<Cluster, Error> {
        if nodes == 0 || nodes > MAX_NODES {
            return Err(Error::Other(format!("1..={MAX_NODES} nodes, got {nodes}")));
        }
        sweep_stale();
        let prefix = unique_prefix();
        let hub = Netns::create(&format!("{prefix}hub"))?;
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.ip(&["addr", "add", "198.18.0.1/24", "dev", "br0"])?;
        hub.ip(&["link", "set", "br0", "up"])?;
        hub.sysctl("net.ipv4.ip_forward", "1")?;
        let mut cluster = Cluster {
            prefix,
            nodes: Vec::new(),
            hub,
            pods: AtomicUsize::new(0),
        };
        for i in 0..nodes {
            cluster.add_node(i)?;
        }
        Ok(cluster)
    }

    fn add_node(&mut self, i: usize) -> Result<(), Error> {
        let netns = Netns::create(&format!("{}n{i}", self.prefix))?;
        let ip = Ipv4Addr::new(198, 18, 0, (i + 2) as u8);
        let hub_link = format!("n{i}");
        self.hub.ip(&[
            "link",
            "add",
            &hub_link,
            "type",
            "veth",
            "peer",
            "name",
            "uplink",
            "netns",
            netns.name(),
        ])?;
        self.hub
            .ip(&["link", "set", &hub_link, "master", "br0", "up"])?;
        netns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "uplink"])?;
        netns.ip(&["link", "set", "uplink", "up"])?;
        netns.ip(&["route", "add", "198.18.0.0/15", "via", "198.18.0.1"])?;
        netns.sysctl("net.ipv4.ip_forward", "1")?;
        let node = Node {
            index: i,
            netns,
            ip,
            next_pod: AtomicUsize::new(0),
        };
        self.hub
            .ip(&["route", "add", &node.pod_subnet(), "via", &ip.to_string()])?;
        self.nodes.push(node);
        Ok(())
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn hub(&self) -> &Netns {
        &self.hub
    }

    /// Adds a pod on node `node`.
    pub fn add_pod(&self, node: usize) -> Result<Pod, Error> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| Error::Other(format!("no node {node}")))?;
        let ip = n.alloc_ip()?;
        let k = self.pods.fetch_add(1, Ordering::Relaxed);
        let netns = Netns::create(&format!("{}p{k}", self.prefix))?;
        let host_link = format!("p{k}");
        let gw = n.gateway().to_string();
        n.netns.ip(&[
            "link",
            "add",
            &host_link,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.name(),
        ])?;
        n.netns
            .ip(&["addr", "add", &format!("{gw}/32"), "dev", &host_link])?;
        n.netns.ip(&["link", "set", &host_link, "up"])?;
        n.netns
            .ip(&["route", "add", &format!("{ip}/32"), "dev", &host_link])?;
        netns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        netns.ip(&["route", "add", &gw, "dev", "eth0", "scope", "link"])?;
        netns.ip(&["route", "add", "198.18.0.0/15", "via", &gw, "dev", "eth0"])?;
        Ok(Pod {
            netns,
            ip,
            node,
            node_ns: n.netns.name().to_string(),
            host_link,
        })
    }

    /// Drops routed traffic between the pod networks of nodes `a` and `b`, both ways, in the
    /// hub (packets vanish, as in a real partition: no reset, no ICMP). Undone by
    /// [`Partition::heal`] or on drop.
    pub fn partition(&self, a: usize, b: usize) -> Result<Partition, Error> {
        let (na, nb) = (self.node(a).pod_subnet(), self.node(b).pod_subnet());
        Partition::insert(
            self.hub.name(),
            vec![
                vec![
                    "FORWARD".into(),
                    "-s".into(),
                    na.clone(),
                    "-d".into(),
                    nb.clone(),
                ],
                vec!["FORWARD".into(), "-s".into(), nb, "-d".into(), na],
            ],
        )
    }

    /// Takes node `i`'s link to the hub down (the node is cut off from every other node).
    pub fn node_link_down(&self, i: usize) -> Result<LinkDown, Error> {
        let link = format!("n{i}");
        self.hub.ip(&["link", "set", &link, "down"])?;
        Ok(LinkDown {
            netns: self.hub.name().to_string(),
            link,
            route: None,
            up: false,
        })
    }

    /// Drops each routed packet to or from node `i`'s pod network with `probability` (0..1), in
    /// the hub (iptables `statistic`: works where `tc netem` is missing). Undone by
    /// [`Partition::heal`] or on drop.
    pub fn node_loss(&self, i: usize, probability: f64) -> Result<Partition, Error> {
        let p = format!("{probability:.4}");
        let subnet = self.node(i).pod_subnet();
        let rule = |dir: &str| -> Vec<String> {
            [
                "FORWARD",
                dir,
                &subnet,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        Partition::insert(self.hub.name(), vec![rule("-s"), rule("-d")])
    }

    /// `tc netem` on node `i`'s link to the hub, both directions (e.g. `["delay", "50ms"]`,
    /// `["loss", "10%"]`).
    pub fn node_netem(&self, i: usize, netem: &[&str]) -> Result<Netem, Error> {
        Netem::apply(
            vec![
                (self.hub.name().to_string(), format!("n{i}")),
                (self.node(i).netns.name().to_string(), "uplink".into()),
            ],
            netem,
        )
    }
}

impl Node {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// The node's address on the hub network.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The address pods on this node use as their gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, (self.index + 1) as u8, 1)
    }

    /// This node's pod network, `198.18.(i+1).0/24`.
    pub fn pod_subnet(&self) -> String {
        format!("198.18.{}.0/24", self.index + 1)
    }

    /// A fresh pod address on this node, for pods made by another tool (e.g. `weft run
    /// --pod-ip`).
    pub fn alloc_ip(&self) -> Result<Ipv4Addr, Error> {
        let j = self.next_pod.fetch_add(1, Ordering::Relaxed);
        if j >= MAX_PODS {
            return Err(Error::Other(format!("node {}: too many pods", self.index)));
        }
        Ok(Ipv4Addr::new(
            198,
            18,
            (self.index + 1) as u8,
            (j + 10) as u8,
        ))
    }
}

impl Pod {
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn node(&self) -> usize {
        self.node
    }

    /// Takes the pod's link down on the node side (the pod is cut off from everything).
    pub fn link_down(&self) -> Result<LinkDown, Error> {
        run(
            "ip",
            &["-n", &self.node_ns, "link", "set", &self.host_link, "down"],
        )?;
        Ok(LinkDown {
            netns: self.node_ns.clone(),
            link: self.host_link.clone(),
            // Downing the link dropped the node's route to the pod; it comes back with it.
            route: Some(format!("{}/32", self.ip)),
            up: false,
        })
    }

    /// Drops each packet to or from this pod with `probability` (0..1), in its node
    /// (iptables `statistic`: works where `tc netem` is missing). Undone on heal or drop.
    pub fn loss(&self, probability: f64) -> Result<Partition, Error> {
        let p = format!("{probability:.4}");
        let ip = self.ip.to_string();
        let rule = |dir: &str| -> Vec<String> {
            [
                "FORWARD",
                dir,
                &ip,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &p,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        Partition::insert(&self.node_ns, vec![rule("-s"), rule("-d")])
    }

    /// `tc netem` on the pod's link, both directions.
    pub fn netem(&self, netem: &[&str]) -> Result<Netem, Error> {
        Netem::apply(
            vec![
                (self.node_ns.clone(), self.host_link.clone()),
                (self.netns.name().to_string(), "eth0".into()),
            ],
            netem,
        )
    }
}

/// iptables DROP rules (a partition, or random loss); removed on [`Partition::heal`] or drop.
pub struct Partition {
    netns: String,
    rules: Vec<Vec<String>>,
    healed: bool,
}

impl Partition {
    fn insert(netns: &str, rules: Vec<Vec<String>>) -> Result<Partition, Error> {
        let mut guard = Partition {
            netns: netns.to_string(),
            rules: Vec::new(),
            healed: false,
        };
        for rule in rules {
            guard.iptables("-I", &rule)?;
            guard.rules.push(rule);
        }
        Ok(guard)
    }

    fn iptables(&self, op: &str, rule: &[String]) -> Result<(), Error> {
        let mut args = vec!["netns", "exec", self.netns.as_str(), "iptables", "-w", op];
        args.extend(rule.iter().map(String::as_str));
        args.extend([
            "-j",
            "DROP",
            "-m",
            "comment",
            "--comment",
            "weft-testbed/drop",
        ]);
        run("ip", &args).map(drop)
    }

    /// Removes the DROP rules: traffic flows again.
    pub fn heal(mut self) -> Result<(), Error> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.healed, true) {
            return Ok(());
        }
        for rule in &self.rules {
            self.iptables("-D", rule)?;
        }
        Ok(())
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("testbed: removing DROP rules: {e}");
        }
    }
}

/// A link taken down; brought back up on [`LinkDown::up`] or drop.
pub struct LinkDown {
    netns: String,
    link: String,
    route: Option<String>,
    up: bool,
}

impl LinkDown {
    pub fn up(mut self) -> Result<(), Error> {
        self.restore()
    }

    fn restore(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.up, true) {
            return Ok(());
        }
        run("ip", &["-n", &self.netns, "link", "set", &self.link, "up"])?;
        if let Some(route) = &self.route {
            run(
                "ip",
                &[
                    "-n",
                    &self.netns,
                    "route",
                    "replace",
                    route,
                    "dev",
                    &self.link,
                ],
            )?;
        }
        Ok(())
    }
}

impl Drop for LinkDown {
    fn drop(&mut self) {
        if let Err(e) = self.restore() {
            eprintln!("testbed: bringing {} back up: {e}", self.link);
        }
    }
}

/// A `tc netem` qdisc on both ends of a link; removed on [`Netem::clear`] or drop.
pub struct Netem {
    links: Arc<Vec<(String, String)>>,
    cleared: bool,
}

impl Netem {
    fn apply(links: Vec<(String, String)>, netem: &[&str]) -> Result<Netem, Error> {
        let guard = Netem {
            links: Arc::new(links),
            cleared: false,
        };
        for (netns, dev) in guard.links.iter() {
            let mut args = vec![
                "-n",
                netns.as_str(),
                "qdisc",
                "replace",
                "dev",
                dev,
                "root",
                "netem",
            ];
            args.extend_from_slice(netem);
            match run("tc", &args) {
                Err(Error::Command { output, .. }) if output.contains("qdisc kind is unknown") => {
                    return Err(Error::Unsupported(
                        "tc netem: this kernel has no sch_netem (CONFIG_NET_SCH_NETEM)".into(),
                    ))
                }
                other => other?,
            };
        }
        Ok(guard)
    }

    pub fn clear(mut self) -> Result<(), Error> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.cleared, true) {
            return Ok(());
        }
        for (netns, dev) in self.links.iter() {
            run("tc", &["-n", netns, "qdisc", "del", "dev", dev, "root"])?;
        }
        Ok(())
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("testbed: removing netem: {e}");
        }
    }
}
