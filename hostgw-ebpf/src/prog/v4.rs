//! The IPv4 forwarding decision: what the kernel's routing would do with a packet, decided from
//! the maps, or "hand it to the stack" whenever that cannot be proven.
//!
//! The decision only reads the packet; [`super::apply`] does the rewrite and the redirect.
//! Checks run in the kernel's order (header validity, forwarding enabled, reverse path, TTL,
//! route, MTU), so the pass reason counted is the one the kernel would have acted on.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup,
    },
    helpers::generated::bpf_fib_lookup as fib_lookup,
    programs::TcContext,
};
use hostgw_common::{
    CONFIG_F_FIB_FALLBACK, CONFIG_F_XDP_TX, Config, ROUTE_F_FIB, ROUTE_F_RESOLVED, RouteV4,
    STATE_F_FORWARD_V4, STATE_F_POLICY, STATE_F_XFRM, State,
    counters::{hook, reason},
};

use super::{
    action::{Action, Nexthop, gated},
    ct,
    maps::{endpoint_v4, route_v4},
    parse::{self, Hook, Ipv4},
};

/// `AF_INET`.
const AF_INET: u8 = 2;

/// The checks every forwarded packet passes: a plain IPv4 unicast packet addressed to
/// `router_mac`, forwarding on, a source `rpf` accepts, TTL > 1.
#[inline(always)]
fn forwardable<H: Hook>(
    h: &H,
    state: &State,
    router_mac: &[u8; 6],
    rpf: impl FnOnce(&Ipv4) -> bool,
) -> Result<Ipv4, u32> {
    let ip = parse::ipv4(h, router_mac).map_err(parse::Unfit::reason)?;
    if state.flags & STATE_F_FORWARD_V4 == 0 {
        return Err(reason::PASS_FWD_DISABLED);
    }
    // xfrm policies and policy rules apply before and during routing: the stack's.
    if state.flags & STATE_F_XFRM != 0 {
        return Err(reason::PASS_XFRM);
    }
    if state.flags & STATE_F_POLICY != 0 {
        return Err(reason::PASS_POLICY);
    }
    if !rpf(&ip) {
        return Err(reason::PASS_RPF);
    }
    if ip.ttl <= 1 {
        return Err(reason::PASS_TTL);
    }
    Ok(ip)
}

/// Whether the source of a packet from the uplink routes back through the interface it came
/// in on (strict reverse-path check against the route trie).
#[inline(always)]
fn rpf_uplink<H: Hook>(h: &H, ip: &Ipv4) -> bool {
    route_v4(ip.src).is_some_and(|r| r.ifindex == h.ingress_ifindex())
}

/// Whether the packet, or each of its GSO segments, fits the MTU of `ifindex` and `limit`
/// (a route's own MTU; 0 for none).
#[inline(always)]
fn fits<H: Hook>(h: &H, ip: &Ipv4, ifindex: u32, limit: u32) -> bool {
    match parse::segment_len(h, ip) {
        Some(len) => (limit == 0 || len <= limit) && h.fits_mtu(ifindex, len),
        None => false,
    }
}

/// Forwarding along a route from the trie.
#[inline(always)]
fn via_route<H: Hook>(h: &H, ip: &Ipv4, route: &RouteV4, why: u32) -> Action {
    if !fits(h, ip, route.ifindex, route.mtu) {
        return Action::Pass(reason::PASS_MTU);
    }
    if route.flags & ROUTE_F_RESOLVED == 0 {
        return Action::Neigh {
            ifindex: route.ifindex,
            nh: Nexthop::V4(route.node_ip),
        };
    }
    Action::Redirect {
        reason: why,
        ifindex: route.ifindex,
        dmac: route.node_mac,
        smac: route.uplink_mac,
    }
}

/// TC on a bridge port or the bridge: a packet a pod sends.
#[inline(always)]
pub fn egress(ctx: &TcContext, h: &impl Hook, cfg: &Config, state: &State) -> Action {
    // Reverse path: the source is a pod of this node. The kernel's rp_filter only asks for an
    // address routed via the bridge; anything it would accept that we do not know yet simply
    // takes the stack.
    let ip = match forwardable(h, state, &state.bridge_mac, |ip| {
        endpoint_v4(ip.src).is_some()
    }) {
        Ok(ip) => ip,
        Err(why) => return Action::Pass(why),
    };
    let action = match route_v4(ip.dst) {
        Some(route) if route.flags & ROUTE_F_FIB == 0 => {
            via_route(h, &ip, &route, reason::FAST_EGRESS)
        }
        // The kernel routes a pod's packet as received on the bridge, not on its port: ask
        // the FIB as the bridge (forwarding setting, `iif` policy rules).
        _ => fib(ctx, h, cfg.bridge_ifindex, &ip, (cfg, state)),
    };
    gated(action, || {
        ct::gate_v4(
            h,
            ctx.as_ptr(),
            ct::Kind::Skb,
            hook::EGRESS,
            &ip,
            cfg,
            state,
        )
    })
}

/// TC on the uplink: a packet from another node.
#[inline(always)]
pub fn ingress(ctx: &TcContext, h: &impl Hook, cfg: &Config, state: &State) -> Action {
    let ip = match forwardable(h, state, &state.uplink_mac, |ip| rpf_uplink(h, ip)) {
        Ok(ip) => ip,
        Err(why) => return Action::Pass(why),
    };
    let action = if let Some(ep) = endpoint_v4(ip.dst) {
        if fits(h, &ip, ep.ifindex, 0) {
            Action::Peer {
                ifindex: ep.ifindex,
                dmac: ep.mac,
                smac: state.bridge_mac,
            }
        } else {
            Action::Pass(reason::PASS_MTU)
        }
    } else {
        match route_v4(ip.dst) {
            Some(route) if route.flags & ROUTE_F_FIB == 0 => {
                via_route(h, &ip, &route, reason::FAST_TRANSIT)
            }
            _ => fib(ctx, h, h.ingress_ifindex(), &ip, (cfg, state)),
        }
    };
    gated(action, || {
        ct::gate_v4(
            h,
            ctx.as_ptr(),
            ct::Kind::Skb,
            hook::INGRESS_TC,
            &ip,
            cfg,
            state,
        )
    })
}

/// XDP on the uplink: transit traffic for another node's pods goes straight back out with
/// `XDP_TX` when the uplink can send XDP frames; everything else is left to the TC hook.
#[inline(always)]
pub fn ingress_xdp(
    h: &impl Hook,
    ctx: *mut core::ffi::c_void,
    cfg: &Config,
    state: &State,
) -> Action {
    let ip = match forwardable(h, state, &state.uplink_mac, |ip| rpf_uplink(h, ip)) {
        Ok(ip) => ip,
        Err(why) => return Action::Pass(why),
    };
    if cfg.flags & CONFIG_F_XDP_TX == 0 || endpoint_v4(ip.dst).is_some() {
        return Action::Pass(reason::HANDOFF_TC);
    }
    let action = match route_v4(ip.dst) {
        Some(route)
            if route.ifindex == h.ingress_ifindex()
                && route.flags & ROUTE_F_RESOLVED != 0
                && route.flags & ROUTE_F_FIB == 0 =>
        {
            via_route(h, &ip, &route, reason::FAST_TRANSIT)
        }
        _ => Action::Pass(reason::HANDOFF_TC),
    };
    gated(action, || {
        ct::gate_v4(h, ctx, ct::Kind::Xdp, hook::INGRESS_XDP, &ip, cfg, state)
    })
}

/// A miss in the maps: ask the kernel's FIB, as a packet received on `iif`, when the fallback
/// is on.
#[inline(always)]
fn fib(
    ctx: &TcContext,
    h: &impl Hook,
    iif: u32,
    ip: &Ipv4,
    (cfg, state): (&Config, &State),
) -> Action {
    if cfg.flags & CONFIG_F_FIB_FALLBACK == 0 {
        return Action::Pass(reason::PASS_NO_ROUTE);
    }
    // The length of what will leave (each segment of a GSO packet): the lookup checks it
    // against the egress device's MTU (or a locked route MTU, or a PMTU exception). A route's
    // own MTU it does not check, which the kernel's forwarding honours: the agent says how
    // small the smallest is, and larger packets take the stack.
    let Some(seg) = parse::segment_len(h, ip) else {
        return Action::Pass(reason::PASS_MTU);
    };
    if state.fib_mtu != 0 && seg > state.fib_mtu {
        return Action::Pass(reason::PASS_MTU);
    }
    // SAFETY: bpf_fib_lookup is plain data; all-zero is a valid value.
    let mut p: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = ip.proto;
    p.__bindgen_anon_1.tot_len = seg as u16;
    p.__bindgen_anon_2.tos = ip.tos;
    p.ifindex = iif;
    p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(ip.src);
    p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(ip.dst);
    // SAFETY: `p` is a valid, fully initialised lookup structure of the size passed.
    let rc = unsafe {
        fib_lookup(
            ctx.as_ptr(),
            &raw mut p,
            size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    match rc as u32 {
        // Back out of the bridge it came in on: the kernel forwards it with an ICMP redirect
        // (a pod reaching a pod of its own node through the gateway); the stack's to do.
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH
            if iif == cfg.bridge_ifindex && p.ifindex == iif =>
        {
            Action::Pass(reason::PASS_HAIRPIN)
        }
        // A pod address nobody answers for: the kernel's neighbour code sends "host
        // unreachable" after its timeout, bpf_redirect_neigh would stay silent.
        BPF_FIB_LKUP_RET_NO_NEIGH if p.ifindex == cfg.bridge_ifindex => {
            Action::Pass(reason::PASS_UNRESOLVED)
        }
        BPF_FIB_LKUP_RET_SUCCESS => Action::Redirect {
            reason: reason::FIB_FORWARD,
            ifindex: p.ifindex,
            dmac: p.dmac,
            smac: p.smac,
        },
        BPF_FIB_LKUP_RET_NO_NEIGH => Action::Neigh {
            ifindex: p.ifindex,
            // SAFETY: for IPv4 lookups the kernel writes the next hop into `ipv4_dst`.
            nh: Nexthop::V4(unsafe { p.__bindgen_anon_4.ipv4_dst }.to_ne_bytes()),
        },
        BPF_FIB_LKUP_RET_NOT_FWDED => Action::Pass(reason::PASS_NOT_FWDED),
        BPF_FIB_LKUP_RET_FWD_DISABLED => Action::Pass(reason::PASS_FWD_DISABLED),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Action::Pass(reason::PASS_MTU),
        _ => Action::Pass(reason::PASS_NO_ROUTE),
    }
}
