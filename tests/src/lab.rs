//! The lab: a host-gw cluster of N nodes × M pods in network namespaces on this one machine,
//! the topology of DESIGN.md §1 (flannel's `host-gw` backend), torn down on drop even after a
//! panic.
//!
//! ```text
//!                        switch namespace `…-sw`: bridge sw0
//!              port-n1 ────────────┬──────────── port-n2 ──── …
//!   node n1 (`…-n1`)                           node n2 (`…-n2`)
//!     eth0 172.20.11.11/24                       eth0 172.20.11.12/24
//!          fd00:20:11::b/64                           fd00:20:11::c/64
//!     cni0 10.1.1.1/24  (ip_forward = 1)         cni0 10.1.2.1/24
//!          fd00:10:1:1::1/64                          fd00:10:1:2::1/64
//!      ├─ veth1p1 ── pod n1p1 eth0 10.1.1.2       ├─ veth2p1 ── pod n2p1 eth0 10.1.2.2
//!      │                  fd00:10:1:1::2          │                  fd00:10:1:2::2
//!      └─ veth1p2 ── pod n1p2 eth0 10.1.1.3       └─ veth2p2 ── pod n2p2 eth0 10.1.2.3
//! ```
//!
//! Labs are dual-stack unless [`Spec::ipv6`] is off: every uplink, bridge and pod has an IPv6
//! address beside its IPv4 one (without duplicate address detection, router solicitations or
//! router advertisements, so the only IPv6 traffic is what a test sends and the neighbour
//! discovery it causes), and every node lists an IPv6 pod CIDR and `InternalIP`.
//!
//! In [`Mode::KernelOnly`] every node gets the routes flannel would install
//! (`10.1.k.0/24 via 172.20.11.(10+k) dev eth0`, `fd00:10:1:k::/64 via fd00:20:11::(10+k) dev
//! eth0`), IPv6 forwarding, and nothing else: the baseline. In
//! [`Mode::FastPath`] the lab writes a v1 `NodeList` file and starts the real `hostgw-agent` on
//! every node, which installs those routes (route protocol [`ROUTE_PROTO`]) and the eBPF fast
//! path; the lab waits until every agent has attached and routed to every other node. IPv6
//! forwarding is left off on fast-path nodes: the agent of a node with an IPv6 pod CIDR turns
//! it on.
//!
//! The lab owns, and removes on drop: the namespaces `hgw-<pid>-<lab>-{sw,n<i>,n<i>p<j>}`, the
//! pin directories `/sys/fs/bpf/hostgw-test-<pid>-<lab>-n<i>`, a scratch directory
//! `$TMPDIR/hostgw-lab-<pid>-<lab>` (the nodes file and the agents' logs) and the agent
//! processes (SIGTERM, then SIGKILL). It never adds an address, route or interface to the root
//! network namespace, and its helpers only ever send traffic between namespaces it made.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Display,
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use aya::{
    maps::{LpmTrie, Map, MapData, PerCpuArray},
    programs::links::{FdLink, PinnedLink},
};
use hostgw_common::{
    Counter, RouteV4, RouteV6,
    counters::{self, family, hook, reason},
    names,
};

use crate::{Agent, Netns, PinDir, sh};

/// The route protocol number the agent tags its kernel routes with (`ip route show proto
/// 203`).
pub const ROUTE_PROTO: u8 = 203;
/// Every node's uplink, on the switch.
pub const UPLINK: &str = "eth0";
/// Every node's pod bridge.
pub const BRIDGE: &str = "cni0";
/// The bridge in the switch namespace.
pub const SWITCH_BRIDGE: &str = "sw0";
/// The reasons that mean "forwarded by the programs, not by the kernel's stack".
pub const FAST_REASONS: [u32; 5] = [
    reason::FAST_EGRESS,
    reason::FAST_INGRESS,
    reason::FAST_TRANSIT,
    reason::FIB_FORWARD,
    reason::NEIGH_REDIRECT,
];

/// How long the lab waits for agents to attach and route at start-up and after a restart.
const AGENT_READY_TIMEOUT: Duration = Duration::from_mins(1);
/// How long an agent gets to exit on SIGTERM at teardown before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(10);

/// Set (by a signal handler of the program using the lab) to make every wait of the lab give
/// up, so the lab is dropped and torn down promptly.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Panics when [`INTERRUPTED`] is set: the unwinding tears the lab down. Long-running users
/// of a lab (the benchmark) call it between their steps.
pub fn check_interrupted() {
    assert!(
        !INTERRUPTED.load(Ordering::Relaxed),
        "interrupted: tearing the lab down"
    );
}

/// An address family of the lab's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// `IPv4` or `IPv6`, for messages and reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

/// What runs on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The flannel host-gw baseline: kernel routes only, no programs, no agent.
    KernelOnly,
    /// The real agent on every node, with the eBPF fast path.
    FastPath,
}

/// The shape of a lab.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Number of nodes (1-based names `n1`…).
    pub nodes: usize,
    /// Pods per node.
    pub pods: usize,
    pub mode: Mode,
    /// Dual-stack: IPv6 addresses, pod CIDRs and routes beside the IPv4 ones. Off, the lab's
    /// namespaces have IPv6 disabled.
    pub ipv6: bool,
    /// The nodes file to start the agents with ([`Mode::FastPath`]); `None` lists every lab
    /// node correctly. At start-up the lab waits only for the agents of nodes whose own entry
    /// is well-formed, for routes to the other well-formed entries.
    pub node_list: Option<Vec<NodeEntry>>,
}

impl Spec {
    /// `nodes` × `pods` in `mode`, dual-stack, with every node listed correctly.
    pub fn new(nodes: usize, pods: usize, mode: Mode) -> Self {
        Self {
            nodes,
            pods,
            mode,
            ipv6: true,
            node_list: None,
        }
    }
}

/// One `Node` of the nodes file. Fields are kept as text so malformed entries can be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// `metadata.name`.
    pub name: String,
    /// `spec.podCIDR` and the first element of `spec.podCIDRs`.
    pub pod_cidr: String,
    /// The `InternalIP` of `status.addresses`; `None` leaves it out (only a `Hostname`).
    pub internal_ip: Option<String>,
    /// The second element of `spec.podCIDRs` (the IPv6 one of a dual-stack node).
    pub pod_cidr_v6: Option<String>,
    /// A second `InternalIP` (the IPv6 one of a dual-stack node).
    pub internal_ip_v6: Option<String>,
}

impl NodeEntry {
    /// The correct dual-stack entry of lab node `i`: `n<i>`, `10.1.i.0/24` and
    /// `fd00:10:1:i::/64`, `172.20.11.(10+i)` and `fd00:20:11::(10+i)`.
    pub fn of(i: usize) -> Self {
        Self {
            pod_cidr_v6: Some(format!("{}/64", pod_network6(i))),
            internal_ip_v6: Some(uplink_ip6(i).to_string()),
            ..Self::of_v4(i)
        }
    }

    /// The correct IPv4-only entry of lab node `i`.
    pub fn of_v4(i: usize) -> Self {
        Self {
            name: node_name(i),
            pod_cidr: format!("{}/24", pod_network(i)),
            internal_ip: Some(uplink_ip(i).to_string()),
            pod_cidr_v6: None,
            internal_ip_v6: None,
        }
    }

    /// `(network, prefix length, node IP)` of the IPv6 side when it is well-formed: the
    /// second pod CIDR and `InternalIP`, or the only ones of an IPv6-only node.
    pub fn parsed_v6(&self) -> Option<(Ipv6Addr, u8, Ipv6Addr)> {
        let (cidr, ip) = match &self.pod_cidr_v6 {
            Some(cidr) => (cidr, &self.internal_ip_v6),
            None => (&self.pod_cidr, &self.internal_ip),
        };
        let net: ipnet::Ipv6Net = cidr.parse().ok()?;
        if net.network() != net.addr() {
            return None;
        }
        let ip = ip.as_deref()?.parse().ok()?;
        Some((net.addr(), net.prefix_len(), ip))
    }

    /// `(network, prefix length, node IP)` when the entry is well-formed: an IPv4 CIDR whose
    /// address is its network address, and an IPv4 `InternalIP`.
    pub fn parsed(&self) -> Option<(Ipv4Addr, u8, Ipv4Addr)> {
        let (addr, len) = self.pod_cidr.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        if len > 32 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return None;
        }
        let ip = self.internal_ip.as_deref()?.parse().ok()?;
        Some((addr, len, ip))
    }
}

/// A v1 `NodeList` in YAML, as `kubectl get nodes -o yaml` prints it (keys sorted, `kind:
/// List`), holding only what the agent reads.
pub fn node_list_yaml(entries: &[NodeEntry]) -> String {
    let mut y = String::from("apiVersion: v1\nitems:\n");
    for e in entries {
        let _ = write!(
            y,
            "- apiVersion: v1\n  kind: Node\n  metadata:\n    name: {name}\n  spec:\n    \
             podCIDR: {cidr}\n    podCIDRs:\n    - {cidr}\n",
            name = e.name,
            cidr = e.pod_cidr
        );
        if let Some(cidr) = &e.pod_cidr_v6 {
            let _ = writeln!(y, "    - {cidr}");
        }
        y.push_str("  status:\n    addresses:\n");
        for ip in [&e.internal_ip, &e.internal_ip_v6].into_iter().flatten() {
            let _ = write!(y, "    - address: {ip}\n      type: InternalIP\n");
        }
        let _ = write!(
            y,
            "    - address: {name}\n      type: Hostname\n",
            name = e.name
        );
    }
    y.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    y
}

/// `n<i>`: the Kubernetes name of lab node `i`.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

fn octet(i: usize, what: &str) -> u8 {
    u8::try_from(i).unwrap_or_else(|_| panic!("{what} {i} does not fit the lab's addressing"))
}

/// Node `i`'s uplink address, `172.20.11.(10+i)`.
pub fn uplink_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 20, 11, octet(10 + i, "node"))
}

/// Node `i`'s uplink MAC, `02:00:ac:14:0b:(10+i)` (the address's last three octets).
pub fn uplink_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0xac, 0x14, 0x0b, octet(10 + i, "node")]
}

/// Node `i`'s pod network address, `10.1.i.0` (a /24).
pub fn pod_network(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, octet(i, "node"), 0)
}

/// Node `i`'s gateway (its `cni0` address), `10.1.i.1`.
pub fn gateway(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, octet(i, "node"), 1)
}

/// Node `i`'s bridge MAC, `02:00:0a:01:i:01`.
pub fn bridge_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0x0a, 0x01, octet(i, "node"), 0x01]
}

/// Pod `j` of node `i`: `10.1.i.(j+1)`.
pub fn pod_ip(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, octet(i, "node"), octet(j + 1, "pod"))
}

/// Pod `j` of node `i`'s MAC, `02:00:0a:01:i:(j+1)`.
pub fn pod_mac(i: usize, j: usize) -> [u8; 6] {
    [0x02, 0, 0x0a, 0x01, octet(i, "node"), octet(j + 1, "pod")]
}

/// Node `i`'s IPv6 uplink address, `fd00:20:11::(10+i)` (a /64).
pub fn uplink_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x20,
        0x11,
        0,
        0,
        0,
        0,
        u16::from(octet(10 + i, "node")),
    )
}

/// Node `i`'s IPv6 pod network, `fd00:10:1:i::` (a /64).
pub fn pod_network6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 1, u16::from(octet(i, "node")), 0, 0, 0, 0)
}

/// Node `i`'s IPv6 gateway (its `cni0` address), `fd00:10:1:i::1`.
pub fn gateway6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 1, u16::from(octet(i, "node")), 0, 0, 0, 1)
}

/// Pod `j` of node `i`'s IPv6 address: `fd00:10:1:i::(j+1)`.
pub fn pod_ip6(i: usize, j: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x10,
        1,
        u16::from(octet(i, "node")),
        0,
        0,
        0,
        u16::from(octet(j + 1, "pod")),
    )
}

/// `aa:bb:…` form of a MAC address.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A node of the lab.
#[derive(Debug)]
pub struct Node {
    index: usize,
    /// Declared before the namespace: the agent goes first.
    agent: Option<Agent>,
    netns: Netns,
    pins: PinDir,
    uplink_mac: [u8; 6],
    log: PathBuf,
}

impl Node {
    /// 1-based index.
    pub fn index(&self) -> usize {
        self.index
    }
    /// Kubernetes name, `n<i>`.
    pub fn name(&self) -> String {
        node_name(self.index)
    }
    /// Network namespace name (under `/run/netns`).
    pub fn netns(&self) -> &str {
        self.netns.name()
    }
    /// The namespace guard, for running commands in it.
    pub fn ns(&self) -> &Netns {
        &self.netns
    }
    pub fn uplink_ip(&self) -> Ipv4Addr {
        uplink_ip(self.index)
    }
    /// The uplink's MAC as the lab last set it.
    pub fn uplink_mac(&self) -> [u8; 6] {
        self.uplink_mac
    }
    pub fn gateway(&self) -> Ipv4Addr {
        gateway(self.index)
    }
    /// `10.1.i.0/24`.
    pub fn pod_cidr(&self) -> String {
        format!("{}/24", pod_network(self.index))
    }
    pub fn uplink_ip6(&self) -> Ipv6Addr {
        uplink_ip6(self.index)
    }
    pub fn gateway6(&self) -> Ipv6Addr {
        gateway6(self.index)
    }
    /// `fd00:10:1:i::/64`.
    pub fn pod_cidr6(&self) -> String {
        format!("{}/64", pod_network6(self.index))
    }
    /// The agent's pin directory (exists while the agent has pinned something).
    pub fn pin_dir(&self) -> &Path {
        self.pins.path()
    }
    /// The agent's log file (all runs, appended).
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// Where the agent pins the link of its TC program on the uplink.
    pub fn uplink_link_pin(&self) -> PathBuf {
        self.pins
            .path()
            .join("links")
            .join(format!("{}@{UPLINK}", names::PROG_INGRESS))
    }
}

/// A pod of the lab.
#[derive(Debug)]
pub struct Pod {
    node: usize,
    index: usize,
    netns: Netns,
}

impl Pod {
    /// 1-based index of its node.
    pub fn node(&self) -> usize {
        self.node
    }
    /// 1-based index on its node.
    pub fn index(&self) -> usize {
        self.index
    }
    /// Network namespace name (under `/run/netns`).
    pub fn netns(&self) -> &str {
        self.netns.name()
    }
    /// The namespace guard, for running commands in it.
    pub fn ns(&self) -> &Netns {
        &self.netns
    }
    pub fn ip(&self) -> Ipv4Addr {
        pod_ip(self.node, self.index)
    }
    /// Its IPv6 address (configured only in a dual-stack lab).
    pub fn ip6(&self) -> Ipv6Addr {
        pod_ip6(self.node, self.index)
    }
    /// Its address of `family`.
    pub fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.ip().into(),
            Family::V6 => self.ip6().into(),
        }
    }
    pub fn mac(&self) -> [u8; 6] {
        pod_mac(self.node, self.index)
    }
    /// The host end of its veth on the node, a port of `cni0`.
    pub fn host_veth(&self) -> String {
        format!("veth{}p{}", self.node, self.index)
    }
    /// `n<i>p<j>`, for messages.
    pub fn label(&self) -> String {
        format!("n{}p{}", self.node, self.index)
    }
}

/// A scratch directory removed with its contents on drop.
#[derive(Debug)]
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: could not remove {}: {e}", self.0.display());
        }
    }
}

/// Packets counted by a node's programs, summed over CPUs, per `(family, hook, reason)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    packets: Vec<u64>,
}

impl Counters {
    /// Packets at `(hook, reason)`, over every address family.
    pub fn get(&self, hook: u32, reason: u32) -> u64 {
        (0..family::COUNT)
            .map(|f| self.get_in(f, hook, reason))
            .sum()
    }

    /// Packets of `family` at `(hook, reason)`.
    pub fn get_in(&self, family: u32, hook: u32, reason: u32) -> u64 {
        self.packets[counters::index(family, hook, reason) as usize]
    }

    /// Packets with `reason`, over every hook and family.
    pub fn reason(&self, reason: u32) -> u64 {
        (0..family::COUNT).map(|f| self.reason_in(f, reason)).sum()
    }

    /// Packets of `family` with `reason`, over every hook.
    pub fn reason_in(&self, family: u32, reason: u32) -> u64 {
        (0..hook::COUNT)
            .map(|h| self.get_in(family, h, reason))
            .sum()
    }

    /// Packets forwarded by the programs: the [`FAST_REASONS`] over every hook and family.
    pub fn fast(&self) -> u64 {
        FAST_REASONS.iter().map(|&r| self.reason(r)).sum()
    }

    /// Packets of `family` forwarded by the programs.
    pub fn fast_in(&self, family: u32) -> u64 {
        FAST_REASONS
            .iter()
            .map(|&r| self.reason_in(family, r))
            .sum()
    }

    /// What grew since `earlier`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            packets: self
                .packets
                .iter()
                .zip(&earlier.packets)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
        }
    }

    /// `(family name, hook name, reason name, packets)` for every non-zero counter.
    pub fn nonzero(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for f in 0..family::COUNT {
            for h in 0..hook::COUNT {
                for r in 0..reason::COUNT {
                    let n = self.get_in(f, h, r);
                    if n > 0 {
                        out.push((
                            family::NAMES[f as usize],
                            hook::NAMES[h as usize],
                            reason::NAMES[r as usize],
                            n,
                        ));
                    }
                }
            }
        }
        out
    }
}

/// An entry of a node's `ROUTES_V4` trie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrieEntry {
    pub network: Ipv4Addr,
    pub prefix_len: u32,
    pub route: RouteV4,
}

impl TrieEntry {
    /// `a.b.c.d/len`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix_len)
    }
}

/// What `ping -q` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub sent: u32,
    pub received: u32,
}

/// A TCP transfer that arrived intact.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    /// From the connection being accepted to the receiver seeing the end of the stream.
    pub elapsed: Duration,
}

impl Transfer {
    /// Throughput in megabits per second.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A `ping` running in the background; killed on drop if still running.
#[derive(Debug)]
pub struct PingJob {
    child: Option<Child>,
    what: String,
}

impl PingJob {
    /// Waits up to `timeout` for the ping to end and returns what it reported.
    pub fn wait(mut self, timeout: Duration) -> PingStats {
        let mut child = self.child.take().expect("ping job not yet waited for");
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ignored = child.kill();
                    let _ignored = child.wait();
                    panic!("{} still running after {timeout:?}", self.what);
                }
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        }
        // `ping -q` prints a few lines: the pipe cannot have filled up.
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("reading the output of {}: {e}", self.what));
        parse_ping(&self.what, &out)
    }
}

impl Drop for PingJob {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ignored = child.kill();
            let _ignored = child.wait();
        }
    }
}

/// The lab. See the module docs.
#[derive(Debug)]
pub struct Lab {
    name: String,
    mode: Mode,
    ipv6: bool,
    pods_per_node: usize,
    // Field order is drop order: agents are stopped in `Drop::drop`, then pods, nodes (and
    // their pin directories), the switch and the scratch directory go.
    pods: Vec<Pod>,
    nodes: Vec<Node>,
    switch: Option<Netns>,
    dir: Option<ScratchDir>,
    nodes_file: PathBuf,
    /// What the nodes file holds now.
    listed: Vec<NodeEntry>,
    kept: bool,
}

impl Lab {
    /// Builds the lab `name` (unique among labs running at the same time in this process) and,
    /// in [`Mode::FastPath`], starts an agent on every node and waits until each has attached
    /// and routed to every other node. Panics, tearing down what was built, on any failure.
    pub fn start(name: &str, spec: &Spec) -> Self {
        crate::require_root();
        assert!(
            (1..=200).contains(&spec.nodes) && (1..=200).contains(&spec.pods),
            "a lab has 1–200 nodes of 1–200 pods, not {} × {}",
            spec.nodes,
            spec.pods
        );
        let dir = std::env::temp_dir().join(format!("hostgw-lab-{}-{name}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut lab = Self {
            name: name.to_owned(),
            mode: spec.mode,
            ipv6: spec.ipv6,
            pods_per_node: spec.pods,
            pods: Vec::new(),
            nodes: Vec::new(),
            switch: None,
            nodes_file: dir.join("nodes.yaml"),
            dir: Some(ScratchDir(dir)),
            listed: Vec::new(),
            kept: false,
        };
        lab.build(spec);
        lab
    }

    fn build(&mut self, spec: &Spec) {
        let switch = Netns::new(&format!("{}-sw", self.name));
        self.sysctls(&switch, Role::Switch);
        switch.ip(&["link", "add", SWITCH_BRIDGE, "type", "bridge"]);
        switch.ip(&["link", "set", SWITCH_BRIDGE, "up"]);
        self.switch = Some(switch);

        for i in 1..=spec.nodes {
            check_interrupted();
            self.add_node(i);
            for j in 1..=spec.pods {
                self.add_pod(i, j);
            }
        }

        match spec.mode {
            Mode::KernelOnly => {
                for i in 1..=spec.nodes {
                    let node = self.node(i);
                    for k in (1..=spec.nodes).filter(|&k| k != i) {
                        node.ns().ip(&[
                            "route",
                            "add",
                            &format!("{}/24", pod_network(k)),
                            "via",
                            &uplink_ip(k).to_string(),
                            "dev",
                            UPLINK,
                        ]);
                        if spec.ipv6 {
                            node.ns().ip(&[
                                "-6",
                                "route",
                                "add",
                                &format!("{}/64", pod_network6(k)),
                                "via",
                                &uplink_ip6(k).to_string(),
                                "dev",
                                UPLINK,
                            ]);
                        }
                    }
                }
            }
            Mode::FastPath => {
                let entry = if spec.ipv6 {
                    NodeEntry::of
                } else {
                    NodeEntry::of_v4
                };
                let list = spec
                    .node_list
                    .clone()
                    .unwrap_or_else(|| (1..=spec.nodes).map(entry).collect());
                self.write_nodes(&list);
                for i in 1..=spec.nodes {
                    self.spawn_agent(i);
                }
                for i in 1..=spec.nodes {
                    if self.well_formed_self(i) {
                        self.wait_agent_ready(i);
                    }
                }
            }
        }
    }

    fn add_node(&mut self, i: usize) {
        let netns = Netns::new(&format!("{}-n{i}", self.name));
        self.sysctls(&netns, Role::Node);
        let switch = self.switch.as_ref().expect("the switch is built first");
        let port = format!("port-n{i}");
        switch.ip(&[
            "link",
            "add",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            UPLINK,
            "netns",
            netns.name(),
        ]);
        switch.ip(&["link", "set", &port, "master", SWITCH_BRIDGE]);
        switch.ip(&["link", "set", &port, "up"]);

        let mac = uplink_mac(i);
        netns.ip(&["link", "set", UPLINK, "address", &mac_string(mac)]);
        netns.ip(&[
            "addr",
            "add",
            &format!("{}/24", uplink_ip(i)),
            "dev",
            UPLINK,
        ]);
        if self.ipv6 {
            netns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", uplink_ip6(i)),
                "dev",
                UPLINK,
                "nodad",
            ]);
        }
        netns.ip(&["link", "set", UPLINK, "up"]);

        netns.ip(&[
            "link",
            "add",
            BRIDGE,
            "address",
            &mac_string(bridge_mac(i)),
            "type",
            "bridge",
        ]);
        netns.ip(&["addr", "add", &format!("{}/24", gateway(i)), "dev", BRIDGE]);
        if self.ipv6 {
            netns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", gateway6(i)),
                "dev",
                BRIDGE,
                "nodad",
            ]);
        }
        netns.ip(&["link", "set", BRIDGE, "up"]);

        let log = self
            .dir
            .as_ref()
            .expect("scratch dir")
            .0
            .join(format!("agent-n{i}.log"));
        self.nodes.push(Node {
            index: i,
            agent: None,
            netns,
            pins: PinDir::new(&format!("{}-n{i}", self.name)),
            uplink_mac: mac,
            log,
        });
    }

    fn add_pod(&mut self, i: usize, j: usize) {
        let netns = Netns::new(&format!("{}-n{i}p{j}", self.name));
        self.sysctls(&netns, Role::Pod);
        let pod = Pod {
            node: i,
            index: j,
            netns,
        };
        let node = self.node(i).ns();
        let veth = pod.host_veth();
        node.ip(&[
            "link",
            "add",
            &veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.netns(),
        ]);
        node.ip(&["link", "set", &veth, "master", BRIDGE]);
        node.ip(&["link", "set", &veth, "up"]);
        let ns = pod.ns();
        ns.ip(&["link", "set", "eth0", "address", &mac_string(pod.mac())]);
        ns.ip(&["addr", "add", &format!("{}/24", pod.ip()), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &gateway(i).to_string()]);
        if self.ipv6 {
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", pod.ip6()),
                "dev",
                "eth0",
                "nodad",
            ]);
            ns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &gateway6(i).to_string(),
            ]);
        }
        self.pods.push(pod);
    }

    // ---- topology ----

    /// The lab's name, as given to [`Lab::start`].
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the lab is dual-stack.
    pub fn ipv6(&self) -> bool {
        self.ipv6
    }
    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
    /// Pods per node.
    pub fn pods_per_node(&self) -> usize {
        self.pods_per_node
    }
    /// The switch namespace's name.
    pub fn switch_netns(&self) -> &str {
        self.switch.as_ref().expect("switch").name()
    }
    /// The scratch directory (nodes file, agent logs).
    pub fn dir(&self) -> &Path {
        &self.dir.as_ref().expect("scratch dir").0
    }
    /// The nodes file the agents watch.
    pub fn nodes_file(&self) -> &Path {
        &self.nodes_file
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: usize) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.index == i)
            .unwrap_or_else(|| panic!("lab {} has no node {i}", self.name))
    }

    fn node_mut(&mut self, i: usize) -> &mut Node {
        let name = self.name.clone();
        self.nodes
            .iter_mut()
            .find(|n| n.index == i)
            .unwrap_or_else(|| panic!("lab {name} has no node {i}"))
    }

    /// Pod `j` (1-based) of node `i` (1-based).
    pub fn pod(&self, i: usize, j: usize) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.node == i && p.index == j)
            .unwrap_or_else(|| panic!("lab {} has no pod {j} on node {i}", self.name))
    }

    /// Every pod, node by node.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Every node.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    // ---- the nodes file ----

    /// Replaces the nodes file with `entries`, atomically (a temporary file renamed over it, as
    /// a `ConfigMap` update does).
    pub fn write_nodes(&mut self, entries: &[NodeEntry]) {
        self.write_nodes_yaml(&node_list_yaml(entries));
        self.listed = entries.to_vec();
    }

    /// Replaces the nodes file with arbitrary text, atomically. The lab then assumes nothing
    /// about which nodes are listed.
    pub fn write_nodes_yaml(&mut self, yaml: &str) {
        let tmp = self.nodes_file.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &self.nodes_file).unwrap_or_else(|e| {
            panic!(
                "renaming {} to {}: {e}",
                tmp.display(),
                self.nodes_file.display()
            )
        });
        self.listed.clear();
    }

    /// Lists every lab node except node `i`.
    pub fn remove_node(&mut self, i: usize) {
        let entries: Vec<NodeEntry> = (1..=self.nodes.len())
            .filter(|&k| k != i)
            .map(NodeEntry::of)
            .collect();
        self.write_nodes(&entries);
    }

    /// Lists every lab node correctly again.
    pub fn restore_nodes(&mut self) {
        let entries: Vec<NodeEntry> = (1..=self.nodes.len()).map(NodeEntry::of).collect();
        self.write_nodes(&entries);
    }

    /// What the lab last wrote with [`Lab::write_nodes`] (empty after raw YAML).
    pub fn listed_nodes(&self) -> &[NodeEntry] {
        &self.listed
    }

    /// Whether node `i`'s own entry is listed, with a well-formed and correct side of either
    /// family.
    fn well_formed_self(&self, i: usize) -> bool {
        let own = NodeEntry::of(i);
        self.listed.iter().any(|e| {
            e.name == own.name
                && (e.parsed().is_some_and(|p| Some(p) == own.parsed())
                    || e.parsed_v6().is_some_and(|p| Some(p) == own.parsed_v6()))
        })
    }

    /// The agent routes node `i` must have for the listed nodes: `CIDR → node IP` of every
    /// other well-formed entry.
    pub fn expected_agent_routes(&self, i: usize) -> BTreeMap<String, Ipv4Addr> {
        let own = node_name(i);
        self.listed
            .iter()
            .filter(|e| e.name != own)
            .filter_map(|e| {
                let (net, len, ip) = e.parsed()?;
                Some((format!("{net}/{len}"), ip))
            })
            .collect()
    }

    /// The IPv6 agent routes node `i` must have: `CIDR → node IP` of every other entry whose
    /// IPv6 side is well-formed (none in an IPv4-only lab, where no node has an IPv6 address).
    pub fn expected_agent_routes6(&self, i: usize) -> BTreeMap<String, Ipv6Addr> {
        let own = node_name(i);
        if !self.ipv6 {
            return BTreeMap::new();
        }
        self.listed
            .iter()
            .filter(|e| e.name != own)
            .filter_map(|e| {
                let (net, len, ip) = e.parsed_v6()?;
                Some((format!("{net}/{len}"), ip))
            })
            .collect()
    }

    // ---- agents ----

    fn agent_args(&self, i: usize) -> Vec<String> {
        let node = self.node(i);
        vec![
            "run".into(),
            "--netns".into(),
            node.netns().into(),
            "--uplink".into(),
            UPLINK.into(),
            "--bridge".into(),
            BRIDGE.into(),
            "--pin-dir".into(),
            node.pin_dir().to_str().expect("UTF-8 pin dir").into(),
            "--nodes-file".into(),
            self.nodes_file.to_str().expect("UTF-8 nodes file").into(),
            "--node-name".into(),
            node.name(),
        ]
    }

    fn spawn_agent(&mut self, i: usize) {
        self.spawn_agent_with(i, &[]);
    }

    fn spawn_agent_with(&mut self, i: usize, extra: &[&str]) {
        let args = self.agent_args(i);
        let args: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        let node = self.node_mut(i);
        let _ignored = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .and_then(|mut f| writeln!(f, "---- lab: starting hostgw-agent {}", args.join(" ")));
        node.agent = Some(Agent::start_with_log(&args, &node.log));
    }

    /// Waits until node `i`'s agent has attached (its process holds the link pinned at
    /// `<pin dir>/links/hostgw_ingress@eth0`, created or adopted) and its routes (protocol
    /// [`ROUTE_PROTO`]) are exactly [`Lab::expected_agent_routes`] and
    /// [`Lab::expected_agent_routes6`]. Panics with the agent's log on a timeout or an exit.
    pub fn wait_agent_ready(&mut self, i: usize) {
        let expected = self.expected_agent_routes(i);
        let expected6 = self.expected_agent_routes6(i);
        let netns = self.node(i).netns().to_owned();
        let uplink_pin = self.node(i).uplink_link_pin();
        let log = self.node(i).log.clone();
        let agent = self
            .node_mut(i)
            .agent
            .as_mut()
            .unwrap_or_else(|| panic!("node {i} runs no agent"));
        let pid = agent.pid().expect("a running agent has a pid");
        let what = format!(
            "the agent of n{i} to attach and install routes {expected:?} {expected6:?} (log {})",
            log.display()
        );
        agent.wait_until(AGENT_READY_TIMEOUT, &what, || {
            check_interrupted();
            pinned_link_id(&uplink_pin).is_some_and(|id| held_link_ids(pid).contains(&id))
                && agent_routes_in(&netns) == expected
                && agent_routes6_in(&netns) == expected6
        });
    }

    /// Waits up to `timeout` until every running agent whose own node is listed has exactly
    /// the routes the listed nodes call for.
    pub fn wait_routes_converged(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            check_interrupted();
            let pending: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.agent.is_some() && self.well_formed_self(n.index))
                .filter_map(|n| {
                    let want = self.expected_agent_routes(n.index);
                    let have = agent_routes_in(n.netns());
                    let want6 = self.expected_agent_routes6(n.index);
                    let have6 = agent_routes6_in(n.netns());
                    (have != want || have6 != want6).then(|| {
                        format!(
                            "n{}: has {have:?} {have6:?}, wants {want:?} {want6:?}",
                            n.index
                        )
                    })
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "routes not converged after {timeout:?}:\n{}\n{}",
                pending.join("\n"),
                self.all_agent_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `i`'s agent log, all runs (ANSI colours stripped).
    pub fn agent_log(&self, i: usize) -> String {
        let node = self.node(i);
        strip_ansi(&std::fs::read_to_string(&node.log).unwrap_or_default())
    }

    /// Every agent's log, headed by its node, for failure messages.
    pub fn all_agent_logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "==== agent log of n{} ====\n{}",
                n.index,
                self.agent_log(n.index)
            );
        }
        out
    }

    /// Sends `signal` to node `i`'s agent and waits (10 s at most) for it to exit.
    pub fn kill_agent(&mut self, i: usize, signal: i32) -> ExitStatus {
        let node = self.node_mut(i);
        let mut agent = node
            .agent
            .take()
            .unwrap_or_else(|| panic!("node {i} runs no agent"));
        agent.stop(signal, Duration::from_secs(10))
    }

    /// Starts node `i`'s agent again (stopping a running one with SIGTERM first) and waits
    /// until it is ready (see [`Lab::wait_agent_ready`]): after a SIGKILL, that means it has
    /// adopted the pinned links.
    pub fn restart_agent(&mut self, i: usize) {
        assert_eq!(
            self.mode,
            Mode::FastPath,
            "a kernel-only lab runs no agents"
        );
        self.restart_agent_with(i, &[]);
    }

    /// [`Lab::restart_agent`] with extra agent flags (e.g. `--replace-programs`).
    pub fn restart_agent_with(&mut self, i: usize, extra: &[&str]) {
        assert_eq!(
            self.mode,
            Mode::FastPath,
            "a kernel-only lab runs no agents"
        );
        if let Some(mut agent) = self.node_mut(i).agent.take() {
            agent.stop(libc::SIGTERM, Duration::from_secs(10));
        }
        self.spawn_agent_with(i, extra);
        self.wait_agent_ready(i);
    }

    /// Whether node `i`'s agent process is running.
    pub fn agent_running(&mut self, i: usize) -> bool {
        self.node_mut(i)
            .agent
            .as_mut()
            .is_some_and(Agent::is_running)
    }

    /// Process id of node `i`'s agent.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.node(i).agent.as_ref().and_then(Agent::pid)
    }

    // ---- looking at nodes ----

    /// Lines of `ip route show` on node `i`.
    pub fn routes(&self, i: usize) -> Vec<String> {
        ip_lines(self.node(i).netns(), &["route", "show"])
    }

    /// Node `i`'s IPv6 routing table (`ip -6 route show`), one route per line.
    pub fn routes6(&self, i: usize) -> Vec<String> {
        ip_lines(self.node(i).netns(), &["-6", "route", "show"])
    }

    /// Node `i`'s routes of protocol [`ROUTE_PROTO`]: `CIDR → via`.
    pub fn agent_routes(&self, i: usize) -> BTreeMap<String, Ipv4Addr> {
        agent_routes_in(self.node(i).netns())
    }

    /// Node `i`'s IPv6 routes of protocol [`ROUTE_PROTO`]: `CIDR → via`.
    pub fn agent_routes6(&self, i: usize) -> BTreeMap<String, Ipv6Addr> {
        agent_routes6_in(self.node(i).netns())
    }

    /// Node `i`'s sysctl `key` (e.g. `net.ipv6.conf.all.forwarding`).
    pub fn sysctl(&self, i: usize, key: &str) -> String {
        let out = sh(self.node(i).ns().command("sysctl").args(["-n", key]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The id of the XDP program on node `i`'s uplink, if any.
    pub fn xdp_prog_id(&self, i: usize) -> Option<u32> {
        xdp_prog_id_in(self.node(i).netns())
    }

    /// The id of the link pinned at `<pin dir>/links/hostgw_ingress@eth0` on node `i`, if any
    /// (the same id means the same link).
    pub fn uplink_link_id(&self, i: usize) -> Option<u32> {
        pinned_link_id(&self.node(i).uplink_link_pin())
    }

    /// The id of the program behind that link.
    pub fn uplink_prog_id(&self, i: usize) -> Option<u32> {
        let link = FdLink::from(PinnedLink::from_pin(self.node(i).uplink_link_pin()).ok()?);
        link.info().ok().map(|info| info.program_id())
    }

    /// Ids of the BPF links node `i`'s agent process holds open.
    pub fn agent_link_ids(&self, i: usize) -> BTreeSet<u32> {
        self.agent_pid(i).map(held_link_ids).unwrap_or_default()
    }

    /// `Ip: ForwDatagrams` of node `i`: datagrams the kernel's stack forwarded.
    pub fn snmp_forwarded(&self, i: usize) -> u64 {
        let out = sh(self.node(i).ns().command("cat").arg("/proc/net/snmp"));
        let text = String::from_utf8_lossy(&out.stdout);
        parse_snmp(&text, "Ip", "ForwDatagrams")
            .unwrap_or_else(|| panic!("no Ip: ForwDatagrams in /proc/net/snmp of n{i}:\n{text}"))
    }

    /// Datagrams of `family` node `i`'s kernel stack forwarded: [`Lab::snmp_forwarded`] or
    /// [`Lab::snmp6_forwarded`].
    pub fn kernel_forwarded(&self, i: usize, family: Family) -> u64 {
        match family {
            Family::V4 => self.snmp_forwarded(i),
            Family::V6 => self.snmp6_forwarded(i),
        }
    }

    /// `Ip6OutForwDatagrams` of node `i`: IPv6 datagrams the kernel's stack forwarded.
    pub fn snmp6_forwarded(&self, i: usize) -> u64 {
        let out = sh(self.node(i).ns().command("cat").arg("/proc/net/snmp6"));
        let text = String::from_utf8_lossy(&out.stdout);
        parse_snmp6(&text, "Ip6OutForwDatagrams")
            .unwrap_or_else(|| panic!("no Ip6OutForwDatagrams in /proc/net/snmp6 of n{i}:\n{text}"))
    }

    fn pinned_map(&self, i: usize, map: &str) -> MapData {
        let path = self.node(i).pin_dir().join(map);
        MapData::from_pin(&path).unwrap_or_else(|e| {
            panic!(
                "cannot open {} (is an agent running on n{i}? the lab is {:?}): {e}",
                path.display(),
                self.mode
            )
        })
    }

    /// The id of node `i`'s pinned map `map` (the same id means the same map).
    pub fn map_id(&self, i: usize, map: &str) -> u32 {
        self.pinned_map(i, map)
            .info()
            .unwrap_or_else(|e| panic!("map info of {map} on n{i}: {e}"))
            .id()
    }

    /// Node `i`'s program counters from the pinned `STATS` map, summed over CPUs.
    pub fn fast_path_counters(&self, i: usize) -> Counters {
        let map = Map::from_map_data(self.pinned_map(i, names::STATS))
            .unwrap_or_else(|e| panic!("STATS of n{i}: {e}"));
        let stats: PerCpuArray<MapData, Counter> = PerCpuArray::try_from(map)
            .unwrap_or_else(|e| panic!("STATS of n{i} is not a per-CPU array: {e}"));
        let packets = (0..counters::STATS_LEN)
            .map(|idx| {
                stats
                    .get(&idx, 0)
                    .unwrap_or_else(|e| panic!("reading STATS[{idx}] of n{i}: {e}"))
                    .iter()
                    .map(|c| c.packets)
                    .sum()
            })
            .collect();
        Counters { packets }
    }

    /// Node `i`'s `ROUTES_V4` trie, from its pin.
    pub fn trie(&self, i: usize) -> Vec<TrieEntry> {
        let map = Map::from_map_data(self.pinned_map(i, names::ROUTES_V4))
            .unwrap_or_else(|e| panic!("ROUTES_V4 of n{i}: {e}"));
        let trie: LpmTrie<MapData, [u8; 4], RouteV4> = LpmTrie::try_from(map)
            .unwrap_or_else(|e| panic!("ROUTES_V4 of n{i} is not an LPM trie: {e}"));
        trie.iter()
            .map(|kv| {
                let (key, route) = kv.unwrap_or_else(|e| panic!("iterating ROUTES_V4: {e}"));
                TrieEntry {
                    network: Ipv4Addr::from(key.data()),
                    prefix_len: key.prefix_len(),
                    route,
                }
            })
            .collect()
    }

    /// Node `i`'s trie entry for `cidr` (`a.b.c.d/len`), if any.
    pub fn trie_entry(&self, i: usize, cidr: &str) -> Option<TrieEntry> {
        self.trie(i).into_iter().find(|e| e.cidr() == cidr)
    }

    /// Node `i`'s `ROUTES_V6` trie, from its pin: `CIDR → route`.
    pub fn trie6(&self, i: usize) -> BTreeMap<String, RouteV6> {
        let map = Map::from_map_data(self.pinned_map(i, names::ROUTES_V6))
            .unwrap_or_else(|e| panic!("ROUTES_V6 of n{i}: {e}"));
        let trie: LpmTrie<MapData, [u8; 16], RouteV6> = LpmTrie::try_from(map)
            .unwrap_or_else(|e| panic!("ROUTES_V6 of n{i} is not an LPM trie: {e}"));
        trie.iter()
            .map(|kv| {
                let (key, route) = kv.unwrap_or_else(|e| panic!("iterating ROUTES_V6: {e}"));
                let cidr = format!("{}/{}", Ipv6Addr::from(key.data()), key.prefix_len());
                (cidr, route)
            })
            .collect()
    }

    // ---- changing nodes ----

    /// Sets node `i`'s uplink MAC. The lab's nodes have `arp_notify` on, so the node announces
    /// the new address with a gratuitous ARP, as hosts do when their address moves.
    pub fn set_uplink_mac(&mut self, i: usize, mac: [u8; 6]) {
        let node = self.node_mut(i);
        node.netns
            .ip(&["link", "set", UPLINK, "address", &mac_string(mac)]);
        node.uplink_mac = mac;
    }

    // ---- traffic ----

    /// `ping -c count -i interval` from `from` to `to` (IPv4 or IPv6); what it reported.
    pub fn ping(
        &self,
        from: &Pod,
        to: impl Into<IpAddr>,
        count: u32,
        interval: Duration,
    ) -> PingStats {
        self.ping_spawn(from, to, count, interval)
            .wait(ping_budget(count, interval))
    }

    /// Starts `ping -c count -i interval` from `from` to `to` in the background.
    pub fn ping_spawn(
        &self,
        from: &Pod,
        to: impl Into<IpAddr>,
        count: u32,
        interval: Duration,
    ) -> PingJob {
        let to = to.into();
        self.assert_lab_address(to);
        let mut cmd = from.ns().command("ping");
        cmd.args([
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            &format!("{:.3}", interval.as_secs_f64()),
            "-W",
            "1",
            &to.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let what = format!("ping from {} to {to}", from.label());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        PingJob {
            child: Some(child),
            what,
        }
    }

    /// Every ordered pair of pods pings over `family`, all pairs at once, three echoes each.
    /// Returns how many pairs pinged and a line for each pair that did not get every echo.
    pub fn unanswered_pod_pairs(&self, family: Family) -> (usize, Vec<String>) {
        let mut jobs = Vec::new();
        for from in &self.pods {
            for to in &self.pods {
                if from.addr(family) != to.addr(family) {
                    let job = self.ping_spawn(from, to.addr(family), 3, Duration::from_millis(200));
                    jobs.push((from.label(), to.label(), job));
                }
            }
        }
        let pairs = jobs.len();
        let failed = jobs
            .into_iter()
            .filter_map(|(from, to, job)| {
                let stats = job.wait(Duration::from_secs(20));
                (stats.sent != 3 || stats.received != stats.sent)
                    .then(|| format!("{from} → {to}: {stats:?}"))
            })
            .collect();
        (pairs, failed)
    }

    /// Pings pod n1p1 → n2p1 over `family` `count` times at 100 pps after a warm-up of three,
    /// panicking unless every echo is answered. Returns, for n1 and n2, how many datagrams of
    /// `family` the kernel's stack forwarded meanwhile ([`Lab::kernel_forwarded`]) and how the
    /// programs' counters grew (`None` in [`Mode::KernelOnly`]).
    pub fn forwarding_during_pings(
        &self,
        family: Family,
        count: u32,
    ) -> [(u64, Option<Counters>); 2] {
        let (from, to) = (self.pod(1, 1), self.pod(2, 1).addr(family));
        let ping = |n: u32, interval_ms: u64, what: &str| {
            let stats = self.ping(from, to, n, Duration::from_millis(interval_ms));
            assert!(
                stats.sent == n && stats.received == n,
                "{what} n1p1 → n2p1 over {}: {stats:?} of {n}\n{}",
                family.label(),
                self.all_agent_logs()
            );
        };
        // The warm-up resolves neighbours and lets the agents learn endpoints and MACs.
        ping(3, 200, "warm-up ping");
        let counters = |i| (self.mode == Mode::FastPath).then(|| self.fast_path_counters(i));
        let before = [1, 2].map(|i| (self.kernel_forwarded(i, family), counters(i)));
        ping(count, 10, "ping");
        let after = [1, 2].map(|i| (self.kernel_forwarded(i, family), counters(i)));
        [0, 1].map(|k| {
            let grew = match (&after[k].1, &before[k].1) {
                (Some(a), Some(b)) => Some(a.since(b)),
                _ => None,
            };
            (after[k].0 - before[k].0, grew)
        })
    }

    /// The hops of `traceroute -n -q 1 -w 1 -m 8` (with `-6` for an IPv6 `to`) from `from` to
    /// `to`; `None` for a `*`.
    pub fn traceroute<A>(&self, from: &Pod, to: A) -> Vec<Option<A>>
    where
        A: Into<IpAddr> + FromStr + Display + Copy,
    {
        let family = if to.into().is_ipv6() { "-6" } else { "-4" };
        self.assert_lab_address(to.into());
        let mut cmd = from.ns().command("traceroute");
        cmd.args([
            family,
            "-n",
            "-q",
            "1",
            "-w",
            "1",
            "-m",
            "8",
            &to.to_string(),
        ]);
        let out = output_within(&mut cmd, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_traceroute(&String::from_utf8_lossy(&out.stdout))
    }

    /// Sends `bytes` of a deterministic pseudo-random stream over TCP from pod `from` to pod
    /// `to` and panics unless exactly those bytes arrive (length and hash compared). Bounded:
    /// a minute at most, plus ten seconds per idle socket operation.
    pub fn tcp_transfer(&self, from: &Pod, to: &Pod, bytes: u64) -> Transfer {
        tcp_transfer(
            (from.netns(), &from.label()),
            (to.netns(), &to.label(), to.ip().into()),
            bytes,
        )
    }

    /// [`Lab::tcp_transfer`] over IPv6, to `to`'s IPv6 address.
    pub fn tcp_transfer6(&self, from: &Pod, to: &Pod, bytes: u64) -> Transfer {
        assert!(self.ipv6, "lab {} is IPv4-only", self.name);
        tcp_transfer(
            (from.netns(), &from.label()),
            (to.netns(), &to.label(), to.ip6().into()),
            bytes,
        )
    }

    /// Panics unless `ip` is an address of the lab (a pod, a gateway or an uplink).
    fn assert_lab_address(&self, ip: IpAddr) {
        let ours = match ip {
            IpAddr::V4(ip) => {
                self.pods.iter().any(|p| p.ip() == ip)
                    || self
                        .nodes
                        .iter()
                        .any(|n| n.gateway() == ip || n.uplink_ip() == ip)
            }
            IpAddr::V6(ip) => {
                self.ipv6
                    && (self.pods.iter().any(|p| p.ip6() == ip)
                        || self
                            .nodes
                            .iter()
                            .any(|n| n.gateway6() == ip || n.uplink_ip6() == ip))
            }
        };
        assert!(ours, "{ip} is not an address of lab {}", self.name);
    }

    // ---- keeping the lab ----

    /// Leaves the lab up after this value is gone: namespaces, pins, agents and the scratch
    /// directory stay. Returns the agents' process ids. See [`teardown_kept`].
    pub fn keep(mut self) -> Vec<(usize, u32)> {
        self.kept = true;
        let mut pids = Vec::new();
        for node in &mut self.nodes {
            if let Some(pid) = node.agent.take().and_then(Agent::detach) {
                pids.push((node.index, pid));
            }
        }
        pids
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.kept {
            // Forget the guards: what they would delete stays for `teardown_kept`.
            for pod in self.pods.drain(..) {
                std::mem::forget(pod);
            }
            for node in self.nodes.drain(..) {
                std::mem::forget(node);
            }
            std::mem::forget(self.switch.take());
            std::mem::forget(self.dir.take());
            return;
        }
        // Agents first, all at once: on SIGTERM each detaches and unpins its dataplane.
        let mut stopping = Vec::new();
        for node in &mut self.nodes {
            if let Some(mut agent) = node.agent.take() {
                if let Some(pid) = agent.pid()
                    && let Ok(pid) = i32::try_from(pid)
                    && agent.is_running()
                {
                    // SAFETY: kill has no memory-safety preconditions; `pid` is our running,
                    // unreaped child.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
                stopping.push(agent);
            }
        }
        for mut agent in stopping {
            agent.terminate(TERM_GRACE);
        }
        // Then the fields drop in order: pods, nodes (namespace, pin directory), the switch,
        // the scratch directory.
    }
}

/// What a lab namespace is, for its sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Switch,
    Node,
    Pod,
}

impl Lab {
    /// Sysctls of a lab namespace, set before any interface is made: no ICMP rate limit
    /// (back-to-back traceroutes would otherwise see `*` where a host is only out of tokens);
    /// on nodes, IPv4 forwarding and gratuitous ARP on address changes. IPv6 is disabled in an
    /// IPv4-only lab (it would add traffic to the counters); dual-stack, it is on without DAD,
    /// router solicitations and router advertisements, with no `ICMPv6` rate limit, and with
    /// forwarding on kernel-only nodes (on fast-path nodes the agent turns it on).
    fn sysctls(&self, ns: &Netns, role: Role) {
        let mut cmd = ns.command("sysctl");
        cmd.args(["-q", "-w", "net.ipv4.icmp_ratelimit=0"]);
        if self.ipv6 {
            cmd.args([
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv6.conf.all.router_solicitations=0",
                "net.ipv6.conf.default.router_solicitations=0",
                "net.ipv6.conf.all.accept_ra=0",
                "net.ipv6.conf.default.accept_ra=0",
                "net.ipv6.icmp.ratelimit=0",
            ]);
        } else {
            cmd.args([
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        if role == Role::Node {
            cmd.args([
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.forwarding=1",
                "net.ipv4.conf.default.forwarding=1",
                "net.ipv4.conf.all.arp_notify=1",
                "net.ipv4.conf.default.arp_notify=1",
            ]);
            if self.ipv6 && self.mode == Mode::KernelOnly {
                cmd.arg("net.ipv6.conf.all.forwarding=1");
            }
        }
        sh(&mut cmd);
    }
}

fn ip_lines(netns: &str, args: &[&str]) -> Vec<String> {
    let out = sh(Command::new("ip").arg("-n").arg(netns).args(args));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn agent_routes_in(netns: &str) -> BTreeMap<String, Ipv4Addr> {
    let proto = ROUTE_PROTO.to_string();
    parse_routes(&ip_lines(netns, &["route", "show", "proto", &proto]))
}

fn agent_routes6_in(netns: &str) -> BTreeMap<String, Ipv6Addr> {
    let proto = ROUTE_PROTO.to_string();
    parse_routes6(&ip_lines(netns, &["-6", "route", "show", "proto", &proto]))
}

/// `CIDR → via` of `ip -6 route` lines that have a gateway (`/128` added where `ip` leaves it
/// out).
pub fn parse_routes6(lines: &[String]) -> BTreeMap<String, Ipv6Addr> {
    parse_routes_of(lines, 128)
}

/// `CIDR → via` of `ip route` lines that have a gateway (`/32` added where `ip` leaves it out).
pub fn parse_routes(lines: &[String]) -> BTreeMap<String, Ipv4Addr> {
    parse_routes_of(lines, 32)
}

fn parse_routes_of<A: FromStr>(lines: &[String], host_len: u8) -> BTreeMap<String, A> {
    lines
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let dst = words.next()?;
            let via = words
                .clone()
                .zip(words.skip(1))
                .find(|(k, _)| *k == "via")
                .and_then(|(_, v)| v.parse().ok())?;
            let dst = if dst.contains('/') {
                dst.to_owned()
            } else {
                format!("{dst}/{host_len}")
            };
            Some((dst, via))
        })
        .collect()
}

/// The id of the BPF link pinned at `path`.
fn pinned_link_id(path: &Path) -> Option<u32> {
    let link = FdLink::from(PinnedLink::from_pin(path).ok()?);
    // Dropping the link closes our descriptor only: the pin keeps the link.
    link.info().ok().map(|info| info.id())
}

/// Ids of the BPF links process `pid` holds open (`link_id:` of its descriptors' fdinfo).
fn held_link_ids(pid: u32) -> BTreeSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    fds.filter_map(Result::ok)
        .filter(|fd| {
            // `anon_inode:bpf_link` when created, `anon_inode:bpf-link` when opened from a pin.
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.as_os_str();
                target == "anon_inode:bpf_link" || target == "anon_inode:bpf-link"
            })
        })
        .filter_map(|fd| {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().display()))
                    .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("link_id:"))?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

fn xdp_prog_id_in(netns: &str) -> Option<u32> {
    let out = sh(Command::new("ip").args(["-n", netns, "-j", "link", "show", "dev", UPLINK]));
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("`ip -j link` prints JSON");
    links[0]["xdp"]["prog"]["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
}

/// Polls `check` every 20 ms until it returns `Some`, panicking with `what()` after `timeout`.
pub fn wait_for<T>(
    timeout: Duration,
    what: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {}",
            what()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of `field` on the `prefix:` lines of `/proc/net/snmp`.
pub fn parse_snmp(text: &str, prefix: &str, field: &str) -> Option<u64> {
    let tag = format!("{prefix}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&tag));
    let header = lines.next()?;
    let values = lines.next()?;
    let pos = header.split_whitespace().position(|h| h == field)?;
    values.split_whitespace().nth(pos)?.parse().ok()
}

/// The value of `field` in `/proc/net/snmp6` (one `name value` pair per line).
pub fn parse_snmp6(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next()? == field).then(|| words.next()?.parse().ok())?
    })
}

fn parse_ping(what: &str, out: &Output) -> PingStats {
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exit code 1 means "no reply", which the caller judges; 2 is an error.
    let line = stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .filter(|_| out.status.code().is_some_and(|c| c <= 1))
        .unwrap_or_else(|| {
            panic!(
                "{what} failed: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let number = |suffix: &str| -> u32 {
        line.split(", ")
            .find_map(|part| part.strip_suffix(suffix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what}: no `{suffix}` in {line:?}"))
    };
    PingStats {
        sent: number(" packets transmitted"),
        received: number(" received"),
    }
}

/// The hops of `traceroute -n -q 1` output; `None` for a `*`.
pub fn parse_traceroute<A: FromStr>(text: &str) -> Vec<Option<A>> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.parse::<u32>().ok()?;
            let hop = words.next()?;
            Some(hop.parse().ok())
        })
        .collect()
}

/// Long enough for `count` pings at `interval` and the last reply.
fn ping_budget(count: u32, interval: Duration) -> Duration {
    interval * count + Duration::from_secs(10)
}

/// Runs `cmd`, killing it and panicking if it runs longer than `timeout`.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ignored = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let stderr = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("polling a child") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ignored = child.kill();
            let _ignored = child.wait();
            panic!("{cmd:?} still running after {timeout:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---- TCP transfers ----

/// A deterministic pseudo-random byte stream (xorshift64*).
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A 64-bit hash of a byte stream that does not depend on how the stream is split up: FNV-1a
/// over little-endian 8-byte words, then the length.
#[derive(Debug)]
pub struct StreamHash {
    h: u64,
    carry: [u8; 8],
    carry_len: usize,
    len: u64,
}

impl Default for StreamHash {
    fn default() -> Self {
        Self {
            h: 0xcbf2_9ce4_8422_2325,
            carry: [0; 8],
            carry_len: 0,
            len: 0,
        }
    }
}

impl StreamHash {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn mix(&mut self, word: u64) {
        self.h = (self.h ^ word).wrapping_mul(Self::PRIME).rotate_left(23);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.carry_len > 0 {
            let take = (8 - self.carry_len).min(data.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&data[..take]);
            self.carry_len += take;
            data = &data[take..];
            if self.carry_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.carry));
            self.carry_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
    }

    /// `(length, hash)`.
    pub fn finish(mut self) -> (u64, u64) {
        if self.carry_len > 0 {
            self.carry[self.carry_len..].fill(0);
            self.mix(u64::from_le_bytes(self.carry));
        }
        let len = self.len;
        self.mix(len);
        (len, self.h)
    }
}

const TRANSFER_TIMEOUT: Duration = Duration::from_mins(1);
const SOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const CHUNK: usize = 256 * 1024;

/// The transfer of [`Lab::tcp_transfer`], between namespaces named `from.0` and `to.0`.
fn tcp_transfer(from: (&str, &str), to: (&str, &str, IpAddr), bytes: u64) -> Transfer {
    let (from_ns, from_label) = (from.0.to_owned(), from.1.to_owned());
    let (to_ns, to_label, to_ip) = (to.0.to_owned(), to.1.to_owned(), to.2);
    let what = format!("TCP transfer of {bytes} bytes from {from_label} to {to_label} ({to_ip})");

    let (port_tx, port_rx) = mpsc::channel::<u16>();
    let receiver = std::thread::spawn(move || -> Result<(u64, u64, Duration), String> {
        hostgw_agent::netns::enter(&to_ns).map_err(|e| format!("entering {to_ns}: {e}"))?;
        let listener =
            TcpListener::bind((to_ip, 0)).map_err(|e| format!("binding {to_ip}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let _ignored = port_tx.send(port);
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("non-blocking listener: {e}"))?;
        let start = Instant::now();
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > SOCKET_IDLE_TIMEOUT {
                        return Err(format!("no connection within {SOCKET_IDLE_TIMEOUT:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        let accepted = Instant::now();
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(SOCKET_IDLE_TIMEOUT)))
            .map_err(|e| format!("socket options: {e}"))?;
        let mut hash = StreamHash::default();
        let mut buf = vec![0; CHUNK];
        loop {
            let n = stream
                .read(&mut buf)
                .map_err(|e| format!("read after {} bytes: {e}", hash.len))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            if accepted.elapsed() > TRANSFER_TIMEOUT {
                return Err(format!("still receiving after {TRANSFER_TIMEOUT:?}"));
            }
        }
        let elapsed = accepted.elapsed();
        let (len, h) = hash.finish();
        Ok((len, h, elapsed))
    });

    let Ok(port) = port_rx.recv_timeout(Duration::from_secs(10)) else {
        let result = receiver.join();
        panic!("{what}: the receiver did not start listening: {result:?}");
    };

    let sender = std::thread::spawn(move || -> Result<(u64, u64), String> {
        hostgw_agent::netns::enter(&from_ns).map_err(|e| format!("entering {from_ns}: {e}"))?;
        let addr = SocketAddr::from((to_ip, port));
        let mut stream = TcpStream::connect_timeout(&addr, SOCKET_IDLE_TIMEOUT)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_write_timeout(Some(SOCKET_IDLE_TIMEOUT))
            .map_err(|e| format!("socket options: {e}"))?;
        let start = Instant::now();
        let mut source = Stream(0x9e37_79b9_7f4a_7c15);
        let mut hash = StreamHash::default();
        let mut buf = vec![0; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left.min(CHUNK as u64)).expect("chunk fits usize");
            source.fill(&mut buf[..n]);
            stream
                .write_all(&buf[..n])
                .map_err(|e| format!("write after {} bytes: {e}", bytes - left))?;
            hash.update(&buf[..n]);
            left -= n as u64;
            if start.elapsed() > TRANSFER_TIMEOUT {
                return Err(format!("still sending after {TRANSFER_TIMEOUT:?}"));
            }
        }
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        // Wait for the receiver to close, so the data is known to have left.
        let _ignored = stream.set_read_timeout(Some(SOCKET_IDLE_TIMEOUT));
        let _ignored = stream.read(&mut buf);
        Ok(hash.finish())
    });

    let sent = sender
        .join()
        .unwrap_or_else(|_| panic!("{what}: the sender panicked"));
    let received = receiver
        .join()
        .unwrap_or_else(|_| panic!("{what}: the receiver panicked"));
    let (sent_len, sent_hash) = sent.unwrap_or_else(|e| panic!("{what}: sender: {e}"));
    let (recv_len, recv_hash, elapsed) =
        received.unwrap_or_else(|e| panic!("{what}: receiver: {e}"));
    assert_eq!(sent_len, bytes, "{what}: the sender sent {sent_len} bytes");
    assert_eq!(
        recv_len, sent_len,
        "{what}: {recv_len} bytes arrived of {sent_len}"
    );
    assert_eq!(
        recv_hash, sent_hash,
        "{what}: the data arrived corrupted (hash {recv_hash:#x}, sent {sent_hash:#x})"
    );
    Transfer {
        bytes: recv_len,
        elapsed,
    }
}

// ---- kept labs ----

/// What [`teardown_kept`] found and removed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub agents: Vec<u32>,
    pub namespaces: Vec<String>,
    pub paths: Vec<PathBuf>,
}

/// Whether `name` is `<prefix><digits>-<lab>-<suffix>`, with `suffix` one of the lab's kinds
/// (`sw`, `n<i>`, `n<i>p<j>`).
fn is_lab_object(name: &str, prefix: &str, lab: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let Some((pid, rest)) = rest.split_once('-') else {
        return false;
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(suffix) = rest.strip_prefix(lab).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    if suffix == "sw" {
        return true;
    }
    let Some(node) = suffix.strip_prefix('n') else {
        return false;
    };
    let (node, pod) = node
        .split_once('p')
        .map_or((node, None), |(n, p)| (n, Some(p)));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(node) && pod.is_none_or(digits)
}

/// Removes a lab left up with [`Lab::keep`] by another process: stops its agents (SIGTERM,
/// then SIGKILL), deletes its namespaces, pin directories and scratch directory. Matches only
/// names of the lab's exact pattern.
pub fn teardown_kept(lab: &str) -> Teardown {
    let mut done = Teardown::default();
    let namespaces: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| is_lab_object(n, "hgw-", lab))
                .collect()
        })
        .unwrap_or_default();

    // Agents: hostgw-agent processes whose --netns is one of the lab's namespaces.
    let mut pids = Vec::new();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.filter_map(Result::ok) {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_agent = args.first().is_some_and(|a| a.ends_with("hostgw-agent"));
            let in_lab = args
                .windows(2)
                .any(|w| w[0] == "--netns" && namespaces.contains(&w[1]));
            if is_agent && in_lab {
                pids.push(pid);
            }
        }
    }
    for &pid in &pids {
        if let Ok(p) = i32::try_from(pid) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(p, libc::SIGTERM) };
        }
    }
    let start = Instant::now();
    while start.elapsed() < TERM_GRACE
        && pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in &pids {
        if Path::new(&format!("/proc/{pid}")).exists()
            && let Ok(p) = i32::try_from(pid)
        {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
    done.agents = pids;

    for ns in namespaces {
        let ok = Command::new("ip")
            .args(["netns", "del", &ns])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            done.namespaces.push(ns);
        } else {
            eprintln!("warning: could not delete netns {ns}");
        }
    }

    let dirs = [
        (PathBuf::from("/sys/fs/bpf"), "hostgw-test-"),
        (std::env::temp_dir(), "hostgw-lab-"),
    ];
    for (parent, prefix) in dirs {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            // The scratch directory is `hostgw-lab-<pid>-<lab>`: give it a node-like suffix
            // to reuse the pattern.
            let matches = if prefix == "hostgw-lab-" {
                is_lab_object(&format!("{name}-sw"), prefix, lab)
            } else {
                is_lab_object(&name, prefix, lab)
            };
            if matches {
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => done.paths.push(e.path()),
                    Err(err) => {
                        eprintln!("warning: could not remove {}: {err}", e.path().display());
                    }
                }
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_list_is_kubectl_shaped() {
        let y = node_list_yaml(&[NodeEntry::of(1)]);
        assert_eq!(
            y,
            "apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: n1\n  \
             spec:\n    podCIDR: 10.1.1.0/24\n    podCIDRs:\n    - 10.1.1.0/24\n    - \
             fd00:10:1:1::/64\n  status:\n    addresses:\n    - address: 172.20.11.11\n      \
             type: InternalIP\n    - address: fd00:20:11::b\n      type: InternalIP\n    - \
             address: n1\n      type: Hostname\nkind: List\nmetadata:\n  resourceVersion: \"\"\n"
        );
        let y = node_list_yaml(&[NodeEntry::of_v4(1)]);
        assert_eq!(
            y,
            "apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: n1\n  \
             spec:\n    podCIDR: 10.1.1.0/24\n    podCIDRs:\n    - 10.1.1.0/24\n  status:\n    \
             addresses:\n    - address: 172.20.11.11\n      type: InternalIP\n    - address: \
             n1\n      type: Hostname\nkind: List\nmetadata:\n  resourceVersion: \"\"\n"
        );
    }

    #[test]
    fn entries_parse_only_when_well_formed() {
        assert_eq!(
            NodeEntry::of(2).parsed(),
            Some((
                Ipv4Addr::new(10, 1, 2, 0),
                24,
                Ipv4Addr::new(172, 20, 11, 12)
            ))
        );
        for (cidr, ip) in [
            ("10.1.3.0/33", Some("172.20.11.13")),
            ("10.1.3.1/24", Some("172.20.11.13")),
            ("10.1.300.0/24", Some("172.20.11.13")),
            ("10.1.3.0", Some("172.20.11.13")),
            ("10.1.3.0/24", None),
            ("10.1.3.0/24", Some("n3")),
        ] {
            let e = NodeEntry {
                name: "n3".into(),
                pod_cidr: cidr.into(),
                internal_ip: ip.map(Into::into),
                pod_cidr_v6: None,
                internal_ip_v6: None,
            };
            assert_eq!(e.parsed(), None, "{e:?} parsed");
        }
        assert_eq!(
            NodeEntry::of(2).parsed_v6(),
            Some((
                "fd00:10:1:2::".parse().unwrap(),
                64,
                "fd00:20:11::c".parse().unwrap()
            ))
        );
        assert_eq!(NodeEntry::of_v4(2).parsed_v6(), None);
        let v6_only = NodeEntry {
            pod_cidr: "fd00:10:1:2::/64".into(),
            internal_ip: Some("fd00:20:11::c".into()),
            ..NodeEntry::of_v4(2)
        };
        assert_eq!(v6_only.parsed(), None);
        assert_eq!(v6_only.parsed_v6(), NodeEntry::of(2).parsed_v6());
        for (cidr, ip) in [
            ("fd00:10:1:3::1/64", Some("fd00:20:11::d")),
            ("fd00:10:1:3::/129", Some("fd00:20:11::d")),
            ("10.1.3.0/24", Some("fd00:20:11::d")),
            ("fd00:10:1:3::/64", None),
            ("fd00:10:1:3::/64", Some("n3")),
        ] {
            let e = NodeEntry {
                pod_cidr_v6: Some(cidr.into()),
                internal_ip_v6: ip.map(Into::into),
                ..NodeEntry::of(3)
            };
            assert_eq!(e.parsed_v6(), None, "{e:?} parsed");
        }
    }

    #[test]
    fn addressing_is_deterministic() {
        assert_eq!(mac_string(uplink_mac(3)), "02:00:ac:14:0b:0d");
        assert_eq!(uplink_ip(3), Ipv4Addr::new(172, 20, 11, 13));
        assert_eq!(pod_ip(3, 2), Ipv4Addr::new(10, 1, 3, 3));
        assert_eq!(mac_string(bridge_mac(3)), "02:00:0a:01:03:01");
        assert_eq!(uplink_ip6(3).to_string(), "fd00:20:11::d");
        assert_eq!(pod_network6(3).to_string(), "fd00:10:1:3::");
        assert_eq!(gateway6(3).to_string(), "fd00:10:1:3::1");
        assert_eq!(pod_ip6(3, 2).to_string(), "fd00:10:1:3::3");
    }

    #[test]
    fn parses_tool_output() {
        let trace = "traceroute to 10.1.2.2 (10.1.2.2), 8 hops max, 60 byte packets\n \
                     1  10.1.1.1  0.050 ms\n 2  *\n 3  10.1.2.2  0.040 ms\n";
        assert_eq!(
            parse_traceroute(trace),
            vec![
                Some(Ipv4Addr::new(10, 1, 1, 1)),
                None,
                Some(Ipv4Addr::new(10, 1, 2, 2))
            ]
        );
        let snmp = "Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams\n\
                    Ip: 1 64 10 0 0 42\nIcmp: InMsgs\nIcmp: 3\n";
        assert_eq!(parse_snmp(snmp, "Ip", "ForwDatagrams"), Some(42));
        assert_eq!(parse_snmp(snmp, "Ip", "Nope"), None);
        let snmp6 = "Ip6InReceives                   \t12\nIp6OutForwDatagrams             \t7\n\
                     Ip6InDelivers                   \t5\n";
        assert_eq!(parse_snmp6(snmp6, "Ip6OutForwDatagrams"), Some(7));
        assert_eq!(parse_snmp6(snmp6, "Ip6Nope"), None);
        let trace6 = "traceroute to fd00:10:1:2::2 (fd00:10:1:2::2), 8 hops max, 80 byte \
                      packets\n 1  fd00:10:1:1::1  0.05 ms\n 2  *\n";
        assert_eq!(
            parse_traceroute::<Ipv6Addr>(trace6),
            vec![Some("fd00:10:1:1::1".parse().unwrap()), None]
        );
        let routes6 = vec![
            "fd00:10:1:2::/64 via fd00:20:11::c dev eth0 proto 203 metric 1024 pref medium"
                .to_owned(),
            "fd00:10:1:1::/64 dev cni0 proto kernel metric 256 pref medium".to_owned(),
        ];
        assert_eq!(
            parse_routes6(&routes6),
            BTreeMap::from([(
                "fd00:10:1:2::/64".to_owned(),
                "fd00:20:11::c".parse().unwrap()
            )])
        );
        let routes = vec![
            "10.1.2.0/24 via 172.20.11.12 dev eth0 proto 203".to_owned(),
            "10.1.1.0/24 dev cni0 proto kernel scope link src 10.1.1.1".to_owned(),
            "10.9.9.9 via 172.20.11.13 dev eth0".to_owned(),
        ];
        let parsed = parse_routes(&routes);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(parsed["10.1.2.0/24"], Ipv4Addr::new(172, 20, 11, 12));
        assert_eq!(parsed["10.9.9.9/32"], Ipv4Addr::new(172, 20, 11, 13));
        let ping = Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(0),
            stdout: b"--- 10.1.2.2 ping statistics ---\n5 packets transmitted, 4 received, \
                      20% packet loss, time 4005ms\nrtt min/avg/max/mdev = 0.1/0.1/0.1/0.0 ms\n"
                .to_vec(),
            stderr: Vec::new(),
        };
        assert_eq!(
            parse_ping("ping", &ping),
            PingStats {
                sent: 5,
                received: 4
            }
        );
        assert_eq!(strip_ansi("\u{1b}[33m WARN\u{1b}[0m n3"), " WARN n3");
    }

    #[test]
    fn stream_hash_ignores_how_the_stream_is_split() {
        let mut data = vec![0; 1000];
        Stream(1).fill(&mut data);
        let mut whole = StreamHash::default();
        whole.update(&data);
        let mut parts = StreamHash::default();
        for piece in data.chunks(7) {
            parts.update(piece);
        }
        assert_eq!(whole.finish(), parts.finish());
        let mut changed = data.clone();
        changed[500] ^= 1;
        let mut other = StreamHash::default();
        other.update(&changed);
        let mut again = StreamHash::default();
        again.update(&data);
        assert_ne!(other.finish(), again.finish());
    }

    #[test]
    fn kept_lab_objects_match_exactly() {
        assert!(is_lab_object("hgw-123-demo-sw", "hgw-", "demo"));
        assert!(is_lab_object("hgw-123-demo-n1", "hgw-", "demo"));
        assert!(is_lab_object("hgw-123-demo-n12p3", "hgw-", "demo"));
        assert!(is_lab_object(
            "hostgw-test-9-demo-n2",
            "hostgw-test-",
            "demo"
        ));
        assert!(!is_lab_object("hgw-123-demo2-n1", "hgw-", "demo"));
        assert!(!is_lab_object("hgw-123-x-demo-n1", "hgw-", "demo"));
        assert!(!is_lab_object("hgw-123-demo-n1x", "hgw-", "demo"));
        assert!(!is_lab_object("hgw-abc-demo-n1", "hgw-", "demo"));
        assert!(!is_lab_object("hgw-123-demo-attach", "hgw-", "demo"));
    }
}
