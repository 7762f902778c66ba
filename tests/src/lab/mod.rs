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
//!
//! Layout, one module per concern: `addressing` (names, addresses, the nodes file's entries),
//! `topology` (nodes, pods and building them), `agents` (the nodes file, the agent processes
//! and the routes and links they install), `counters` (the programs' and the kernel's
//! counters, the route tries), `traffic` (pings, traceroutes, TCP transfers), `process`
//! (waiting with a deadline) and `teardown` (removing a kept lab). This module holds the
//! [`Lab`] itself: its shape, start-up, accessors and teardown on drop.

mod addressing;
mod agents;
mod counters;
mod process;
mod teardown;
mod topology;
mod traffic;

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

pub use addressing::{
    NodeEntry, bridge_mac, gateway, gateway6, mac_string, node_list_yaml, node_name, pod_ip,
    pod_ip6, pod_mac, pod_network, pod_network6, uplink_ip, uplink_ip6, uplink_mac,
};
pub use agents::{LogEvent, agent_routes_in, log_events, parse_routes, parse_routes6};
pub use counters::{Counters, FAST_REASONS, TrieEntry, parse_snmp, parse_snmp6};
pub use process::{output_within, wait_for};
pub use teardown::{Teardown, teardown_kept};
pub use topology::{Node, Pod};
pub use traffic::{PingJob, PingStats, StreamHash, Transfer, parse_traceroute};

use crate::{Agent, Netns};

/// The route protocol number the agent tags its kernel routes with (`ip route show proto
/// 203`).
pub const ROUTE_PROTO: u8 = 203;
/// Every node's uplink, on the switch.
pub const UPLINK: &str = "eth0";
/// Every node's pod bridge.
pub const BRIDGE: &str = "cni0";
/// The bridge in the switch namespace.
pub const SWITCH_BRIDGE: &str = "sw0";

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
    /// Arguments added to every agent's `hostgw-agent run` (e.g. `--tc-attach clsact`), at
    /// start and on every restart.
    pub agent_args: Vec<String>,
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
            agent_args: Vec::new(),
        }
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

/// The lab. See the module docs.
#[derive(Debug)]
pub struct Lab {
    name: String,
    mode: Mode,
    ipv6: bool,
    pods_per_node: usize,
    /// [`Spec::agent_args`].
    agent_extra: Vec<String>,
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
            agent_extra: spec.agent_args.clone(),
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
