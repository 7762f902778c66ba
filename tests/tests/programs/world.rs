//! The world the programs run in: a throwaway network namespace holding one node's uplink,
//! bridge and pod port, its addresses and the kernel routes the FIB rows need, and the map
//! content (routes, endpoints) the programs are loaded with. The addresses and MACs the rows
//! use are named here. Nothing here runs a program.

use std::net::Ipv6Addr;

use hostgw_common::{Config, Endpoint, ROUTE_F_RESOLVED, RouteV4, RouteV6};
use hostgw_tests::{Netns, require_root, sh};

pub(crate) const BRIDGE_MAC: [u8; 6] = [0x02, 0, 0, 0x79, 0, 0x01];
pub(crate) const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0x11, 0, 0x43];
pub(crate) const POD_MAC: [u8; 6] = [0x02, 0, 0, 0x79, 0, 0x03];
pub(crate) const OTHER_POD_MAC: [u8; 6] = [0x02, 0, 0, 0x79, 0, 0x08];
pub(crate) const NODE42_MAC: [u8; 6] = [0x02, 0, 0, 0x11, 0, 0x42];
pub(crate) const NODE45_MAC: [u8; 6] = [0x02, 0, 0, 0x11, 0, 0x45];
pub(crate) const NODE50_MAC: [u8; 6] = [0x02, 0, 0, 0x11, 0, 0x50];

/// This node's pod, known to the endpoint table.
pub(crate) const POD: [u8; 4] = [10, 1, 79, 3];
/// The bridge's (gateway) address: the node's own.
pub(crate) const GATEWAY: [u8; 4] = [10, 1, 79, 1];
/// A pod of node .42 (route 10.1.27.0/24, resolved).
pub(crate) const REMOTE: [u8; 4] = [10, 1, 27, 4];
/// A pod of node .44 (route 10.1.28.0/24, MAC not resolved).
pub(crate) const UNRESOLVED: [u8; 4] = [10, 1, 28, 4];
/// A pod of node .45 (route 10.1.29.0/24 with MTU 1000).
pub(crate) const SMALL_MTU: [u8; 4] = [10, 1, 29, 4];
/// Only the kernel has a route: 10.1.50.0/24 via .50, neighbour known.
pub(crate) const FIB_ONLY: [u8; 4] = [10, 1, 50, 7];
/// Only the kernel has a route: 10.1.60.0/24 via .60, neighbour unknown.
pub(crate) const FIB_NO_NEIGH: [u8; 4] = [10, 1, 60, 7];
/// The kernel has an unreachable route for 10.1.70.0/24.
pub(crate) const FIB_UNREACHABLE: [u8; 4] = [10, 1, 70, 7];

/// The IPv6 siblings: this node's pod CIDR is `fd00:10:1:79::/64`, the uplink's network
/// `fd00:172:20:11::/64`, and remote pod CIDRs `fd00:10:1:NN::/64` as for IPv4.
pub(crate) const fn v6(net: u16, host: u16) -> [u8; 16] {
    Ipv6Addr::new(0xfd00, 0x10, 1, net, 0, 0, 0, host).octets()
}
pub(crate) const fn node6(node: u16) -> [u8; 16] {
    Ipv6Addr::new(0xfd00, 0x172, 0x20, 0x11, 0, 0, 0, node).octets()
}
/// This node's pod, known to the endpoint table.
pub(crate) const POD6: [u8; 16] = v6(0x79, 3);
/// Another pod of this node.
pub(crate) const OTHER_POD6: [u8; 16] = v6(0x79, 8);
/// The bridge's (gateway) address.
pub(crate) const GATEWAY6: [u8; 16] = v6(0x79, 1);
/// A pod of node `::42` (route resolved).
pub(crate) const REMOTE6: [u8; 16] = v6(0x27, 4);
/// A pod of node `::44` (route with its MAC not resolved).
pub(crate) const UNRESOLVED6: [u8; 16] = v6(0x28, 4);
/// A pod of node `::45` (route with MTU 1000).
pub(crate) const SMALL_MTU6: [u8; 16] = v6(0x29, 4);
/// Only the kernel has a route: via `::50`, neighbour known.
pub(crate) const FIB_ONLY6: [u8; 16] = v6(0x50, 7);
/// Only the kernel has a route: via `::60`, neighbour unknown.
pub(crate) const FIB_NO_NEIGH6: [u8; 16] = v6(0x60, 7);
/// The kernel has an unreachable route for `fd00:10:1:70::/64`.
pub(crate) const FIB_UNREACHABLE6: [u8; 16] = v6(0x70, 7);
/// In no pod CIDR at all.
pub(crate) const STRANGER6: [u8; 16] = Ipv6Addr::new(0xfd00, 0x10, 9, 9, 0, 0, 0, 9).octets();
pub(crate) const LINK_LOCAL6: [u8; 16] = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3).octets();
pub(crate) const ALL_NODES6: [u8; 16] = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();

/// The interfaces of the test namespace.
pub(crate) struct World {
    pub(crate) ns: Netns,
    pub(crate) uplink: u32,
    pub(crate) bridge: u32,
    pub(crate) port: u32,
}

impl World {
    /// One node: uplink `up0` (172.20.11.43/24), bridge `cni0` (10.1.79.1/24) with port
    /// `veth-pod0`, kernel routes for the FIB rows, forwarding on.
    pub(crate) fn new(name: &str) -> Self {
        let ns = Netns::new(name);
        // IPv6 only where the rows need it (the uplink, the bridge, loopback): the uplink's
        // peer and the pod sending router and multicast listener messages into the attached
        // XDP program would add to the counters the rows check exactly.
        sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1");
        sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", "1");
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        ns.ip(&[
            "link",
            "add",
            "up0",
            "address",
            &mac(UPLINK_MAC),
            "type",
            "veth",
            "peer",
            "name",
            "up0-sw",
        ]);
        ns.ip(&[
            "link",
            "add",
            "cni0",
            "address",
            &mac(BRIDGE_MAC),
            "type",
            "bridge",
        ]);
        ns.ip(&[
            "link",
            "add",
            "veth-pod0",
            "type",
            "veth",
            "peer",
            "name",
            "pod0",
            "address",
            &mac(POD_MAC),
        ]);
        ns.ip(&["link", "set", "veth-pod0", "master", "cni0"]);
        for dev in ["up0", "up0-sw", "cni0", "veth-pod0", "pod0"] {
            ns.ip(&["link", "set", dev, "up"]);
        }
        ns.ip(&["addr", "add", "172.20.11.43/24", "dev", "up0"]);
        ns.ip(&["addr", "add", "10.1.79.1/24", "dev", "cni0"]);
        ns.ip(&[
            "route",
            "add",
            "10.1.50.0/24",
            "via",
            "172.20.11.50",
            "dev",
            "up0",
        ]);
        ns.ip(&[
            "neigh",
            "replace",
            "172.20.11.50",
            "lladdr",
            &mac(NODE50_MAC),
            "dev",
            "up0",
            "nud",
            "permanent",
        ]);
        ns.ip(&[
            "route",
            "add",
            "10.1.60.0/24",
            "via",
            "172.20.11.60",
            "dev",
            "up0",
        ]);
        ns.ip(&["route", "add", "unreachable", "10.1.70.0/24"]);
        sysctl(&ns, "net.ipv4.conf.all.forwarding", "1");
        for dev in ["lo", "up0", "cni0"] {
            sysctl(&ns, &format!("net.ipv6.conf.{dev}.disable_ipv6"), "0");
        }
        // nodad: usable at once, no duplicate address detection traffic.
        ns.ip(&[
            "-6",
            "addr",
            "add",
            "fd00:172:20:11::43/64",
            "dev",
            "up0",
            "nodad",
        ]);
        ns.ip(&[
            "-6",
            "addr",
            "add",
            "fd00:10:1:79::1/64",
            "dev",
            "cni0",
            "nodad",
        ]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "fd00:10:1:50::/64",
            "via",
            "fd00:172:20:11::50",
            "dev",
            "up0",
        ]);
        ns.ip(&[
            "-6",
            "neigh",
            "replace",
            "fd00:172:20:11::50",
            "lladdr",
            &mac(NODE50_MAC),
            "dev",
            "up0",
            "nud",
            "permanent",
        ]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "fd00:10:1:60::/64",
            "via",
            "fd00:172:20:11::60",
            "dev",
            "up0",
        ]);
        ns.ip(&["-6", "route", "add", "unreachable", "fd00:10:1:70::/64"]);
        sysctl(&ns, "net.ipv6.conf.all.forwarding", "1");
        let index = |dev: &str| -> u32 {
            let out = ns.ip(&["-j", "link", "show", "dev", dev]);
            let v: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
            v[0]["ifindex"].as_u64().expect("ifindex") as u32
        };
        let (uplink, bridge, port) = (index("up0"), index("cni0"), index("veth-pod0"));
        Self {
            ns,
            uplink,
            bridge,
            port,
        }
    }

    pub(crate) fn config(&self, flags: u32) -> Config {
        let kernel = kernel();
        Config {
            flags,
            uplink_ifindex: self.uplink,
            bridge_ifindex: self.bridge,
            ct_status_off: kernel
                .ct_status_off
                .expect("nf_conn.status in the kernel's BTF"),
            ct_opts_size: kernel
                .ct_opts_size
                .expect("bpf_ct_opts in the kernel's BTF"),
            ct_timeout_off: kernel
                .ct_timeout_off
                .expect("nf_conn.timeout in the kernel's BTF"),
            ct_tcp_state_off: kernel
                .ct_tcp_state_off
                .expect("nf_conn.proto.tcp.state in the kernel's BTF"),
            pad: 0,
        }
    }

    pub(crate) fn route(&self, node: u8, mac: [u8; 6], mtu: u32, flags: u32) -> RouteV4 {
        RouteV4 {
            node_ip: [172, 20, 11, node],
            ifindex: self.uplink,
            mtu,
            flags,
            node_mac: mac,
            uplink_mac: UPLINK_MAC,
        }
    }

    /// The route trie's content: `(prefix, length, route)`.
    pub(crate) fn routes(&self) -> Vec<([u8; 4], u32, RouteV4)> {
        vec![
            (
                [10, 1, 27, 0],
                24,
                self.route(42, NODE42_MAC, 1500, ROUTE_F_RESOLVED),
            ),
            ([10, 1, 28, 0], 24, self.route(44, [0; 6], 1500, 0)),
            (
                [10, 1, 29, 0],
                24,
                self.route(45, NODE45_MAC, 1000, ROUTE_F_RESOLVED),
            ),
        ]
    }

    pub(crate) fn endpoints(&self) -> Vec<([u8; 4], Endpoint)> {
        let ep = |mac| Endpoint {
            ifindex: self.port,
            mac,
            pad: [0; 2],
        };
        vec![(POD, ep(POD_MAC)), ([10, 1, 79, 8], ep(OTHER_POD_MAC))]
    }

    pub(crate) fn route6(&self, node: u16, mac: [u8; 6], mtu: u32, flags: u32) -> RouteV6 {
        RouteV6 {
            node_ip: node6(node),
            ifindex: self.uplink,
            mtu,
            flags,
            node_mac: mac,
            uplink_mac: UPLINK_MAC,
        }
    }

    /// The IPv6 route trie's content: `(prefix, length, route)`.
    pub(crate) fn routes6(&self) -> Vec<([u8; 16], u32, RouteV6)> {
        vec![
            (
                v6(0x27, 0),
                64,
                self.route6(0x42, NODE42_MAC, 1500, ROUTE_F_RESOLVED),
            ),
            (v6(0x28, 0), 64, self.route6(0x44, [0; 6], 1500, 0)),
            (
                v6(0x29, 0),
                64,
                self.route6(0x45, NODE45_MAC, 1000, ROUTE_F_RESOLVED),
            ),
        ]
    }

    pub(crate) fn endpoints6(&self) -> Vec<([u8; 16], Endpoint)> {
        let ep = |mac| Endpoint {
            ifindex: self.port,
            mac,
            pad: [0; 2],
        };
        vec![(POD6, ep(POD_MAC)), (OTHER_POD6, ep(OTHER_POD_MAC))]
    }

    pub(crate) fn lpm6(&self, addr: [u8; 16]) -> Option<RouteV6> {
        self.routes6()
            .into_iter()
            .filter(|(p, len, _)| {
                let mask = u128::MAX << (128 - len);
                u128::from_be_bytes(*p) & mask == u128::from_be_bytes(addr) & mask
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, r)| r)
    }

    pub(crate) fn endpoint6(&self, addr: [u8; 16]) -> Option<Endpoint> {
        self.endpoints6()
            .into_iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, e)| e)
    }

    pub(crate) fn lpm(&self, addr: [u8; 4]) -> Option<RouteV4> {
        self.routes()
            .into_iter()
            .filter(|(p, len, _)| {
                let mask = u32::MAX << (32 - len);
                u32::from_be_bytes(*p) & mask == u32::from_be_bytes(addr) & mask
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, r)| r)
    }

    pub(crate) fn endpoint(&self, addr: [u8; 4]) -> Option<Endpoint> {
        self.endpoints()
            .into_iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, e)| e)
    }
}

/// What the running kernel offers the conntrack gate.
pub(crate) fn kernel() -> hostgw_agent::kfunc::Kernel {
    hostgw_agent::kfunc::read_kernel(std::path::Path::new(hostgw_agent::kfunc::VMLINUX_BTF))
        .expect("the kernel's BTF")
}

pub(crate) fn sysctl(ns: &Netns, key: &str, value: &str) {
    sh(ns
        .command("sysctl")
        .args(["-qw", &format!("{key}={value}")]));
}

/// Builds a [`World`] and runs `f` on it from a thread inside its namespace (test runs, FIB and
/// MTU lookups use the caller's network namespace). The world, and with it the namespace, is
/// dropped on that thread, also when `f` panics; the panic is passed on.
pub(crate) fn inside(name: &str, f: impl FnOnce(&World) + Send + 'static) {
    require_root();
    let world = World::new(name);
    std::thread::spawn(move || {
        hostgw_agent::netns::enter(world.ns.name()).expect("entering the test namespace");
        f(&world);
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}
