//! Program tests: the embedded programs run with `BPF_PROG_TEST_RUN` on crafted frames, inside
//! a throwaway network namespace that holds the interfaces, addresses and kernel routes the
//! programs consult (ifindexes, MTUs, the FIB).
//!
//! Each row of the decision table is a frame and the verdict it must get. A row asserts the
//! program's return code, the output bytes (unchanged for a pass; for an IPv4 forward the MACs,
//! TTL − 1, an IPv4 checksum recomputed from scratch and every other byte unchanged; for an
//! IPv6 forward the MACs, hop limit − 1 and every other byte unchanged) and that exactly the
//! expected counter, of the frame's family, moved. IPv4 and IPv6 each have their table. A
//! randomized run then checks 200,000 mutated frames of both families against a model of the
//! same tables.

use std::{collections::HashMap, net::Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::{SchedClassifier, TestRun as _, TestRunOptions, Xdp, XdpMode},
};
use hostgw_common::{
    CONFIG_F_FIB_FALLBACK, CONFIG_F_XDP_TX, Config, Counter, Endpoint, ROUTE_F_RESOLVED, RouteV4,
    RouteV6, STATE_F_CT_GATE, STATE_F_FORWARD_V4, STATE_F_FORWARD_V6, State,
    counters::{self, family, hook, reason},
    names,
};
use hostgw_tests::{
    Netns,
    frame::{ETH_LEN, IP, IPV6_LEN, Ipv4Frame, Ipv6Frame, fix_checksum, ipv4_checksum},
    require_root, sh,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const BRIDGE_MAC: [u8; 6] = [0x02, 0, 0, 0x79, 0, 0x01];
const UPLINK_MAC: [u8; 6] = [0x02, 0, 0, 0x11, 0, 0x43];
const POD_MAC: [u8; 6] = [0x02, 0, 0, 0x79, 0, 0x03];
const OTHER_POD_MAC: [u8; 6] = [0x02, 0, 0, 0x79, 0, 0x08];
const NODE42_MAC: [u8; 6] = [0x02, 0, 0, 0x11, 0, 0x42];
const NODE45_MAC: [u8; 6] = [0x02, 0, 0, 0x11, 0, 0x45];
const NODE50_MAC: [u8; 6] = [0x02, 0, 0, 0x11, 0, 0x50];

/// This node's pod, known to the endpoint table.
const POD: [u8; 4] = [10, 1, 79, 3];
/// The bridge's (gateway) address: the node's own.
const GATEWAY: [u8; 4] = [10, 1, 79, 1];
/// A pod of node .42 (route 10.1.27.0/24, resolved).
const REMOTE: [u8; 4] = [10, 1, 27, 4];
/// A pod of node .44 (route 10.1.28.0/24, MAC not resolved).
const UNRESOLVED: [u8; 4] = [10, 1, 28, 4];
/// A pod of node .45 (route 10.1.29.0/24 with MTU 1000).
const SMALL_MTU: [u8; 4] = [10, 1, 29, 4];
/// Only the kernel has a route: 10.1.50.0/24 via .50, neighbour known.
const FIB_ONLY: [u8; 4] = [10, 1, 50, 7];
/// Only the kernel has a route: 10.1.60.0/24 via .60, neighbour unknown.
const FIB_NO_NEIGH: [u8; 4] = [10, 1, 60, 7];
/// The kernel has an unreachable route for 10.1.70.0/24.
const FIB_UNREACHABLE: [u8; 4] = [10, 1, 70, 7];

/// The IPv6 siblings: this node's pod CIDR is `fd00:10:1:79::/64`, the uplink's network
/// `fd00:172:20:11::/64`, and remote pod CIDRs `fd00:10:1:NN::/64` as for IPv4.
const fn v6(net: u16, host: u16) -> [u8; 16] {
    Ipv6Addr::new(0xfd00, 0x10, 1, net, 0, 0, 0, host).octets()
}
const fn node6(node: u16) -> [u8; 16] {
    Ipv6Addr::new(0xfd00, 0x172, 0x20, 0x11, 0, 0, 0, node).octets()
}
/// This node's pod, known to the endpoint table.
const POD6: [u8; 16] = v6(0x79, 3);
/// Another pod of this node.
const OTHER_POD6: [u8; 16] = v6(0x79, 8);
/// The bridge's (gateway) address.
const GATEWAY6: [u8; 16] = v6(0x79, 1);
/// A pod of node `::42` (route resolved).
const REMOTE6: [u8; 16] = v6(0x27, 4);
/// A pod of node `::44` (route with its MAC not resolved).
const UNRESOLVED6: [u8; 16] = v6(0x28, 4);
/// A pod of node `::45` (route with MTU 1000).
const SMALL_MTU6: [u8; 16] = v6(0x29, 4);
/// Only the kernel has a route: via `::50`, neighbour known.
const FIB_ONLY6: [u8; 16] = v6(0x50, 7);
/// Only the kernel has a route: via `::60`, neighbour unknown.
const FIB_NO_NEIGH6: [u8; 16] = v6(0x60, 7);
/// The kernel has an unreachable route for `fd00:10:1:70::/64`.
const FIB_UNREACHABLE6: [u8; 16] = v6(0x70, 7);
/// In no pod CIDR at all.
const STRANGER6: [u8; 16] = Ipv6Addr::new(0xfd00, 0x10, 9, 9, 0, 0, 0, 9).octets();
const LINK_LOCAL6: [u8; 16] = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3).octets();
const ALL_NODES6: [u8; 16] = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();

/// Which program a row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prog {
    Egress,
    Ingress,
    Xdp,
}

impl Prog {
    fn hook(self) -> u32 {
        match self {
            Self::Egress => hook::EGRESS,
            Self::Ingress => hook::INGRESS_TC,
            Self::Xdp => hook::INGRESS_XDP,
        }
    }
}

/// What a row must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The kernel refuses the input before the program runs (shorter than an Ethernet header).
    Rejected,
    /// Handed to the stack unchanged, counted under this reason.
    Pass(u32),
    /// Rewritten and sent on: this reason, these MACs (`None`: left for the kernel to fill).
    Fwd {
        reason: u32,
        dmac: Option<[u8; 6]>,
        smac: Option<[u8; 6]>,
    },
}

/// The interfaces of the test namespace.
struct World {
    ns: Netns,
    uplink: u32,
    bridge: u32,
    port: u32,
}

impl World {
    /// One node: uplink `up0` (172.20.11.43/24), bridge `cni0` (10.1.79.1/24) with port
    /// `veth-pod0`, kernel routes for the FIB rows, forwarding on.
    fn new(name: &str) -> Self {
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

    fn config(&self, flags: u32) -> Config {
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
            pad: 0,
        }
    }

    fn route(&self, node: u8, mac: [u8; 6], mtu: u32, flags: u32) -> RouteV4 {
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
    fn routes(&self) -> Vec<([u8; 4], u32, RouteV4)> {
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

    fn endpoints(&self) -> Vec<([u8; 4], Endpoint)> {
        let ep = |mac| Endpoint {
            ifindex: self.port,
            mac,
            pad: [0; 2],
        };
        vec![(POD, ep(POD_MAC)), ([10, 1, 79, 8], ep(OTHER_POD_MAC))]
    }

    fn route6(&self, node: u16, mac: [u8; 6], mtu: u32, flags: u32) -> RouteV6 {
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
    fn routes6(&self) -> Vec<([u8; 16], u32, RouteV6)> {
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

    fn endpoints6(&self) -> Vec<([u8; 16], Endpoint)> {
        let ep = |mac| Endpoint {
            ifindex: self.port,
            mac,
            pad: [0; 2],
        };
        vec![(POD6, ep(POD_MAC)), (OTHER_POD6, ep(OTHER_POD_MAC))]
    }

    fn lpm6(&self, addr: [u8; 16]) -> Option<RouteV6> {
        self.routes6()
            .into_iter()
            .filter(|(p, len, _)| {
                let mask = u128::MAX << (128 - len);
                u128::from_be_bytes(*p) & mask == u128::from_be_bytes(addr) & mask
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, r)| r)
    }

    fn endpoint6(&self, addr: [u8; 16]) -> Option<Endpoint> {
        self.endpoints6()
            .into_iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, e)| e)
    }

    fn lpm(&self, addr: [u8; 4]) -> Option<RouteV4> {
        self.routes()
            .into_iter()
            .filter(|(p, len, _)| {
                let mask = u32::MAX << (32 - len);
                u32::from_be_bytes(*p) & mask == u32::from_be_bytes(addr) & mask
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(_, _, r)| r)
    }

    fn endpoint(&self, addr: [u8; 4]) -> Option<Endpoint> {
        self.endpoints()
            .into_iter()
            .find(|(a, _)| *a == addr)
            .map(|(_, e)| e)
    }
}

/// What the running kernel offers the conntrack gate.
fn kernel() -> hostgw_agent::kfunc::Kernel {
    hostgw_agent::kfunc::read_kernel(std::path::Path::new(hostgw_agent::kfunc::VMLINUX_BTF))
        .expect("the kernel's BTF")
}

fn sysctl(ns: &Netns, key: &str, value: &str) {
    sh(ns
        .command("sysctl")
        .args(["-qw", &format!("{key}={value}")]));
}

/// The programs, loaded with one configuration and the world's map content.
struct Programs {
    ebpf: Ebpf,
}

impl Programs {
    fn load(world: &World, flags: u32) -> Self {
        let mut progs = Self::load_with(world, world.config(flags));
        progs.set_forwarding(true);
        progs
    }

    /// Attaches the XDP program to the uplink in native mode. XDP test runs that name the
    /// uplink as their ingress interface need its rx queue registered, which a veth only does
    /// with an XDP program attached; this also shows native XDP works on this kernel.
    fn attach_xdp(&mut self) {
        let x: &mut Xdp = self
            .ebpf
            .program_mut(names::PROG_XDP)
            .unwrap()
            .try_into()
            .unwrap();
        x.attach("up0", XdpMode::Driver)
            .expect("native XDP on the veth uplink");
    }

    /// Loads the programs with `cfg` as their read-only configuration and fills the maps with
    /// the world's routes and endpoints; the node state is left empty (forwarding off).
    fn load_with(world: &World, cfg: Config) -> Self {
        let object = hostgw_agent::kfunc::PatchedObject::new(hostgw_agent::EBPF_OBJECT, &kernel())
            .expect("kfunc calls prepared");
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &cfg, true)
            .load(object.bytes())
            .expect("the embedded object loads");
        for name in [names::PROG_EGRESS, names::PROG_INGRESS] {
            let p: &mut SchedClassifier = ebpf.program_mut(name).unwrap().try_into().unwrap();
            p.load().unwrap();
        }
        let x: &mut Xdp = ebpf
            .program_mut(names::PROG_XDP)
            .unwrap()
            .try_into()
            .unwrap();
        x.load().unwrap();
        let mut routes: LpmTrie<_, [u8; 4], RouteV4> =
            LpmTrie::try_from(ebpf.map_mut(names::ROUTES_V4).unwrap()).unwrap();
        for (prefix, len, route) in world.routes() {
            routes.insert(&Key::new(len, prefix), route, 0).unwrap();
        }
        let mut eps: BpfHashMap<_, [u8; 4], Endpoint> =
            BpfHashMap::try_from(ebpf.map_mut(names::ENDPOINTS_V4).unwrap()).unwrap();
        for (addr, ep) in world.endpoints() {
            eps.insert(addr, ep, 0).unwrap();
        }
        let mut routes: LpmTrie<_, [u8; 16], RouteV6> =
            LpmTrie::try_from(ebpf.map_mut(names::ROUTES_V6).unwrap()).unwrap();
        for (prefix, len, route) in world.routes6() {
            routes.insert(&Key::new(len, prefix), route, 0).unwrap();
        }
        let mut eps: BpfHashMap<_, [u8; 16], Endpoint> =
            BpfHashMap::try_from(ebpf.map_mut(names::ENDPOINTS_V6).unwrap()).unwrap();
        for (addr, ep) in world.endpoints6() {
            eps.insert(addr, ep, 0).unwrap();
        }
        Self { ebpf }
    }

    /// Forwarding on or off for both families.
    fn set_forwarding(&mut self, on: bool) {
        self.set_state(if on {
            STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6
        } else {
            0
        });
    }

    fn set_state(&mut self, flags: u32) {
        let mut state: Array<_, State> =
            Array::try_from(self.ebpf.map_mut(names::STATE).unwrap()).unwrap();
        let state_value = State {
            flags,
            bridge_mac: BRIDGE_MAC,
            uplink_mac: UPLINK_MAC,
        };
        state.set(0, state_value, 0).unwrap();
    }

    /// Runs `prog` on `frame` arriving on `ifindex`; `gso_size` makes the skb a GSO packet.
    /// Returns the return code and the output bytes, or `None` when the kernel refused the
    /// input.
    fn run(&self, prog: Prog, frame: &[u8], ifindex: u32, gso_size: u32) -> Option<(u32, Vec<u8>)> {
        let mut out = vec![0u8; 8192];
        let result = match prog {
            Prog::Egress | Prog::Ingress => {
                let name = if prog == Prog::Egress {
                    names::PROG_EGRESS
                } else {
                    names::PROG_INGRESS
                };
                let p: &SchedClassifier = self.ebpf.program(name).unwrap().try_into().unwrap();
                // struct __sk_buff: ifindex at 40, gso_segs at 164, gso_size at 176.
                let mut ctx = [0u8; 192];
                ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
                if gso_size != 0 {
                    let segs = (frame.len() as u32).div_ceil(gso_size);
                    ctx[164..168].copy_from_slice(&segs.to_ne_bytes());
                    ctx[176..180].copy_from_slice(&gso_size.to_ne_bytes());
                }
                p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::default()
                })
            }
            Prog::Xdp => {
                let p: &Xdp = self
                    .ebpf
                    .program(names::PROG_XDP)
                    .unwrap()
                    .try_into()
                    .unwrap();
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress_ifindex.
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::default()
                })
            }
        };
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                if std::env::var_os("HOSTGW_DEBUG_TESTRUN").is_some() {
                    eprintln!("test run refused {} bytes: {e:?}", frame.len());
                }
                return None;
            }
        };
        out.truncate(r.data_size_out as usize);
        Some((r.return_value, out))
    }

    /// Packets counted per stats index, summed over CPUs.
    fn counters(&self) -> Vec<u64> {
        let stats: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.ebpf.map(names::STATS).unwrap()).unwrap();
        (0..counters::STATS_LEN)
            .map(|i| stats.get(&i, 0).unwrap().iter().map(|c| c.packets).sum())
            .collect()
    }

    /// A forward with the conntrack gate on: the forwarding counter and `ct_established` move.
    fn check_gated(&self, name: &str, prog: Prog, frame: &[u8], ifindex: u32, expect: Expect) {
        let Expect::Fwd {
            reason: why,
            dmac,
            smac,
        } = expect
        else {
            panic!("{name}: check_gated is for forwards");
        };
        let before = self.counters();
        let (rc, out) = self
            .run(prog, frame, ifindex, 0)
            .unwrap_or_else(|| panic!("{name}: refused"));
        let after = self.counters();
        let fwd = if prog == Prog::Xdp {
            XDP_TX
        } else {
            TC_ACT_REDIRECT
        };
        let moved: Vec<(u32, u64)> = before
            .iter()
            .zip(&after)
            .enumerate()
            .filter(|(_, (b, a))| a != b)
            .map(|(i, (b, a))| (i as u32, a - b))
            .collect();
        assert_eq!(
            rc,
            fwd,
            "{name}: return code; counters moved: {}",
            describe(&moved)
        );
        assert_rewritten(name, frame, &out, dmac, smac);
        let fam = frame_family(frame);
        let mut want = vec![
            (counters::index(fam, prog.hook(), why), 1),
            (counters::index(fam, prog.hook(), reason::CT_ESTABLISHED), 1),
        ];
        want.sort_unstable();
        assert_eq!(moved, want, "{name}: counters moved: {}", describe(&moved));
    }

    /// Runs one row and checks verdict, bytes and counters; panics naming the row.
    fn check(
        &self,
        name: &str,
        prog: Prog,
        frame: &[u8],
        ifindex: u32,
        gso_size: u32,
        expect: Expect,
    ) {
        let before = self.counters();
        let got = self.run(prog, frame, ifindex, gso_size);
        let after = self.counters();
        let moved: Vec<(u32, u64)> = before
            .iter()
            .zip(&after)
            .enumerate()
            .filter(|(_, (b, a))| a != b)
            .map(|(i, (b, a))| (i as u32, a - b))
            .collect();
        match (expect, got) {
            (Expect::Rejected, None) => {
                assert!(
                    moved.is_empty(),
                    "{name}: counters moved for a refused input: {moved:?}"
                );
            }
            (Expect::Rejected, Some((rc, _))) => {
                panic!("{name}: the kernel ran the program (rc {rc}) on a frame it should refuse")
            }
            (_, None) => panic!("{name}: BPF_PROG_TEST_RUN refused the frame"),
            (Expect::Pass(why), Some((rc, out))) => {
                let pass = if prog == Prog::Xdp {
                    XDP_PASS
                } else {
                    TC_ACT_OK
                };
                assert_eq!(
                    rc,
                    pass,
                    "{name}: return code (expected pass, {}); counters moved: {}",
                    reason_name(why),
                    describe(&moved)
                );
                assert_eq!(out, frame, "{name}: a passed frame was modified");
                let idx = counters::index(frame_family(frame), prog.hook(), why);
                assert_eq!(
                    moved,
                    vec![(idx, 1)],
                    "{name}: expected only {} to move",
                    reason_name(why)
                );
            }
            (
                Expect::Fwd {
                    reason: why,
                    dmac,
                    smac,
                },
                Some((rc, out)),
            ) => {
                let fwd = if prog == Prog::Xdp {
                    XDP_TX
                } else {
                    TC_ACT_REDIRECT
                };
                assert_eq!(
                    rc,
                    fwd,
                    "{name}: return code (expected forward, {}); counters moved: {}",
                    reason_name(why),
                    describe(&moved)
                );
                assert_rewritten(name, frame, &out, dmac, smac);
                let idx = counters::index(frame_family(frame), prog.hook(), why);
                assert_eq!(
                    moved,
                    vec![(idx, 1)],
                    "{name}: expected only {} to move",
                    reason_name(why)
                );
            }
        }
    }
}

/// A verdict as the table prints it.
fn verdict(e: Expect) -> String {
    match e {
        Expect::Rejected => "refused by the kernel".to_owned(),
        Expect::Pass(r) => format!("pass ({})", reason_name(r)),
        Expect::Fwd { reason: r, .. } => format!("forward ({})", reason_name(r)),
    }
}

/// Counter moves as `family/hook/reason +n`.
fn describe(moved: &[(u32, u64)]) -> String {
    moved
        .iter()
        .map(|(i, n)| format!("{} +{n}", counter_name(*i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stats index as `family/hook/reason`.
fn counter_name(idx: u32) -> String {
    let (f, h, r) = counters::split(idx);
    format!(
        "{}/{}/{}",
        family::NAMES[f as usize],
        hook::NAMES[h as usize],
        reason_name(r)
    )
}

/// The counter family a frame must be counted under: by its `EtherType`, `other` when it is
/// neither IPv4 nor IPv6 or too short to tell (test runs carry no VLAN metadata).
fn frame_family(frame: &[u8]) -> u32 {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => family::IPV4,
        Some([0x86, 0xdd]) => family::IPV6,
        _ => family::OTHER,
    }
}

fn reason_name(r: u32) -> &'static str {
    reason::NAMES[r as usize]
}

/// A forwarded frame: new MACs, TTL − 1, a checksum that is right when recomputed from
/// scratch, and every other byte as it was. For IPv6: new MACs, hop limit − 1, every other
/// byte as it was.
fn assert_rewritten(
    name: &str,
    input: &[u8],
    out: &[u8],
    dmac: Option<[u8; 6]>,
    smac: Option<[u8; 6]>,
) {
    assert_eq!(out.len(), input.len(), "{name}: length changed");
    let want_dmac = dmac.unwrap_or_else(|| input[0..6].try_into().unwrap());
    let want_smac = smac.unwrap_or_else(|| input[6..12].try_into().unwrap());
    assert_eq!(out[0..6], want_dmac, "{name}: destination MAC");
    assert_eq!(out[6..12], want_smac, "{name}: source MAC");
    let same = |r: std::ops::Range<usize>| {
        assert_eq!(
            out[r.clone()],
            input[r.clone()],
            "{name}: bytes {r:?} changed"
        );
    };
    if frame_family(input) == family::IPV6 {
        assert_eq!(
            out[IP + 7],
            input[IP + 7] - 1,
            "{name}: hop limit not decremented by one"
        );
        same(12..IP + 7);
        same(IP + 8..input.len());
        return;
    }
    assert_eq!(
        out[IP + 8],
        input[IP + 8] - 1,
        "{name}: TTL not decremented by one"
    );
    let ihl = usize::from(out[IP] & 0x0f) * 4;
    let stored = u16::from_be_bytes([out[IP + 10], out[IP + 11]]);
    assert_eq!(
        stored,
        ipv4_checksum(&out[IP..IP + ihl]),
        "{name}: IPv4 checksum wrong after rewrite"
    );
    same(12..IP + 8);
    same(IP + 9..IP + 10);
    same(IP + 12..input.len());
}

/// Builds a [`World`] and runs `f` on it from a thread inside its namespace (test runs, FIB and
/// MTU lookups use the caller's network namespace). The world, and with it the namespace, is
/// dropped on that thread, also when `f` panics; the panic is passed on.
fn inside(name: &str, f: impl FnOnce(&World) + Send + 'static) {
    require_root();
    let world = World::new(name);
    std::thread::spawn(move || {
        hostgw_agent::netns::enter(world.ns.name()).expect("entering the test namespace");
        f(&world);
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

fn egress_frame() -> Ipv4Frame {
    Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 32)
}

fn ingress_frame() -> Ipv4Frame {
    Ipv4Frame::udp(UPLINK_MAC, NODE42_MAC, REMOTE, POD, 32)
}

fn fwd(reason: u32, dmac: [u8; 6], smac: [u8; 6]) -> Expect {
    Expect::Fwd {
        reason,
        dmac: Some(dmac),
        smac: Some(smac),
    }
}

const NEIGH: Expect = Expect::Fwd {
    reason: reason::NEIGH_REDIRECT,
    dmac: None,
    smac: None,
};

/// A row of the table: name, program, frame, ingress ifindex, GSO segment size, verdict.
type Row = (&'static str, Prog, Vec<u8>, u32, u32, Expect);

/// The decision table, one or more rows per decision.
#[test]
fn decision_table() {
    inside("table", decision_table_rows);
}

fn with<F: FnOnce(&mut Ipv4Frame)>(base: fn() -> Ipv4Frame, f: F) -> Vec<u8> {
    let mut frame = base();
    f(&mut frame);
    frame.bytes()
}

#[expect(clippy::too_many_lines, reason = "one table")]
fn decision_table_rows(world: &World) {
    let mut progs = Programs::load(world, CONFIG_F_FIB_FALLBACK | CONFIG_F_XDP_TX);
    progs.attach_xdp();
    for name in [names::PROG_EGRESS, names::PROG_INGRESS, names::PROG_XDP] {
        let info = progs.ebpf.program(name).unwrap().info().unwrap();
        let insns = info.verified_instruction_count().unwrap_or(0);
        println!(
            "verifier accepted {name}: {insns} instructions verified, {} bytes translated",
            info.size_translated().unwrap_or(0)
        );
        assert!(insns > 0, "{name} reports no verified instructions");
    }
    let (up, port, br) = (world.uplink, world.port, world.bridge);
    let e = Prog::Egress;
    let i = Prog::Ingress;
    let x = Prog::Xdp;
    let fast_egress = fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC);
    let fast_ingress = fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC);
    let pass = Expect::Pass;

    let rows: Vec<Row> = vec![
        // Egress: pod → remote pod.
        (
            "egress: route hit, rewritten and redirected to the uplink",
            e,
            egress_frame().bytes(),
            port,
            0,
            fast_egress,
        ),
        (
            "egress: same on the bridge device (catch-all hook)",
            e,
            egress_frame().bytes(),
            br,
            0,
            fast_egress,
        ),
        (
            "egress: TTL 2 is forwarded with TTL 1",
            e,
            with(egress_frame, |f| f.ttl = 2),
            port,
            0,
            fast_egress,
        ),
        (
            "egress: TTL 1 → stack (time exceeded)",
            e,
            with(egress_frame, |f| f.ttl = 1),
            port,
            0,
            pass(reason::PASS_TTL),
        ),
        (
            "egress: TTL 0 → stack",
            e,
            with(egress_frame, |f| f.ttl = 0),
            port,
            0,
            pass(reason::PASS_TTL),
        ),
        (
            "egress: DF clear is forwarded too",
            e,
            with(egress_frame, |f| f.frag = 0),
            port,
            0,
            fast_egress,
        ),
        (
            "egress: route with unresolved MAC → redirect_neigh",
            e,
            with(egress_frame, |f| f.dst = UNRESOLVED),
            port,
            0,
            NEIGH,
        ),
        (
            "egress: frame to another pod's MAC is switched, not routed",
            e,
            with(egress_frame, |f| f.dmac = OTHER_POD_MAC),
            port,
            0,
            pass(reason::PASS_NOT_ROUTED),
        ),
        (
            "egress: broadcast MAC",
            e,
            with(egress_frame, |f| f.dmac = [0xff; 6]),
            port,
            0,
            pass(reason::PASS_MULTICAST),
        ),
        (
            "egress: multicast MAC",
            e,
            with(egress_frame, |f| f.dmac = [0x01, 0, 0x5e, 0, 0, 5]),
            port,
            0,
            pass(reason::PASS_MULTICAST),
        ),
        (
            "egress: multicast IP to the bridge MAC",
            e,
            with(egress_frame, |f| f.dst = [224, 0, 0, 5]),
            port,
            0,
            pass(reason::PASS_MULTICAST),
        ),
        (
            "egress: limited broadcast IP",
            e,
            with(egress_frame, |f| f.dst = [255, 255, 255, 255]),
            port,
            0,
            pass(reason::PASS_MULTICAST),
        ),
        (
            "egress: ARP",
            e,
            with(egress_frame, |f| f.ethertype = 0x0806),
            port,
            0,
            pass(reason::PASS_NOT_IP),
        ),
        (
            "egress: VLAN-tagged",
            e,
            with(egress_frame, |f| f.ethertype = 0x8100),
            port,
            0,
            pass(reason::PASS_NOT_IP),
        ),
        (
            "egress: an IPv4 packet in an IPv6 frame (version 4)",
            e,
            with(egress_frame, |f| f.ethertype = 0x86dd),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress: IP options",
            e,
            with(egress_frame, |f| f.options = vec![1, 1, 1, 0]),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress: IHL 4 (bad)",
            e,
            with(egress_frame, |f| f.ver_ihl = Some(0x44)),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress: IHL 0 (bad)",
            e,
            with(egress_frame, |f| f.ver_ihl = Some(0x40)),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress: version 6 in an IPv4 frame",
            e,
            with(egress_frame, |f| f.ver_ihl = Some(0x65)),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress: total length beyond the frame",
            e,
            with(egress_frame, |f| f.tot_len = Some(200)),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress: total length below the header",
            e,
            with(egress_frame, |f| f.tot_len = Some(19)),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress: total length shorter than the frame (padding) is fine",
            e,
            with(egress_frame, |f| f.tot_len = Some(30)),
            port,
            0,
            fast_egress,
        ),
        (
            "egress: bad header checksum",
            e,
            with(egress_frame, |f| f.bad_checksum = true),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress: first fragment (MF)",
            e,
            with(egress_frame, |f| f.frag = 0x2000),
            port,
            0,
            pass(reason::PASS_FRAGMENT),
        ),
        (
            "egress: later fragment (offset)",
            e,
            with(egress_frame, |f| f.frag = 0x00b9),
            port,
            0,
            pass(reason::PASS_FRAGMENT),
        ),
        (
            "egress: last fragment (offset, no MF)",
            e,
            with(egress_frame, |f| f.frag = 0x0001),
            port,
            0,
            pass(reason::PASS_FRAGMENT),
        ),
        (
            "egress: spoofed source (not a pod of this node)",
            e,
            with(egress_frame, |f| f.src = [10, 1, 79, 99]),
            port,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "egress: source of another node's CIDR",
            e,
            with(egress_frame, |f| f.src = REMOTE),
            port,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "egress: DF, 1501 bytes over MTU 1500",
            e,
            Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 1501 - 28).bytes(),
            port,
            0,
            pass(reason::PASS_MTU),
        ),
        (
            "egress: no DF, over MTU (the stack fragments)",
            e,
            with(
                || Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 1501 - 28),
                |f| f.frag = 0,
            ),
            port,
            0,
            pass(reason::PASS_MTU),
        ),
        (
            "egress: exactly MTU 1500",
            e,
            Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 1500 - 28).bytes(),
            port,
            0,
            fast_egress,
        ),
        (
            "egress: over the route's MTU 1000",
            e,
            Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, SMALL_MTU, 1001 - 28).bytes(),
            port,
            0,
            pass(reason::PASS_MTU),
        ),
        (
            "egress: at the route's MTU 1000",
            e,
            Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, SMALL_MTU, 1000 - 28).bytes(),
            port,
            0,
            fwd(reason::FAST_EGRESS, NODE45_MAC, UPLINK_MAC),
        ),
        (
            "egress: GSO 3000 bytes, 1400-byte segments fit",
            e,
            Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 3000 - 28).bytes(),
            port,
            1400,
            fast_egress,
        ),
        (
            "egress: GSO 3000 bytes, 1600-byte segments do not",
            e,
            Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 3000 - 28).bytes(),
            port,
            1600,
            pass(reason::PASS_MTU),
        ),
        (
            "egress: trie miss, FIB forwards (neighbour known)",
            e,
            with(egress_frame, |f| f.dst = FIB_ONLY),
            port,
            0,
            fwd(reason::FIB_FORWARD, NODE50_MAC, UPLINK_MAC),
        ),
        (
            "egress: trie miss, FIB next hop unresolved → redirect_neigh",
            e,
            with(egress_frame, |f| f.dst = FIB_NO_NEIGH),
            port,
            0,
            NEIGH,
        ),
        (
            "egress: trie miss, FIB unreachable route",
            e,
            with(egress_frame, |f| f.dst = FIB_UNREACHABLE),
            port,
            0,
            pass(reason::PASS_NO_ROUTE),
        ),
        (
            "egress: to the node's own (gateway) address",
            e,
            with(egress_frame, |f| f.dst = GATEWAY),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress: to the node's uplink address",
            e,
            with(egress_frame, |f| f.dst = [172, 20, 11, 43]),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress: no route anywhere",
            e,
            with(egress_frame, |f| f.dst = [192, 0, 2, 1]),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        // Ingress, TC on the uplink: remote node → local pod, transit.
        (
            "ingress: local pod, delivered with redirect_peer",
            i,
            ingress_frame().bytes(),
            up,
            0,
            fast_ingress,
        ),
        (
            "ingress: TTL 2 delivered with TTL 1",
            i,
            with(ingress_frame, |f| f.ttl = 2),
            up,
            0,
            fast_ingress,
        ),
        (
            "ingress: TTL 1 → stack",
            i,
            with(ingress_frame, |f| f.ttl = 1),
            up,
            0,
            pass(reason::PASS_TTL),
        ),
        (
            "ingress: frame not addressed to the uplink MAC",
            i,
            with(ingress_frame, |f| f.dmac = [0x02, 0, 0, 0x11, 0, 0x99]),
            up,
            0,
            pass(reason::PASS_NOT_ROUTED),
        ),
        (
            "ingress: broadcast",
            i,
            with(ingress_frame, |f| f.dmac = [0xff; 6]),
            up,
            0,
            pass(reason::PASS_MULTICAST),
        ),
        (
            "ingress: source not in any remote pod CIDR (rp_filter)",
            i,
            with(ingress_frame, |f| f.src = [10, 9, 9, 9]),
            up,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "ingress: source is one of this node's pods (spoofed)",
            i,
            with(ingress_frame, |f| f.src = [10, 1, 79, 8]),
            up,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "ingress: source route points at another interface",
            i,
            ingress_frame().bytes(),
            br,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "ingress: over the pod veth's MTU",
            i,
            Ipv4Frame::udp(UPLINK_MAC, NODE42_MAC, REMOTE, POD, 1501 - 28).bytes(),
            up,
            0,
            pass(reason::PASS_MTU),
        ),
        (
            "ingress: transit to another node's pods",
            i,
            with(ingress_frame, |f| f.dst = SMALL_MTU),
            up,
            0,
            fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        ),
        (
            "ingress: pod not in the endpoint table → FIB → bridge",
            i,
            with(ingress_frame, |f| f.dst = [10, 1, 79, 77]),
            up,
            0,
            NEIGH,
        ),
        (
            "ingress: to the node's uplink address",
            i,
            with(ingress_frame, |f| f.dst = [172, 20, 11, 43]),
            up,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "ingress: bad checksum",
            i,
            with(ingress_frame, |f| f.bad_checksum = true),
            up,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "ingress: fragment",
            i,
            with(ingress_frame, |f| f.frag = 0x2000),
            up,
            0,
            pass(reason::PASS_FRAGMENT),
        ),
        // XDP on the uplink.
        (
            "xdp: local pod is left to TC",
            x,
            ingress_frame().bytes(),
            up,
            0,
            pass(reason::HANDOFF_TC),
        ),
        (
            "xdp: transit goes back out with XDP_TX",
            x,
            with(ingress_frame, |f| f.dst = SMALL_MTU),
            up,
            0,
            fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        ),
        (
            "xdp: transit to an unresolved next hop is left to TC",
            x,
            with(ingress_frame, |f| f.dst = UNRESOLVED),
            up,
            0,
            pass(reason::HANDOFF_TC),
        ),
        (
            "xdp: trie miss is left to TC",
            x,
            with(ingress_frame, |f| f.dst = FIB_ONLY),
            up,
            0,
            pass(reason::HANDOFF_TC),
        ),
        (
            "xdp: TTL 1",
            x,
            with(ingress_frame, |f| f.ttl = 1),
            up,
            0,
            pass(reason::PASS_TTL),
        ),
        (
            "xdp: options",
            x,
            with(ingress_frame, |f| f.options = vec![1, 1, 1, 0]),
            up,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "xdp: VLAN-tagged",
            x,
            with(ingress_frame, |f| f.ethertype = 0x8100),
            up,
            0,
            pass(reason::PASS_NOT_IP),
        ),
        (
            "xdp: spoofed source",
            x,
            with(ingress_frame, |f| f.src = [10, 9, 9, 9]),
            up,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "xdp: transit over the route MTU",
            x,
            Ipv4Frame::udp(UPLINK_MAC, NODE42_MAC, REMOTE, SMALL_MTU, 1001 - 28).bytes(),
            up,
            0,
            pass(reason::PASS_MTU),
        ),
    ];
    check_rows(&progs, &rows);

    // Every truncation of a forwardable frame, from 0 bytes to its full Ethernet + IPv4 + UDP
    // headers. What the kernel refuses to run (see `refused`) must be refused; every other
    // length is malformed (the IPv4 header is incomplete, or the total length no longer fits)
    // until the frame is whole.
    let full = with(egress_frame, |f| f.payload.truncate(8));
    assert_eq!(full.len(), ETH_LEN + 20 + 8);
    for len in 0..=full.len() {
        for (prog, ifindex) in [(e, port), (x, up)] {
            let mut frame = full[..len].to_vec();
            if prog == Prog::Xdp && len >= 6 {
                frame[0..6].copy_from_slice(&UPLINK_MAC);
            }
            let exp = match len {
                _ if refused(prog, &frame) => Expect::Rejected,
                l if l < full.len() => pass(reason::PASS_MALFORMED),
                // The whole frame: the egress source is a local pod, which the uplink's
                // reverse-path check refuses.
                _ if prog == Prog::Xdp => pass(reason::PASS_RPF),
                _ => fast_egress,
            };
            progs.check(
                &format!("{prog:?}: truncated to {len} bytes"),
                prog,
                &frame,
                ifindex,
                0,
                exp,
            );
        }
    }
    println!("truncation rows 0..={} passed", full.len());

    // Forwarding disabled: by the node state the agent writes, and by the kernel (FIB path).
    let mut progs = progs;
    progs.set_forwarding(false);
    let state_off: Vec<Row> = vec![
        (
            "egress: forwarding off (agent state)",
            e,
            egress_frame().bytes(),
            port,
            0,
            pass(reason::PASS_FWD_DISABLED),
        ),
        (
            "ingress: forwarding off (agent state)",
            i,
            ingress_frame().bytes(),
            up,
            0,
            pass(reason::PASS_FWD_DISABLED),
        ),
        (
            "xdp: forwarding off (agent state)",
            x,
            ingress_frame().bytes(),
            up,
            0,
            pass(reason::PASS_FWD_DISABLED),
        ),
    ];
    check_rows(&progs, &state_off);
    progs.set_forwarding(true);
    sysctl(&world.ns, "net.ipv4.conf.cni0.forwarding", "0");
    check_rows(
        &progs,
        &[(
            "egress: FIB path, kernel forwarding off on the bridge",
            e,
            with(egress_frame, |f| f.dst = FIB_ONLY),
            port,
            0,
            pass(reason::PASS_FWD_DISABLED),
        )],
    );
    sysctl(&world.ns, "net.ipv4.conf.cni0.forwarding", "1");

    // FIB fallback and XDP_TX switched off: misses go to the stack, XDP leaves transit to TC.
    let plain = Programs::load(world, 0);
    check_rows(
        &plain,
        &[
            (
                "egress: trie miss with the FIB fallback off",
                e,
                with(egress_frame, |f| f.dst = FIB_ONLY),
                port,
                0,
                pass(reason::PASS_NO_ROUTE),
            ),
            (
                "egress: route hit with the FIB fallback off",
                e,
                egress_frame().bytes(),
                port,
                0,
                fast_egress,
            ),
            (
                "xdp: transit when the uplink cannot XDP_TX",
                x,
                with(ingress_frame, |f| f.dst = SMALL_MTU),
                up,
                0,
                pass(reason::HANDOFF_TC),
            ),
        ],
    );
}

/// Checks each row and prints it.
fn check_rows(progs: &Programs, rows: &[Row]) {
    for (name, prog, frame, ifindex, gso, expect) in rows {
        progs.check(name, *prog, frame, *ifindex, *gso, *expect);
        println!("  ok  {name:<64} {}", verdict(*expect));
    }
}

fn egress6() -> Ipv6Frame {
    Ipv6Frame::udp(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 32)
}

fn ingress6() -> Ipv6Frame {
    Ipv6Frame::udp(UPLINK_MAC, NODE42_MAC, REMOTE6, POD6, 32)
}

fn with6<F: FnOnce(&mut Ipv6Frame)>(base: fn() -> Ipv6Frame, f: F) -> Vec<u8> {
    let mut frame = base();
    f(&mut frame);
    frame.bytes()
}

/// The IPv6 rows of the decision table: the IPv4 table's shape, and what IPv6 adds (extension
/// headers, neighbour discovery, address scopes, no fragmentation by routers).
#[test]
fn decision_table_ipv6() {
    inside("table6", decision_table_v6_rows);
}

#[expect(clippy::too_many_lines, reason = "one table")]
fn decision_table_v6_rows(world: &World) {
    let mut progs = Programs::load(world, CONFIG_F_FIB_FALLBACK | CONFIG_F_XDP_TX);
    progs.attach_xdp();
    let (up, port, br) = (world.uplink, world.port, world.bridge);
    let e = Prog::Egress;
    let i = Prog::Ingress;
    let x = Prog::Xdp;
    let fast_egress = fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC);
    let fast_ingress = fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC);
    let pass = Expect::Pass;
    let icmp = |ty: u8, dst| Ipv6Frame::icmp(BRIDGE_MAC, POD_MAC, POD6, dst, ty).bytes();
    let ext = |kind: u8| egress6().with_extension(kind).bytes();
    let sized = |dmac, smac, src, dst, l3: usize| Ipv6Frame::udp(dmac, smac, src, dst, l3 - 48);

    let rows: Vec<Row> = vec![
        // Egress: pod → remote pod.
        (
            "egress6: route hit, rewritten and redirected to the uplink",
            e,
            egress6().bytes(),
            port,
            0,
            fast_egress,
        ),
        (
            "egress6: same on the bridge device (catch-all hook)",
            e,
            egress6().bytes(),
            br,
            0,
            fast_egress,
        ),
        (
            "egress6: hop limit 2 is forwarded with hop limit 1",
            e,
            with6(egress6, |f| f.hop_limit = 2),
            port,
            0,
            fast_egress,
        ),
        (
            "egress6: hop limit 1 → stack (time exceeded)",
            e,
            with6(egress6, |f| f.hop_limit = 1),
            port,
            0,
            pass(reason::PASS_TTL),
        ),
        (
            "egress6: hop limit 0 → stack",
            e,
            with6(egress6, |f| f.hop_limit = 0),
            port,
            0,
            pass(reason::PASS_TTL),
        ),
        (
            "egress6: TCP is forwarded",
            e,
            with6(egress6, |f| f.next = 6),
            port,
            0,
            fast_egress,
        ),
        (
            "egress6: ICMPv6 echo request is forwarded",
            e,
            icmp(128, REMOTE6),
            port,
            0,
            fast_egress,
        ),
        (
            "egress6: route with unresolved MAC → redirect_neigh",
            e,
            with6(egress6, |f| f.dst = UNRESOLVED6),
            port,
            0,
            NEIGH,
        ),
        (
            "egress6: frame to another pod's MAC is switched, not routed",
            e,
            with6(egress6, |f| f.dmac = OTHER_POD_MAC),
            port,
            0,
            pass(reason::PASS_NOT_ROUTED),
        ),
        (
            "egress6: multicast MAC",
            e,
            with6(egress6, |f| f.dmac = [0x33, 0x33, 0, 0, 0, 1]),
            port,
            0,
            pass(reason::PASS_MULTICAST),
        ),
        (
            "egress6: multicast ff02::1 to the bridge MAC",
            e,
            with6(egress6, |f| f.dst = ALL_NODES6),
            port,
            0,
            pass(reason::PASS_MULTICAST),
        ),
        (
            "egress6: router solicitation (133)",
            e,
            icmp(133, REMOTE6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: router advertisement (134)",
            e,
            icmp(134, REMOTE6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: neighbour solicitation (135) unicast to a pod address",
            e,
            icmp(135, REMOTE6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: neighbour advertisement (136) unicast to a pod address",
            e,
            icmp(136, REMOTE6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: redirect (137)",
            e,
            icmp(137, REMOTE6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: ICMPv6 without its type byte",
            e,
            with6(egress6, |f| {
                f.next = 58;
                f.payload.clear();
            }),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress6: link-local source",
            e,
            with6(egress6, |f| f.src = LINK_LOCAL6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: link-local destination",
            e,
            with6(egress6, |f| f.dst = LINK_LOCAL6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: unspecified source ::",
            e,
            with6(egress6, |f| f.src = [0; 16]),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: loopback destination ::1",
            e,
            with6(egress6, |f| f.dst = Ipv6Addr::LOCALHOST.octets()),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: multicast source",
            e,
            with6(egress6, |f| f.src = ALL_NODES6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: hop-by-hop options header",
            e,
            ext(0),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress6: routing header",
            e,
            ext(43),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress6: fragment header",
            e,
            ext(44),
            port,
            0,
            pass(reason::PASS_FRAGMENT),
        ),
        (
            "egress6: destination options header",
            e,
            ext(60),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress6: authentication header",
            e,
            ext(51),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress6: ESP",
            e,
            with6(egress6, |f| f.next = 50),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress6: no next header (59)",
            e,
            with6(egress6, |f| f.next = 59),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress6: an upper layer it does not parse (SCTP)",
            e,
            with6(egress6, |f| f.next = 132),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress6: jumbogram (payload length 0, hop-by-hop)",
            e,
            with6(egress6, |f| {
                *f = f.clone().with_extension(0);
                f.payload_len = Some(0);
            }),
            port,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "egress6: version 4 in an IPv6 frame",
            e,
            with6(egress6, |f| f.version = 4),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress6: payload length beyond the frame",
            e,
            with6(egress6, |f| f.payload_len = Some(41)),
            port,
            0,
            pass(reason::PASS_MALFORMED),
        ),
        (
            "egress6: payload length shorter than the frame (padding) is fine",
            e,
            with6(egress6, |f| f.payload_len = Some(20)),
            port,
            0,
            fast_egress,
        ),
        (
            "egress6: spoofed source (not a pod of this node)",
            e,
            with6(egress6, |f| f.src = v6(0x79, 0x99)),
            port,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "egress6: source of another node's CIDR",
            e,
            with6(egress6, |f| f.src = REMOTE6),
            port,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "egress6: 1501 bytes over MTU 1500 (the stack sends Packet Too Big)",
            e,
            sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 1501).bytes(),
            port,
            0,
            pass(reason::PASS_MTU),
        ),
        (
            "egress6: exactly MTU 1500",
            e,
            sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 1500).bytes(),
            port,
            0,
            fast_egress,
        ),
        (
            "egress6: over the route's MTU 1000",
            e,
            sized(BRIDGE_MAC, POD_MAC, POD6, SMALL_MTU6, 1001).bytes(),
            port,
            0,
            pass(reason::PASS_MTU),
        ),
        (
            "egress6: at the route's MTU 1000",
            e,
            sized(BRIDGE_MAC, POD_MAC, POD6, SMALL_MTU6, 1000).bytes(),
            port,
            0,
            fwd(reason::FAST_EGRESS, NODE45_MAC, UPLINK_MAC),
        ),
        (
            "egress6: GSO 3000 bytes, 1448-byte segments fit",
            e,
            sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 3000).bytes(),
            port,
            1400,
            fast_egress,
        ),
        (
            "egress6: GSO 3000 bytes, 1648-byte segments do not",
            e,
            sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 3000).bytes(),
            port,
            1600,
            pass(reason::PASS_MTU),
        ),
        (
            "egress6: GSO, segments of 1453 bytes over MTU 1500 by 1",
            e,
            sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 3000).bytes(),
            port,
            1453,
            pass(reason::PASS_MTU),
        ),
        (
            "egress6: trie miss, FIB forwards (neighbour known)",
            e,
            with6(egress6, |f| f.dst = FIB_ONLY6),
            port,
            0,
            fwd(reason::FIB_FORWARD, NODE50_MAC, UPLINK_MAC),
        ),
        (
            "egress6: trie miss, FIB next hop unresolved → redirect_neigh",
            e,
            with6(egress6, |f| f.dst = FIB_NO_NEIGH6),
            port,
            0,
            NEIGH,
        ),
        (
            "egress6: trie miss, FIB unreachable route",
            e,
            with6(egress6, |f| f.dst = FIB_UNREACHABLE6),
            port,
            0,
            pass(reason::PASS_NO_ROUTE),
        ),
        (
            "egress6: to the node's own (gateway) address",
            e,
            with6(egress6, |f| f.dst = GATEWAY6),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: to the node's uplink address",
            e,
            with6(egress6, |f| f.dst = node6(0x43)),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "egress6: no route anywhere",
            e,
            with6(egress6, |f| {
                f.dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets();
            }),
            port,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        // Ingress, TC on the uplink: remote node → local pod, transit.
        (
            "ingress6: local pod, delivered with redirect_peer",
            i,
            ingress6().bytes(),
            up,
            0,
            fast_ingress,
        ),
        (
            "ingress6: hop limit 2 delivered with hop limit 1",
            i,
            with6(ingress6, |f| f.hop_limit = 2),
            up,
            0,
            fast_ingress,
        ),
        (
            "ingress6: hop limit 1 → stack",
            i,
            with6(ingress6, |f| f.hop_limit = 1),
            up,
            0,
            pass(reason::PASS_TTL),
        ),
        (
            "ingress6: frame not addressed to the uplink MAC",
            i,
            with6(ingress6, |f| f.dmac = [0x02, 0, 0, 0x11, 0, 0x99]),
            up,
            0,
            pass(reason::PASS_NOT_ROUTED),
        ),
        (
            "ingress6: neighbour solicitation to the uplink MAC",
            i,
            Ipv6Frame::icmp(UPLINK_MAC, NODE42_MAC, REMOTE6, POD6, 135).bytes(),
            up,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "ingress6: source not in any remote pod CIDR (rp_filter)",
            i,
            with6(ingress6, |f| f.src = STRANGER6),
            up,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "ingress6: source is one of this node's pods (spoofed)",
            i,
            with6(ingress6, |f| f.src = OTHER_POD6),
            up,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "ingress6: source route points at another interface",
            i,
            ingress6().bytes(),
            br,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "ingress6: over the pod veth's MTU",
            i,
            sized(UPLINK_MAC, NODE42_MAC, REMOTE6, POD6, 1501).bytes(),
            up,
            0,
            pass(reason::PASS_MTU),
        ),
        (
            "ingress6: transit to another node's pods",
            i,
            with6(ingress6, |f| f.dst = SMALL_MTU6),
            up,
            0,
            fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        ),
        (
            "ingress6: pod not in the endpoint table → FIB → bridge",
            i,
            with6(ingress6, |f| f.dst = v6(0x79, 0x77)),
            up,
            0,
            NEIGH,
        ),
        (
            "ingress6: to the node's uplink address",
            i,
            with6(ingress6, |f| f.dst = node6(0x43)),
            up,
            0,
            pass(reason::PASS_NOT_FWDED),
        ),
        (
            "ingress6: fragment header",
            i,
            ingress6().with_extension(44).bytes(),
            up,
            0,
            pass(reason::PASS_FRAGMENT),
        ),
        // XDP on the uplink.
        (
            "xdp6: local pod is left to TC",
            x,
            ingress6().bytes(),
            up,
            0,
            pass(reason::HANDOFF_TC),
        ),
        (
            "xdp6: transit goes back out with XDP_TX",
            x,
            with6(ingress6, |f| f.dst = SMALL_MTU6),
            up,
            0,
            fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        ),
        (
            "xdp6: transit to an unresolved next hop is left to TC",
            x,
            with6(ingress6, |f| f.dst = UNRESOLVED6),
            up,
            0,
            pass(reason::HANDOFF_TC),
        ),
        (
            "xdp6: trie miss is left to TC",
            x,
            with6(ingress6, |f| f.dst = FIB_ONLY6),
            up,
            0,
            pass(reason::HANDOFF_TC),
        ),
        (
            "xdp6: hop limit 1",
            x,
            with6(ingress6, |f| f.hop_limit = 1),
            up,
            0,
            pass(reason::PASS_TTL),
        ),
        (
            "xdp6: extension header",
            x,
            ingress6().with_extension(60).bytes(),
            up,
            0,
            pass(reason::PASS_IP_OPTIONS),
        ),
        (
            "xdp6: spoofed source",
            x,
            with6(ingress6, |f| f.src = STRANGER6),
            up,
            0,
            pass(reason::PASS_RPF),
        ),
        (
            "xdp6: transit over the route MTU",
            x,
            sized(UPLINK_MAC, NODE42_MAC, REMOTE6, SMALL_MTU6, 1001).bytes(),
            up,
            0,
            pass(reason::PASS_MTU),
        ),
        (
            "xdp6: multicast destination",
            x,
            with6(ingress6, |f| f.dst = ALL_NODES6),
            up,
            0,
            pass(reason::PASS_MULTICAST),
        ),
    ];
    check_rows(&progs, &rows);

    // Every truncation of a forwardable frame, from 0 bytes to its full Ethernet + IPv6 + UDP
    // headers: refused where the kernel refuses to run, malformed until the header is whole and
    // the payload length fits.
    let full = with6(egress6, |f| f.payload.truncate(8));
    assert_eq!(full.len(), ETH_LEN + IPV6_LEN + 8);
    for len in 0..=full.len() {
        for (prog, ifindex) in [(e, port), (x, up)] {
            let mut frame = full[..len].to_vec();
            if prog == Prog::Xdp && len >= 6 {
                frame[0..6].copy_from_slice(&UPLINK_MAC);
            }
            let exp = match len {
                _ if refused(prog, &frame) => Expect::Rejected,
                l if l < full.len() => pass(reason::PASS_MALFORMED),
                _ if prog == Prog::Xdp => pass(reason::PASS_RPF),
                _ => fast_egress,
            };
            progs.check(
                &format!("{prog:?}: IPv6 truncated to {len} bytes"),
                prog,
                &frame,
                ifindex,
                0,
                exp,
            );
        }
    }
    println!("IPv6 truncation rows 0..={} passed", full.len());

    // Forwarding is switched per family: IPv6 off with IPv4 on, and the other way round.
    let mut progs = progs;
    progs.set_state(STATE_F_FORWARD_V4);
    check_rows(
        &progs,
        &[
            (
                "egress6: IPv6 forwarding off, IPv4 on",
                e,
                egress6().bytes(),
                port,
                0,
                pass(reason::PASS_FWD_DISABLED),
            ),
            (
                "ingress6: IPv6 forwarding off, IPv4 on",
                i,
                ingress6().bytes(),
                up,
                0,
                pass(reason::PASS_FWD_DISABLED),
            ),
            (
                "xdp6: IPv6 forwarding off, IPv4 on",
                x,
                with6(ingress6, |f| f.dst = SMALL_MTU6),
                up,
                0,
                pass(reason::PASS_FWD_DISABLED),
            ),
            (
                "egress: IPv4 still forwards with only IPv4 on",
                e,
                egress_frame().bytes(),
                port,
                0,
                fast_egress,
            ),
        ],
    );
    progs.set_state(STATE_F_FORWARD_V6);
    check_rows(
        &progs,
        &[
            (
                "egress6: IPv6 forwards with only IPv6 on",
                e,
                egress6().bytes(),
                port,
                0,
                fast_egress,
            ),
            (
                "egress: IPv4 forwarding off, IPv6 on",
                e,
                egress_frame().bytes(),
                port,
                0,
                pass(reason::PASS_FWD_DISABLED),
            ),
            (
                "xdp: IPv4 forwarding off, IPv6 on",
                x,
                with(ingress_frame, |f| f.dst = SMALL_MTU),
                up,
                0,
                pass(reason::PASS_FWD_DISABLED),
            ),
        ],
    );
    progs.set_forwarding(true);
    sysctl(&world.ns, "net.ipv6.conf.cni0.forwarding", "0");
    check_rows(
        &progs,
        &[(
            "egress6: FIB path, kernel IPv6 forwarding off on the bridge",
            e,
            with6(egress6, |f| f.dst = FIB_ONLY6),
            port,
            0,
            pass(reason::PASS_FWD_DISABLED),
        )],
    );
    sysctl(&world.ns, "net.ipv6.conf.cni0.forwarding", "1");

    // FIB fallback and XDP_TX switched off.
    let plain = Programs::load(world, 0);
    check_rows(
        &plain,
        &[
            (
                "egress6: trie miss with the FIB fallback off",
                e,
                with6(egress6, |f| f.dst = FIB_ONLY6),
                port,
                0,
                pass(reason::PASS_NO_ROUTE),
            ),
            (
                "xdp6: transit when the uplink cannot XDP_TX",
                x,
                with6(ingress6, |f| f.dst = SMALL_MTU6),
                up,
                0,
                pass(reason::HANDOFF_TC),
            ),
        ],
    );
}

/// 200,000 frames mutated from forwardable ones; each verdict must match the model of the
/// decision table: a pass leaves the frame unchanged, a forward is a correct rewrite, and the
/// counters add up to exactly the model's tally.
#[test]
fn randomized_frames_match_the_model() {
    inside("random", randomized);
}

fn randomized(world: &World) {
    // The FIB fallback is off so that every verdict follows from the maps alone.
    let mut progs = Programs::load(world, CONFIG_F_XDP_TX);
    progs.attach_xdp();
    let seed = std::env::var("HOSTGW_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("randomized run seed {seed} (set HOSTGW_FUZZ_SEED to repeat it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let before = progs.counters();
    let mut tally: HashMap<u32, u64> = HashMap::new();
    let mut outcomes: HashMap<&'static str, u64> = HashMap::new();
    let mut outcomes6: HashMap<&'static str, u64> = HashMap::new();
    let plan = [
        (Prog::Egress, 100_000),
        (Prog::Ingress, 50_000),
        (Prog::Xdp, 50_000),
    ];
    for (prog, runs) in plan {
        for n in 0..runs {
            // Three in ten frames start out as IPv6 (mutations can still turn either family
            // into the other, or into neither).
            let ipv6 = rng.u8(0..10) < 3;
            let frame = if ipv6 {
                mutate6(&mut rng, prog)
            } else {
                mutate(&mut rng, prog)
            };
            let is6 = frame_family(&frame) == family::IPV6;
            let mut outcome = |kind: &'static str| {
                *outcomes.entry(kind).or_default() += 1;
                if is6 {
                    *outcomes6.entry(kind).or_default() += 1;
                }
            };
            let ifindex = match prog {
                Prog::Egress => world.port,
                _ => world.uplink,
            };
            let expect = model(prog, &frame, world);
            let got = progs.run(prog, &frame, ifindex, 0);
            let ctx = || format!("{prog:?} run {n} (seed {seed}), frame {frame:02x?}");
            match (expect, got) {
                (Expect::Rejected, None) => outcome("refused"),
                (Expect::Pass(why), Some((rc, out))) => {
                    let pass = if prog == Prog::Xdp {
                        XDP_PASS
                    } else {
                        TC_ACT_OK
                    };
                    assert_eq!(
                        (rc, reason_name(why)),
                        (pass, reason_name(why)),
                        "{}",
                        ctx()
                    );
                    assert!(out == frame, "passed frame modified: {}", ctx());
                    *tally
                        .entry(counters::index(frame_family(&frame), prog.hook(), why))
                        .or_default() += 1;
                    outcome("passed");
                }
                (
                    Expect::Fwd {
                        reason: why,
                        dmac,
                        smac,
                    },
                    Some((rc, out)),
                ) => {
                    let fwd = if prog == Prog::Xdp {
                        XDP_TX
                    } else {
                        TC_ACT_REDIRECT
                    };
                    assert_eq!(rc, fwd, "expected {}: {}", reason_name(why), ctx());
                    assert_rewritten(&ctx(), &frame, &out, dmac, smac);
                    *tally
                        .entry(counters::index(frame_family(&frame), prog.hook(), why))
                        .or_default() += 1;
                    outcome("forwarded");
                }
                (expect, got) => {
                    panic!("expected {expect:?}, got {:?}: {}", got.map(|g| g.0), ctx())
                }
            }
        }
    }
    let after = progs.counters();
    for idx in 0..counters::STATS_LEN {
        let moved = after[idx as usize] - before[idx as usize];
        let want = tally.get(&idx).copied().unwrap_or(0);
        assert_eq!(
            moved,
            want,
            "counter {} moved {moved}, model says {want}",
            counter_name(idx)
        );
    }
    let mut reasons: Vec<_> = tally.iter().collect();
    reasons.sort();
    for (idx, n) in reasons {
        let (f, h, r) = counters::split(*idx);
        println!(
            "  {:>5} {:>12} {:<22} {n}",
            family::NAMES[f as usize],
            hook::NAMES[h as usize],
            reason_name(r)
        );
    }
    println!("outcomes: {outcomes:?}");
    println!("of which IPv6: {outcomes6:?}");
    for kind in ["passed", "forwarded", "refused"] {
        assert!(
            outcomes.get(kind).copied().unwrap_or(0) > 100,
            "the mutations rarely produce {kind} frames: {outcomes:?}"
        );
        assert!(
            outcomes6.get(kind).copied().unwrap_or(0) > 100,
            "the mutations rarely produce {kind} IPv6 frames: {outcomes6:?}"
        );
    }
}

/// A frame derived from a forwardable one for `prog`, with a few fields or bytes changed.
fn mutate(rng: &mut fastrand::Rng, prog: Prog) -> Vec<u8> {
    let base = match prog {
        Prog::Egress => egress_frame(),
        Prog::Ingress => ingress_frame(),
        Prog::Xdp => with_fields(ingress_frame(), |f| f.dst = SMALL_MTU),
    };
    let mut f = base.bytes();
    let addrs: [[u8; 4]; 10] = [
        POD,
        [10, 1, 79, 8],
        [10, 1, 79, 99],
        GATEWAY,
        REMOTE,
        UNRESOLVED,
        SMALL_MTU,
        [10, 9, 9, 9],
        [224, 0, 0, 5],
        [255; 4],
    ];
    let macs = [BRIDGE_MAC, UPLINK_MAC, [0xff; 6], OTHER_POD_MAC, NODE42_MAC];
    for _ in 0..rng.usize(0..4) {
        match rng.u8(0..10) {
            0 => f[IP + 8] = [0, 1, 2, 64, 255][rng.usize(0..5)],
            1 => f[IP] = [0x45, 0x46, 0x44, 0x40, 0x65, 0x4f][rng.usize(0..6)],
            2 => f[IP + 6..IP + 8].copy_from_slice(
                &[0x0000u16, 0x4000, 0x2000, 0x0001, 0x6000, 0x00b9][rng.usize(0..6)].to_be_bytes(),
            ),
            3 => {
                let l = [0u16, 19, 20, 28, 59, 60, 61, 1500][rng.usize(0..8)];
                f[IP + 2..IP + 4].copy_from_slice(&l.to_be_bytes());
            }
            4 => f[IP + 16..IP + 20].copy_from_slice(&addrs[rng.usize(0..addrs.len())]),
            5 => f[IP + 12..IP + 16].copy_from_slice(&addrs[rng.usize(0..addrs.len())]),
            6 => f[0..6].copy_from_slice(&macs[rng.usize(0..macs.len())]),
            7 => f[12..14]
                .copy_from_slice(&[[8, 0], [0x86, 0xdd], [8, 6], [0x81, 0]][rng.usize(0..4)]),
            _ => {
                let i = rng.usize(0..f.len().min(42));
                f[i] = rng.u8(..);
            }
        }
    }
    if rng.u8(0..10) < 8 {
        fix_checksum(&mut f);
    }
    match rng.u8(0..20) {
        0 => f.truncate(rng.usize(0..f.len())),
        1 => {
            // Grow towards and past the MTU, keeping the total length in step.
            let extra = rng.usize(0..1500);
            f.resize(f.len() + extra, 0xab);
            let tot = (f.len() - ETH_LEN) as u16;
            if f.len() >= IP + 4 {
                f[IP + 2..IP + 4].copy_from_slice(&tot.to_be_bytes());
                fix_checksum(&mut f);
            }
        }
        _ => {}
    }
    f
}

fn with_fields(mut f: Ipv4Frame, change: impl FnOnce(&mut Ipv4Frame)) -> Ipv4Frame {
    change(&mut f);
    f
}

/// An IPv6 frame derived from a forwardable one for `prog`, with a few fields or bytes
/// changed.
fn mutate6(rng: &mut fastrand::Rng, prog: Prog) -> Vec<u8> {
    let mut base = match prog {
        Prog::Egress => egress6(),
        Prog::Ingress => ingress6(),
        Prog::Xdp => {
            let mut f = ingress6();
            f.dst = SMALL_MTU6;
            f
        }
    };
    match rng.u8(0..8) {
        0 => {
            base.next = 58;
            base.payload[0] = [128, 129, 133, 134, 135, 136, 137, 1][rng.usize(0..8)];
        }
        1 => base.next = 6,
        2 => base = base.with_extension([0, 43, 44, 60][rng.usize(0..4)]),
        _ => {}
    }
    let mut f = base.bytes();
    let addrs: [[u8; 16]; 12] = [
        POD6,
        OTHER_POD6,
        v6(0x79, 0x99),
        GATEWAY6,
        REMOTE6,
        UNRESOLVED6,
        SMALL_MTU6,
        STRANGER6,
        ALL_NODES6,
        LINK_LOCAL6,
        [0; 16],
        Ipv6Addr::LOCALHOST.octets(),
    ];
    let macs = [BRIDGE_MAC, UPLINK_MAC, [0xff; 6], OTHER_POD_MAC, NODE42_MAC];
    for _ in 0..rng.usize(0..4) {
        match rng.u8(0..10) {
            0 => f[IP + 7] = [0, 1, 2, 64, 255][rng.usize(0..5)],
            1 => f[IP] = ([6u8, 4, 7, 0][rng.usize(0..4)] << 4) | (f[IP] & 0x0f),
            2 => f[IP + 6] = [6, 17, 58, 0, 43, 44, 60, 59, 50, 51, 132][rng.usize(0..11)],
            3 => {
                let plen = (f.len() - IP - IPV6_LEN) as u16;
                let l = [0, 7, 8, plen - 1, plen, plen + 1, 1500, u16::MAX][rng.usize(0..8)];
                f[IP + 4..IP + 6].copy_from_slice(&l.to_be_bytes());
            }
            4 => f[IP + 24..IP + 40].copy_from_slice(&addrs[rng.usize(0..addrs.len())]),
            5 => f[IP + 8..IP + 24].copy_from_slice(&addrs[rng.usize(0..addrs.len())]),
            6 => f[0..6].copy_from_slice(&macs[rng.usize(0..macs.len())]),
            7 => f[12..14]
                .copy_from_slice(&[[0x86, 0xdd], [8, 0], [8, 6], [0x81, 0]][rng.usize(0..4)]),
            8 => f[IP + IPV6_LEN] = [128, 129, 133, 134, 135, 136, 137, 1][rng.usize(0..8)],
            _ => {
                let i = rng.usize(0..f.len().min(IP + IPV6_LEN + 8));
                f[i] = rng.u8(..);
            }
        }
    }
    match rng.u8(0..20) {
        0 => f.truncate(rng.usize(0..f.len())),
        1 => {
            // Grow towards and past the MTU, keeping the payload length in step.
            let extra = rng.usize(0..1500);
            f.resize(f.len() + extra, 0xab);
            let plen = (f.len() - IP - IPV6_LEN) as u16;
            f[IP + 4..IP + 6].copy_from_slice(&plen.to_be_bytes());
        }
        _ => {}
    }
    f
}

/// Whether `BPF_PROG_TEST_RUN` refuses `frame` before the program runs: any frame shorter
/// than an Ethernet header, and for skb programs an IPv4 (IPv6) frame without a complete 20
/// (40) byte header (the kernel reads the addresses to set up the test socket). Real traffic
/// can still bring such frames to a TC program; the XDP rows cover the same parsing code.
fn refused(prog: Prog, frame: &[u8]) -> bool {
    if frame.len() < ETH_LEN {
        return true;
    }
    if prog == Prog::Xdp {
        return false;
    }
    match frame[12..14] {
        [0x08, 0x00] => frame.len() < ETH_LEN + 20,
        [0x86, 0xdd] => frame.len() < ETH_LEN + 40,
        _ => false,
    }
}

/// The decision table as plain code, for frames on the port (egress) or the uplink, with the
/// FIB fallback off, `XDP_TX` allowed and forwarding on.
fn model(prog: Prog, f: &[u8], w: &World) -> Expect {
    use Expect::Pass;
    if refused(prog, f) {
        return Expect::Rejected;
    }
    let router = if prog == Prog::Egress {
        BRIDGE_MAC
    } else {
        UPLINK_MAC
    };
    if f[0] & 1 != 0 {
        return Pass(reason::PASS_MULTICAST);
    }
    if f[0..6] != router {
        return Pass(reason::PASS_NOT_ROUTED);
    }
    match f[12..14] {
        [8, 0] => {}
        [0x86, 0xdd] => return model6(prog, f, w),
        _ => return Pass(reason::PASS_NOT_IP),
    }
    if f.len() < IP + 20 {
        return Pass(reason::PASS_MALFORMED);
    }
    let (version, ihl) = (f[IP] >> 4, f[IP] & 0x0f);
    if version != 4 || ihl < 5 {
        return Pass(reason::PASS_MALFORMED);
    }
    if ihl > 5 {
        return Pass(reason::PASS_IP_OPTIONS);
    }
    let tot = usize::from(u16::from_be_bytes([f[IP + 2], f[IP + 3]]));
    if tot < 20 || ETH_LEN + tot > f.len() {
        return Pass(reason::PASS_MALFORMED);
    }
    if u16::from_be_bytes([f[IP + 10], f[IP + 11]]) != ipv4_checksum(&f[IP..IP + 20]) {
        return Pass(reason::PASS_MALFORMED);
    }
    if u16::from_be_bytes([f[IP + 6], f[IP + 7]]) & 0x3fff != 0 {
        return Pass(reason::PASS_FRAGMENT);
    }
    let src: [u8; 4] = f[IP + 12..IP + 16].try_into().unwrap();
    let dst: [u8; 4] = f[IP + 16..IP + 20].try_into().unwrap();
    if dst[0] >= 224 {
        return Pass(reason::PASS_MULTICAST);
    }
    let rpf = match prog {
        Prog::Egress => w.endpoint(src).is_some(),
        _ => w.lpm(src).is_some_and(|r| r.ifindex == w.uplink),
    };
    if !rpf {
        return Pass(reason::PASS_RPF);
    }
    if f[IP + 8] <= 1 {
        return Pass(reason::PASS_TTL);
    }
    let hop = w.lpm(dst).map(|r| Hop {
        mtu: r.mtu,
        flags: r.flags,
        node_mac: r.node_mac,
        uplink_mac: r.uplink_mac,
    });
    forward_model(prog, tot, w.endpoint(dst), hop)
}

/// A route's next hop, for either family.
#[derive(Clone, Copy)]
struct Hop {
    mtu: u32,
    flags: u32,
    node_mac: [u8; 6],
    uplink_mac: [u8; 6],
}

/// The table after the checks, for either family: a packet of `tot` L3 bytes to a local
/// endpoint `ep` or along a trie route `hop`.
fn forward_model(prog: Prog, tot: usize, ep: Option<Endpoint>, hop: Option<Hop>) -> Expect {
    use Expect::Pass;
    let fits_device = tot <= 1500;
    let via = |r: Hop, why: u32| {
        if (r.mtu != 0 && tot > r.mtu as usize) || !fits_device {
            Pass(reason::PASS_MTU)
        } else if r.flags & ROUTE_F_RESOLVED == 0 {
            NEIGH
        } else {
            fwd(why, r.node_mac, r.uplink_mac)
        }
    };
    match prog {
        Prog::Egress => hop.map_or(Pass(reason::PASS_NO_ROUTE), |r| via(r, reason::FAST_EGRESS)),
        Prog::Ingress => {
            if let Some(ep) = ep {
                return if fits_device {
                    fwd(reason::FAST_INGRESS, ep.mac, BRIDGE_MAC)
                } else {
                    Pass(reason::PASS_MTU)
                };
            }
            hop.map_or(Pass(reason::PASS_NO_ROUTE), |r| {
                via(r, reason::FAST_TRANSIT)
            })
        }
        Prog::Xdp => {
            if ep.is_some() {
                return Pass(reason::HANDOFF_TC);
            }
            match hop {
                Some(r) if r.flags & ROUTE_F_RESOLVED != 0 => via(r, reason::FAST_TRANSIT),
                _ => Pass(reason::HANDOFF_TC),
            }
        }
    }
}

/// The IPv6 table as plain code, after the Ethernet checks.
fn model6(prog: Prog, f: &[u8], w: &World) -> Expect {
    use Expect::Pass;
    if f.len() < IP + IPV6_LEN || f[IP] >> 4 != 6 {
        return Pass(reason::PASS_MALFORMED);
    }
    let plen = usize::from(u16::from_be_bytes([f[IP + 4], f[IP + 5]]));
    if IP + IPV6_LEN + plen > f.len() {
        return Pass(reason::PASS_MALFORMED);
    }
    let src: [u8; 16] = f[IP + 8..IP + 24].try_into().unwrap();
    let dst: [u8; 16] = f[IP + 24..IP + 40].try_into().unwrap();
    if Ipv6Addr::from(dst).is_multicast() {
        return Pass(reason::PASS_MULTICAST);
    }
    let never_forwarded = |a: [u8; 16]| {
        let a = Ipv6Addr::from(a);
        a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_unicast_link_local()
    };
    if never_forwarded(src) || never_forwarded(dst) {
        return Pass(reason::PASS_NOT_FWDED);
    }
    match f[IP + 6] {
        6 | 17 => {}
        58 => match f.get(IP + IPV6_LEN) {
            None => return Pass(reason::PASS_MALFORMED),
            Some(133..=137) => return Pass(reason::PASS_NOT_FWDED),
            Some(_) => {}
        },
        44 => return Pass(reason::PASS_FRAGMENT),
        _ => return Pass(reason::PASS_IP_OPTIONS),
    }
    let rpf = match prog {
        Prog::Egress => w.endpoint6(src).is_some(),
        _ => w.lpm6(src).is_some_and(|r| r.ifindex == w.uplink),
    };
    if !rpf {
        return Pass(reason::PASS_RPF);
    }
    if f[IP + 7] <= 1 {
        return Pass(reason::PASS_TTL);
    }
    let hop = w.lpm6(dst).map(|r| Hop {
        mtu: r.mtu,
        flags: r.flags,
        node_mac: r.node_mac,
        uplink_mac: r.uplink_mac,
    });
    forward_model(prog, IPV6_LEN + plen, w.endpoint6(dst), hop)
}

/// The conntrack gate: with it on, only flows conntrack has confirmed without NAT are
/// forwarded. Conntrack entries are made with `conntrack -I` in the test namespace, where the
/// programs' lookups run.
#[test]
fn conntrack_gate() {
    inside("gate", |world| {
        let mut progs = Programs::load(world, CONFIG_F_FIB_FALLBACK | CONFIG_F_XDP_TX);
        progs.attach_xdp();
        progs.set_state(STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6 | STATE_F_CT_GATE);
        let ct = |args: &str| {
            let mut cmd = world.ns.command("conntrack");
            cmd.args(["-I"]).args(args.split_whitespace());
            sh(&mut cmd);
        };
        let (e, i, x) = (Prog::Egress, Prog::Ingress, Prog::Xdp);
        let (port, up) = (world.port, world.uplink);
        let pass = Expect::Pass;
        let udp = |src, dst, sport: u16, dport: u16, dmac, smac| {
            let mut frame = Ipv4Frame::udp(dmac, smac, src, dst, 16);
            frame.payload[0..2].copy_from_slice(&sport.to_be_bytes());
            frame.payload[2..4].copy_from_slice(&dport.to_be_bytes());
            frame.bytes()
        };
        let tcp = |src, dst, sport: u16, dport: u16| {
            let mut frame = Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, src, dst, 0);
            frame.proto = 6;
            let mut header = vec![0u8; 20];
            header[0..2].copy_from_slice(&sport.to_be_bytes());
            header[2..4].copy_from_slice(&dport.to_be_bytes());
            header[12] = 5 << 4;
            header[13] = 0x10; // ACK
            frame.payload = header;
            frame.bytes()
        };

        // No entry yet: a flow's first packets go through netfilter.
        let rows: Vec<Row> = vec![
            (
                "gate: UDP without a conntrack entry",
                e,
                udp(POD, REMOTE, 40000, 5201, BRIDGE_MAC, POD_MAC),
                port,
                0,
                pass(reason::CT_NEW),
            ),
            (
                "gate: TCP without a conntrack entry",
                e,
                tcp(POD, REMOTE, 41000, 80),
                port,
                0,
                pass(reason::CT_NEW),
            ),
            (
                "gate: ICMP cannot be looked up",
                e,
                with(egress_frame, |f| {
                    f.proto = 1;
                }),
                port,
                0,
                pass(reason::CT_PROTO),
            ),
            (
                "gate: no L4 header to look up",
                e,
                with(egress_frame, |f| f.payload.clear()),
                port,
                0,
                pass(reason::PASS_MALFORMED),
            ),
            (
                "gate: xdp transit without an entry",
                x,
                udp(REMOTE, SMALL_MTU, 40000, 5201, UPLINK_MAC, NODE42_MAC),
                up,
                0,
                pass(reason::CT_NEW),
            ),
        ];
        check_rows(&progs, &rows);

        // Established without NAT: forwarded, in both directions, and counted as such.
        ct(
            "-p udp -s 10.1.79.3 -d 10.1.27.4 --sport 40000 --dport 5201 -t 120 -u SEEN_REPLY,ASSURED",
        );
        ct(
            "-p tcp -s 10.1.79.3 -d 10.1.27.4 --sport 41000 --dport 80 --state ESTABLISHED -t 120 -u SEEN_REPLY,ASSURED",
        );
        ct(
            "-p udp -s 10.1.27.4 -d 10.1.29.4 --sport 40000 --dport 5201 -t 120 -u SEEN_REPLY,ASSURED",
        );
        let gated = [
            (
                "gate: established UDP, original direction",
                e,
                udp(POD, REMOTE, 40000, 5201, BRIDGE_MAC, POD_MAC),
                port,
                fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            ),
            (
                "gate: established TCP",
                e,
                tcp(POD, REMOTE, 41000, 80),
                port,
                fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            ),
            (
                "gate: established UDP, reply direction",
                i,
                udp(REMOTE, POD, 5201, 40000, UPLINK_MAC, NODE42_MAC),
                up,
                fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC),
            ),
            (
                "gate: xdp transit, established",
                x,
                udp(REMOTE, SMALL_MTU, 40000, 5201, UPLINK_MAC, NODE42_MAC),
                up,
                fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
            ),
        ];
        for (name, prog, frame, ifindex, expect) in gated {
            progs.check_gated(name, prog, &frame, ifindex, expect);
            println!("  ok  {name:<64} {} + ct_established", verdict(expect));
        }

        // NAT: a service's DNAT (the reply comes back from the backend) and a masquerade.
        ct(
            "-p udp -s 10.1.79.3 -d 10.96.0.10 --sport 40001 --dport 53 -t 120 --dst-nat 10.1.27.4:5353",
        );
        ct(
            "-p udp -s 10.1.79.3 -d 10.1.27.4 --sport 40002 --dport 5201 -t 120 --src-nat 172.20.11.43",
        );
        let rows: Vec<Row> = vec![
            (
                "gate: reply of a DNATed flow (ClusterIP)",
                i,
                udp(REMOTE, POD, 5353, 40001, UPLINK_MAC, NODE42_MAC),
                up,
                0,
                pass(reason::CT_NAT),
            ),
            (
                "gate: SNATed flow (masquerade)",
                e,
                udp(POD, REMOTE, 40002, 5201, BRIDGE_MAC, POD_MAC),
                port,
                0,
                pass(reason::CT_NAT),
            ),
        ];
        check_rows(&progs, &rows);

        // IPv6 flows: the same gate, looked up with the IPv6 tuple.
        let udp6 = |src, dst, sport: u16, dport: u16, dmac, smac| {
            let mut frame = Ipv6Frame::udp(dmac, smac, src, dst, 16);
            frame.payload[0..2].copy_from_slice(&sport.to_be_bytes());
            frame.payload[2..4].copy_from_slice(&dport.to_be_bytes());
            frame.bytes()
        };
        let tcp6 = |src, dst, sport: u16, dport: u16| {
            let mut frame = Ipv6Frame::udp(BRIDGE_MAC, POD_MAC, src, dst, 0);
            frame.next = 6;
            let mut header = vec![0u8; 20];
            header[0..2].copy_from_slice(&sport.to_be_bytes());
            header[2..4].copy_from_slice(&dport.to_be_bytes());
            header[12] = 5 << 4;
            header[13] = 0x10; // ACK
            frame.payload = header;
            frame.bytes()
        };
        let rows: Vec<Row> = vec![
            (
                "gate6: UDP without an entry (its IPv4 twin has one)",
                e,
                udp6(POD6, REMOTE6, 40000, 5201, BRIDGE_MAC, POD_MAC),
                port,
                0,
                pass(reason::CT_NEW),
            ),
            (
                "gate6: TCP without a conntrack entry",
                e,
                tcp6(POD6, REMOTE6, 41000, 80),
                port,
                0,
                pass(reason::CT_NEW),
            ),
            (
                "gate6: ICMPv6 cannot be looked up",
                e,
                Ipv6Frame::icmp(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 128).bytes(),
                port,
                0,
                pass(reason::CT_PROTO),
            ),
            (
                "gate6: no L4 header to look up",
                e,
                with6(egress6, |f| f.payload.clear()),
                port,
                0,
                pass(reason::PASS_MALFORMED),
            ),
            (
                "gate6: xdp transit without an entry",
                x,
                udp6(REMOTE6, SMALL_MTU6, 40000, 5201, UPLINK_MAC, NODE42_MAC),
                up,
                0,
                pass(reason::CT_NEW),
            ),
        ];
        check_rows(&progs, &rows);
        ct(
            "-p udp -s fd00:10:1:79::3 -d fd00:10:1:27::4 --sport 40000 --dport 5201 -t 120 -u SEEN_REPLY,ASSURED",
        );
        ct(
            "-p tcp -s fd00:10:1:79::3 -d fd00:10:1:27::4 --sport 41000 --dport 80 --state ESTABLISHED -t 120 -u SEEN_REPLY,ASSURED",
        );
        ct(
            "-p udp -s fd00:10:1:27::4 -d fd00:10:1:29::4 --sport 40000 --dport 5201 -t 120 -u SEEN_REPLY,ASSURED",
        );
        let gated = [
            (
                "gate6: established UDP, original direction",
                e,
                udp6(POD6, REMOTE6, 40000, 5201, BRIDGE_MAC, POD_MAC),
                port,
                fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            ),
            (
                "gate6: established TCP",
                e,
                tcp6(POD6, REMOTE6, 41000, 80),
                port,
                fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            ),
            (
                "gate6: established UDP, reply direction",
                i,
                udp6(REMOTE6, POD6, 5201, 40000, UPLINK_MAC, NODE42_MAC),
                up,
                fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC),
            ),
            (
                "gate6: xdp transit, established",
                x,
                udp6(REMOTE6, SMALL_MTU6, 40000, 5201, UPLINK_MAC, NODE42_MAC),
                up,
                fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
            ),
        ];
        for (name, prog, frame, ifindex, expect) in gated {
            progs.check_gated(name, prog, &frame, ifindex, expect);
            println!("  ok  {name:<64} {} + ct_established", verdict(expect));
        }
        ct(
            "-p udp -s fd00:10:1:79::3 -d fd00:10:1:27::4 --sport 40002 --dport 5201 -t 120 --src-nat fd00:172:20:11::43",
        );
        check_rows(
            &progs,
            &[(
                "gate6: SNATed flow (masquerade)",
                e,
                udp6(POD6, REMOTE6, 40002, 5201, BRIDGE_MAC, POD_MAC),
                port,
                0,
                pass(reason::CT_NAT),
            )],
        );

        // The gate off: the same NATed flow would take the fast path.
        progs.set_state(STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6);
        check_rows(
            &progs,
            &[(
                "gate off: the DNATed reply is forwarded (what the gate prevents)",
                i,
                udp(REMOTE, POD, 5353, 40001, UPLINK_MAC, NODE42_MAC),
                up,
                0,
                fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC),
            )],
        );
    });
}

/// Collects `log` records.
#[derive(Default, Clone)]
struct Records(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl log::Log for Records {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

/// The programs' log records reach userspace through aya-log, and the kernel side limits them:
/// a flood of failing conntrack lookups (made to fail here with a wrong options size) yields a
/// burst of at most ten records per CPU, not one per packet.
#[test]
fn kernel_log_records_are_rate_limited() {
    inside("klog", |world| {
        let mut cfg = world.config(CONFIG_F_FIB_FALLBACK);
        cfg.ct_opts_size = 8; // the kernel answers EINVAL
        let mut progs = Programs::load_with(world, cfg);
        progs.set_state(STATE_F_FORWARD_V4 | STATE_F_CT_GATE);
        let records = Records::default();
        let mut logger = aya_log::EbpfLogger::init_with_logger(&mut progs.ebpf, records.clone())
            .expect("the object has a log buffer");
        // Each CPU the runs land on has its own budget, refilled by one every 100 ms.
        let runs = 200;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            let got = progs.run(Prog::Egress, &egress_frame().bytes(), world.port, 0);
            assert_eq!(
                got.map(|g| g.0),
                Some(TC_ACT_OK),
                "a failed lookup passes the packet"
            );
        }
        logger.flush();
        let got = records.0.lock().unwrap().clone();
        println!(
            "{} records for {runs} failed lookups: {:?}",
            got.len(),
            got.first()
        );
        assert!(!got.is_empty(), "no log record reached userspace");
        assert!(
            got.iter()
                .all(|r| r.starts_with("WARN conntrack lookup failed with error -22")),
            "{got:?}"
        );
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let refills = (start.elapsed().as_millis() / 100) as usize + 1;
        assert!(
            got.len() <= (10 + refills) * cpus,
            "{} records for {runs} lookups: the kernel did not limit them",
            got.len()
        );
    });
}
