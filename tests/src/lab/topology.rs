//! Topology: the lab's nodes and pods (their namespaces, interfaces, addresses and sysctls)
//! and building them at start-up. Starting agents is `agents`' business; tearing down is the
//! guards' (`Netns`, `PinDir`) and `Lab`'s `Drop`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use hostgw_common::names;

use super::{
    BRIDGE, Family, Lab, Mode, NodeEntry, SWITCH_BRIDGE, Spec, UPLINK, bridge_mac,
    check_interrupted, gateway, gateway6, mac_string, node_name, pod_ip, pod_ip6, pod_mac,
    pod_network, pod_network6, uplink_ip, uplink_ip6, uplink_mac,
};
use crate::{Agent, Netns, PinDir, sh};

/// A node of the lab.
#[derive(Debug)]
pub struct Node {
    pub(super) index: usize,
    /// Declared before the namespace: the agent goes first.
    pub(super) agent: Option<Agent>,
    pub(super) netns: Netns,
    pub(super) pins: PinDir,
    pub(super) uplink_mac: [u8; 6],
    pub(super) log: PathBuf,
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
    pub(super) node: usize,
    pub(super) index: usize,
    pub(super) netns: Netns,
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

impl Lab {
    /// Builds the switch, the nodes and their pods, then routes (kernel-only) or starts the
    /// agents (fast path).
    pub(super) fn build(&mut self, spec: &Spec) {
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

    // ---- changing nodes ----

    /// Sets node `i`'s uplink MAC. The lab's nodes have `arp_notify` on, so the node announces
    /// the new address with a gratuitous ARP, as hosts do when their address moves.
    pub fn set_uplink_mac(&mut self, i: usize, mac: [u8; 6]) {
        let node = self.node_mut(i);
        node.netns
            .ip(&["link", "set", UPLINK, "address", &mac_string(mac)]);
        node.uplink_mac = mac;
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
