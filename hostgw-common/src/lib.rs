//! Types shared by the hostgw eBPF programs and the agent: map names, map keys and values,
//! counter ids and the read-only configuration the loader hands to the programs.
//!
//! Everything here crosses the kernel/userspace boundary, so every type is `#[repr(C)]`,
//! `Copy`, made of fixed-width fields with explicit padding, and has its size asserted beside
//! it. IPv4 and IPv6 are siblings: each family has its own trie and endpoint table with the
//! same shape, differing only in the address width. Addresses are stored in network byte order
//! (as `[u8; N]`), which is also the order an LPM trie compares them in.
#![no_std]

pub mod counters;

use core::mem::size_of;

/// Names of the maps and programs in the eBPF object, as the loader, the pins and `bpftool`
/// see them. Kernel object names are limited to 15 characters.
pub mod names {
    /// LPM trie: remote pod CIDR (IPv4) → [`crate::RouteV4`].
    pub const ROUTES_V4: &str = "ROUTES_V4";
    /// LPM trie: remote pod CIDR (IPv6) → [`crate::RouteV6`].
    pub const ROUTES_V6: &str = "ROUTES_V6";
    /// Hash: local pod IPv4 address → [`crate::Endpoint`].
    pub const ENDPOINTS_V4: &str = "ENDPOINTS_V4";
    /// Hash: local pod IPv6 address → [`crate::Endpoint`].
    pub const ENDPOINTS_V6: &str = "ENDPOINTS_V6";
    /// Per-CPU array of [`crate::Counter`], indexed by [`crate::counters::index`].
    pub const STATS: &str = "STATS";
    /// Array of one [`crate::State`]: node state the agent keeps current (forwarding on/off).
    pub const STATE: &str = "STATE";
    /// Read-only global holding [`crate::Config`].
    pub const CONFIG: &str = "CONFIG";
    /// Hash: interface index → `HOOK_F_*` flags, for the interfaces whose tc hooks hostgw
    /// shares with other tc users.
    pub const HOOKS: &str = "HOOKS";

    /// Every map the agent pins, in a stable order.
    pub const PINNED_MAPS: [&str; 7] = [
        ROUTES_V4,
        ROUTES_V6,
        ENDPOINTS_V4,
        ENDPOINTS_V6,
        STATS,
        STATE,
        HOOKS,
    ];

    /// TC classifier on every bridge port's ingress (pod → remote pod) and on the bridge device
    /// itself as the catch-all.
    pub const PROG_EGRESS: &str = "hostgw_egress";
    /// TC classifier on the uplink's ingress (remote node → local pod).
    pub const PROG_INGRESS: &str = "hostgw_ingress";
    /// XDP program on the uplink (remote node → local pod, before an skb exists).
    pub const PROG_XDP: &str = "hostgw_xdp";
}

/// Capacity of the route tries: pod CIDRs of remote nodes.
pub const MAX_ROUTES: u32 = 16_384;
/// Capacity of the endpoint tables: pods on this node.
pub const MAX_ENDPOINTS: u32 = 4_096;
/// Capacity of the hooks map: the uplink, the bridge and every port.
pub const MAX_HOOKS: u32 = MAX_ENDPOINTS + 2;

/// Set in the `HOOKS` entry of an interface whose TC ingress has other users (filters of
/// other kinds or priorities, tcx programs not hostgw's): the program there hands every packet
/// on (`pass_tc_shared`), so that they see it as on the kernel path, and XDP on that interface
/// leaves everything to TC.
pub const HOOK_F_SHARED_INGRESS: u32 = 1 << 0;
/// Set in the `HOOKS` entry of a bridge port with its own egress (a root qdisc other than
/// `noqueue`, egress filters or tcx programs; the CNI bandwidth plugin's `tbf`): deliveries to
/// its pod leave through the port (`bpf_redirect`), not straight into the pod
/// (`bpf_redirect_peer`, which skips the port's egress).
pub const HOOK_F_PORT_EGRESS: u32 = 1 << 1;

/// Set in [`RouteV4::flags`]/[`RouteV6::flags`] when `node_mac` holds the next hop's resolved
/// MAC address; without it the programs ask the kernel (FIB lookup / neighbour redirect).
pub const ROUTE_F_RESOLVED: u32 = 1 << 0;
/// Set in [`RouteV4::flags`]/[`RouteV6::flags`] when the kernel would not simply take this
/// route for every address in the CIDR (it has a more specific route inside it, or a route
/// for it that is not hostgw's): the programs ask the FIB, which knows.
pub const ROUTE_F_FIB: u32 = 1 << 1;

/// The value of a [`names::ROUTES_V4`] entry: how to reach a remote node's pod CIDR.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RouteV4 {
    /// The remote node's address, the next hop (network byte order).
    pub node_ip: [u8; 4],
    /// Interface to send on (the uplink).
    pub ifindex: u32,
    /// MTU of that interface; larger packets go to the stack.
    pub mtu: u32,
    /// `ROUTE_F_*` bits.
    pub flags: u32,
    /// The remote node's MAC address: the new destination MAC.
    pub node_mac: [u8; 6],
    /// The uplink's MAC address: the new source MAC.
    pub uplink_mac: [u8; 6],
}
const _: () = assert!(size_of::<RouteV4>() == 28);

/// The value of a [`names::ROUTES_V6`] entry: [`RouteV4`]'s IPv6 sibling.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RouteV6 {
    /// The remote node's address, the next hop (network byte order).
    pub node_ip: [u8; 16],
    /// Interface to send on (the uplink).
    pub ifindex: u32,
    /// MTU of that interface; larger packets go to the stack.
    pub mtu: u32,
    /// `ROUTE_F_*` bits.
    pub flags: u32,
    /// The remote node's MAC address: the new destination MAC.
    pub node_mac: [u8; 6],
    /// The uplink's MAC address: the new source MAC.
    pub uplink_mac: [u8; 6],
}
const _: () = assert!(size_of::<RouteV6>() == 40);

/// The value of an endpoint table entry: a pod on this node.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// The host end of the pod's veth (a bridge port).
    pub ifindex: u32,
    /// The pod's MAC address: the new destination MAC.
    pub mac: [u8; 6],
    /// Explicit padding, always zero.
    pub pad: [u8; 2],
}
const _: () = assert!(size_of::<Endpoint>() == 12);

/// A packet and byte counter; one per CPU per [`counters::index`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

/// Set in [`Config::flags`]: on a miss, ask the kernel FIB and forward on its answer.
pub const CONFIG_F_FIB_FALLBACK: u32 = 1 << 0;
/// Set in [`Config::flags`]: the uplink can send frames with `XDP_TX` (the XDP program then
/// forwards transit traffic itself; otherwise it leaves it to the TC hook).
pub const CONFIG_F_XDP_TX: u32 = 1 << 1;

/// Set in [`Config::flags`]: the kernel has `bpf_ct_change_timeout`, so the conntrack gate
/// refreshes fast-pathed flows' entries itself; without, such packets go through the stack.
pub const CONFIG_F_CT_TIMEOUT: u32 = 1 << 2;

/// Read-only configuration the loader writes into the [`names::CONFIG`] global before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// `CONFIG_F_*` bits.
    pub flags: u32,
    /// The uplink's ifindex.
    pub uplink_ifindex: u32,
    /// The bridge's ifindex.
    pub bridge_ifindex: u32,
    /// Offset of `status` in the kernel's `struct nf_conn` (from its BTF), for the
    /// conntrack gate.
    pub ct_status_off: u32,
    /// Size of the kernel's `struct bpf_ct_opts` (12 or 16 bytes depending on the kernel).
    pub ct_opts_size: u32,
    /// Offset of `timeout` (`u32`, in jiffies) in `struct nf_conn`.
    pub ct_timeout_off: u32,
    /// Offset of `proto.tcp.state` (`u8`, `enum tcp_conntrack`) in `struct nf_conn`.
    pub ct_tcp_state_off: u32,
    /// Explicit padding, always zero.
    pub pad: u32,
}
const _: () = assert!(size_of::<Config>() == 32);

/// Set in [`State::flags`] while the conntrack gate is on: only flows conntrack has confirmed
/// without NAT are forwarded by the programs.
pub const STATE_F_CT_GATE: u32 = 1 << 2;
/// Set in [`State::flags`] while the node has policy routing rules beyond the defaults:
/// routed traffic takes the stack, which applies them (`pass_policy`).
pub const STATE_F_POLICY: u32 = 1 << 3;
/// Set in [`State::flags`] while the node has xfrm (`IPsec`) policies: routed traffic takes the
/// stack, which applies them (`pass_xfrm`).
pub const STATE_F_XFRM: u32 = 1 << 4;

/// Placeholder call targets for the conntrack kfuncs. The programs call these as if they were
/// helpers; before loading, the agent rewrites each such call into a kfunc call to the
/// function's BTF id in the running kernel (or into `r0 = 0` where the kernel lacks it).
pub mod kfunc {
    /// `bpf_skb_ct_lookup`.
    pub const SKB_CT_LOOKUP: u32 = 0x7e57_0001;
    /// `bpf_xdp_ct_lookup`.
    pub const XDP_CT_LOOKUP: u32 = 0x7e57_0002;
    /// `bpf_ct_release`.
    pub const CT_RELEASE: u32 = 0x7e57_0003;
    /// `bpf_ct_change_timeout` (Linux 6.0).
    pub const CT_CHANGE_TIMEOUT: u32 = 0x7e57_0004;
    /// Every placeholder the gate needs with the kernel function it stands for.
    pub const ALL: [(u32, &str); 3] = [
        (SKB_CT_LOOKUP, "bpf_skb_ct_lookup"),
        (XDP_CT_LOOKUP, "bpf_xdp_ct_lookup"),
        (CT_RELEASE, "bpf_ct_release"),
    ];
    /// Placeholders the gate uses where the kernel has them ([`super::CONFIG_F_CT_TIMEOUT`]).
    pub const OPTIONAL: [(u32, &str); 1] = [(CT_CHANGE_TIMEOUT, "bpf_ct_change_timeout")];
}

/// Set in [`State::flags`] while IPv4 forwarding is enabled on the node (the bridge's and the
/// uplink's `net.ipv4.conf.<dev>.forwarding`). Clear, the programs forward nothing.
pub const STATE_F_FORWARD_V4: u32 = 1 << 0;
/// Set in [`State::flags`] while IPv6 forwarding is enabled on the node.
pub const STATE_F_FORWARD_V6: u32 = 1 << 1;

/// The only entry of the [`names::STATE`] map: what the agent knows about the node that can
/// change at run time. All zero (the state before the agent writes it) forwards nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct State {
    /// `STATE_F_*` bits.
    pub flags: u32,
    /// The bridge's MAC address: routed frames from pods are addressed to it, and it is the
    /// source MAC of frames delivered to local pods.
    pub bridge_mac: [u8; 6],
    /// The uplink's MAC address: routed frames from other nodes are addressed to it.
    pub uplink_mac: [u8; 6],
    /// Conntrack's timeouts, for the gate's refresh of fast-pathed flows' entries.
    pub ct: CtTimeouts,
    /// The smallest MTU set on a route of the main table that is not hostgw's (0: none). The
    /// kernel's forwarding honours a route's MTU but the FIB lookup for BPF does not, so on
    /// the FIB fallback a packet (or GSO segment) larger than this goes to the stack.
    pub fib_mtu: u32,
    /// Explicit padding, always zero.
    pub pad: u32,
}
const _: () = assert!(size_of::<State>() == 48);

/// How the conntrack gate keeps a fast-pathed flow's entry as the kernel path would: the
/// entry's timeout is set as conntrack would set it for the packets it no longer sees.
/// Timeouts are in milliseconds, as `bpf_ct_change_timeout` takes them (0: unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtTimeouts {
    /// An entry expiring within this many jiffies is refreshed (half the shortest timeout of
    /// an established flow, so that a flow with a packet at least that often never expires;
    /// 0: never).
    pub refresh: u32,
    /// `nf_conntrack_tcp_timeout_established`: a TCP connection's packets.
    pub tcp_established: u32,
    /// `nf_conntrack_tcp_timeout_time_wait`: after a FIN, the longest a closing connection
    /// stays.
    pub tcp_time_wait: u32,
    /// `nf_conntrack_tcp_timeout_close`: after an RST.
    pub tcp_close: u32,
    /// `nf_conntrack_udp_timeout`: a UDP flow seen both ways but not (yet) a stream.
    pub udp: u32,
    /// `nf_conntrack_udp_timeout_stream`: an assured UDP flow.
    pub udp_stream: u32,
}
const _: () = assert!(size_of::<CtTimeouts>() == 24);

#[cfg(feature = "user")]
mod user {
    use super::{Config, Counter, Endpoint, RouteV4, RouteV6, State};

    // SAFETY: each type is repr(C), Copy, made of integers and byte arrays with explicit
    // padding fields, so every bit pattern is valid and there are no implicit padding bytes.
    unsafe impl aya::Pod for RouteV4 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RouteV6 {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Counter {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for State {}
}
