//! Program entry points: each reads its context into a [`parse::Hook`], tells the frame's
//! family by its `EtherType` ([`parse::family`]), asks [`v4`] what to do with IPv4, and
//! [`apply`]s the answer. Other frames, IPv6 among them until its path exists, are counted and
//! passed here. Every counter carries the family, so IPv4 and IPv6 traffic can be told apart.
//!
//! Which hook does what, and why:
//!
//! - `hostgw_egress`, TC ingress of every bridge port (the host end of each pod's veth) and of
//!   the bridge device as a catch-all: pod → remote pod, rewritten and redirected to the
//!   uplink. On the port the bridge is never traversed: a prototype measured on this kind of
//!   machine 2.78× the kernel path per core, against 1.37× for the same program on the bridge
//!   (`cargo xtask bench` measures this implementation).
//! - `hostgw_ingress`, TC ingress of the uplink: remote node → local pod, delivered with
//!   `bpf_redirect_peer` straight into the pod's namespace (the prototype: 2.69×). It also
//!   forwards transit traffic and does the FIB fallback, which needs an skb.
//! - `hostgw_xdp`, XDP on the uplink: only transit traffic (another node's pod CIDR arriving
//!   on the uplink) is sent back out with `XDP_TX`, and only when the agent says the uplink
//!   can transmit XDP frames. Local delivery stays in TC: an XDP redirect into a pod's veth
//!   measured slower in the prototype (2.34×) and needs NAPI on the pod's side of the veth, which is the pod's
//!   namespace and not ours to configure; without it the kernel drops the frame.
//!
//! Every error path and every unproven case ends in "hand to the stack unchanged".
#![expect(
    clippy::needless_pass_by_value,
    reason = "the program macros hand the context over by value"
)]

mod ct;
mod hooks;
mod log;
mod maps;
mod parse;
mod v4;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{TC_ACT_OK, bpf_redir_neigh, xdp_action},
    helpers::generated::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use hostgw_common::counters::{family, hook, reason};

use self::{
    hooks::{Tc, Xdp},
    maps::{CONFIG, count, state},
    parse::{Hook, rewrite_v4},
    v4::Action,
};

/// `AF_INET`, as `bpf_redir_neigh` wants it.
const AF_INET: u32 = 2;

/// TC, ingress of every bridge port and of the bridge device: pod → remote pod.
#[classifier]
pub fn hostgw_egress(ctx: TcContext) -> i32 {
    let cfg = CONFIG.load();
    let tc = Tc(&ctx);
    let state = state();
    match parse::family(&tc) {
        family::IPV4 => apply(&tc, hook::EGRESS, v4::egress(&ctx, &tc, &cfg, &state)),
        f => {
            count_other(&tc, f, hook::EGRESS, &state.bridge_mac);
            TC_ACT_OK
        }
    }
}

/// TC, ingress of the uplink: remote node → local pod, transit, FIB fallback.
#[classifier]
pub fn hostgw_ingress(ctx: TcContext) -> i32 {
    let cfg = CONFIG.load();
    let tc = Tc(&ctx);
    let state = state();
    match parse::family(&tc) {
        family::IPV4 => apply(&tc, hook::INGRESS_TC, v4::ingress(&ctx, &tc, &cfg, &state)),
        f => {
            count_other(&tc, f, hook::INGRESS_TC, &state.uplink_mac);
            TC_ACT_OK
        }
    }
}

/// XDP on the uplink: transit with `XDP_TX`; everything else to the TC hook.
#[xdp]
pub fn hostgw_xdp(ctx: XdpContext) -> u32 {
    let cfg = CONFIG.load();
    let x = Xdp(&ctx);
    let len = x.len();
    let state = state();
    let f = parse::family(&x);
    if f != family::IPV4 {
        count_other(&x, f, hook::INGRESS_XDP, &state.uplink_mac);
        return xdp_action::XDP_PASS;
    }
    match v4::ingress_xdp(&x, ctx.as_ptr(), &cfg, &state) {
        Action::Redirect {
            reason,
            ifindex,
            dmac,
            smac,
        } if ifindex == x.ingress_ifindex() => {
            if !rewrite_v4(&x, Some((&dmac, &smac))) {
                count(family::IPV4, hook::INGRESS_XDP, reason::PASS_MALFORMED, len);
                return xdp_action::XDP_PASS;
            }
            count(family::IPV4, hook::INGRESS_XDP, reason, len);
            xdp_action::XDP_TX
        }
        Action::Pass(why) => {
            count(family::IPV4, hook::INGRESS_XDP, why, len);
            xdp_action::XDP_PASS
        }
        _ => {
            count(family::IPV4, hook::INGRESS_XDP, reason::HANDOFF_TC, len);
            xdp_action::XDP_PASS
        }
    }
}

/// Counts a frame the programs have no path for (not IPv4) under its `family` and the reason
/// the Ethernet checks give; the caller passes it.
#[inline(always)]
fn count_other<H: Hook>(h: &H, family: u32, hook: u32, router_mac: &[u8; 6]) {
    count(family, hook, parse::other(h, router_mac), h.len());
}

/// Carries out a TC program's decision: count it, rewrite, redirect.
#[inline(always)]
fn apply(tc: &Tc, hook: u32, action: Action) -> i32 {
    let len = tc.len();
    let (why, rewritten) = match &action {
        Action::Pass(why) => {
            count(family::IPV4, hook, *why, len);
            return TC_ACT_OK;
        }
        Action::Redirect {
            reason, dmac, smac, ..
        } => (*reason, rewrite_v4(tc, Some((dmac, smac)))),
        Action::Peer { dmac, smac, .. } => {
            (reason::FAST_INGRESS, rewrite_v4(tc, Some((dmac, smac))))
        }
        Action::Neigh { .. } => (reason::NEIGH_REDIRECT, rewrite_v4(tc, None)),
    };
    if !rewritten {
        count(family::IPV4, hook, reason::PASS_MALFORMED, len);
        return TC_ACT_OK;
    }
    count(family::IPV4, hook, why, len);
    // Each helper returns TC_ACT_REDIRECT; the kernel sends the packet once the program
    // returns.
    match action {
        // SAFETY: the helper takes plain integers.
        Action::Redirect { ifindex, .. } => unsafe { bpf_redirect(ifindex, 0) as i32 },
        // SAFETY: the helper takes plain integers.
        Action::Peer { ifindex, .. } => unsafe { bpf_redirect_peer(ifindex, 0) as i32 },
        Action::Neigh { ifindex, nh } => {
            // SAFETY: bpf_redir_neigh is plain data; all-zero is a valid value.
            let mut params: bpf_redir_neigh = unsafe { core::mem::zeroed() };
            params.nh_family = AF_INET;
            params.__bindgen_anon_1.ipv4_nh = u32::from_ne_bytes(nh);
            // SAFETY: `params` is a valid, initialised local of the size passed.
            unsafe {
                bpf_redirect_neigh(
                    ifindex,
                    &raw mut params,
                    size_of::<bpf_redir_neigh>() as i32,
                    0,
                ) as i32
            }
        }
        Action::Pass(_) => TC_ACT_OK,
    }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}
