//! The maps the programs share with the agent. Their names are [`hostgw_common::names`]; all are
//! BTF-defined so `bpftool map dump` prints typed keys and values.

use aya_ebpf::{
    Global,
    btf_maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    macros::btf_map,
};
use hostgw_common::{
    Config, Counter, CtTimeouts, Endpoint, MAX_ENDPOINTS, MAX_HOOKS, MAX_ROUTES, RouteV4, RouteV6,
    State,
    counters::{STATS_LEN, index},
};

/// Remote pod CIDR (IPv4) → next hop.
#[btf_map]
pub static ROUTES_V4: LpmTrie<[u8; 4], RouteV4, { MAX_ROUTES as usize }> = LpmTrie::new();

/// Remote pod CIDR (IPv6) → next hop.
#[btf_map]
pub static ROUTES_V6: LpmTrie<[u8; 16], RouteV6, { MAX_ROUTES as usize }> = LpmTrie::new();

/// Local pod IPv4 address → its veth and MAC.
#[btf_map]
pub static ENDPOINTS_V4: HashMap<[u8; 4], Endpoint, { MAX_ENDPOINTS as usize }> = HashMap::new();

/// Local pod IPv6 address → its veth and MAC.
#[btf_map]
pub static ENDPOINTS_V6: HashMap<[u8; 16], Endpoint, { MAX_ENDPOINTS as usize }> = HashMap::new();

/// Per-CPU packet and byte counters by family, hook and reason.
#[btf_map]
pub static STATS: PerCpuArray<Counter, { STATS_LEN as usize }> = PerCpuArray::new();

/// Node state the agent keeps current.
#[btf_map]
pub static STATE: Array<State, 1> = Array::new();

/// Interface index → `HOOK_F_*`: the hooks hostgw shares with other tc users.
#[btf_map]
pub static HOOKS: HashMap<u32, u32, { MAX_HOOKS as usize }> = HashMap::new();

/// Read-only configuration written by the loader.
#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config {
    flags: 0,
    uplink_ifindex: 0,
    bridge_ifindex: 0,
    ct_status_off: 0,
    ct_opts_size: 0,
    ct_timeout_off: 0,
    ct_tcp_state_off: 0,
    pad: 0,
});

/// Adds one packet of `len` bytes to the `(family, hook, reason)` counter of this CPU.
#[inline(always)]
pub fn count(family: u32, hook: u32, reason: u32, len: u32) {
    if let Some(c) = STATS.get_ptr_mut(index(family, hook, reason)) {
        // SAFETY: the pointer comes from a successful per-CPU lookup, so it is valid, and only
        // this CPU writes to it while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(len);
        }
    }
}

/// The state before the agent writes one: forward nothing.
static NO_STATE: State = State {
    flags: 0,
    bridge_mac: [0; 6],
    uplink_mac: [0; 6],
    ct: CtTimeouts {
        refresh: 0,
        tcp_established: 0,
        tcp_time_wait: 0,
        tcp_close: 0,
        udp: 0,
        udp_stream: 0,
    },
    fib_mtu: 0,
    pad: 0,
};

/// The node state, read in place (it is not copied onto the program's small stack); all zero
/// (forward nothing) when the entry cannot be read.
#[inline(always)]
pub fn state() -> &'static State {
    STATE.get(0).unwrap_or(&NO_STATE)
}

/// The `HOOK_F_*` flags of interface `ifindex` (none for most).
#[inline(always)]
pub fn hook_flags(ifindex: u32) -> u32 {
    // SAFETY: a u32 copied out at once.
    HOOKS.get_ptr(ifindex).map_or(0, |p| unsafe { *p })
}

/// The longest remote pod CIDR containing `addr`.
#[inline(always)]
pub fn route_v4(addr: [u8; 4]) -> Option<RouteV4> {
    ROUTES_V4.get(&Key::new(32, addr)).copied()
}

/// The local pod with address `addr`.
#[inline(always)]
pub fn endpoint_v4(addr: [u8; 4]) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once; the agent replaces entries whole, so a copy is
    // a consistent snapshot of one entry.
    ENDPOINTS_V4.get_ptr(addr).map(|p| unsafe { *p })
}

/// The longest remote pod CIDR containing the IPv6 address `addr`, in place in the map (a
/// copy would cost stack the IPv6 path does not have to spare).
#[inline(always)]
pub fn route_v6(addr: &[u8; 16]) -> Option<&'static RouteV6> {
    ROUTES_V6.get(&Key::new(128, *addr))
}

/// The local pod with IPv6 address `addr`.
#[inline(always)]
pub fn endpoint_v6(addr: &[u8; 16]) -> Option<Endpoint> {
    // SAFETY: as for `endpoint_v4`.
    ENDPOINTS_V6.get_ptr(*addr).map(|p| unsafe { *p })
}
