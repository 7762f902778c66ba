//! Program entry points: each reads its context into a [`parse::Hook`], tells the frame's
//! family by its `EtherType` ([`parse::family`]), asks [`v4`] or [`v6`] what to do, and
//! [`apply`]s the answer. Frames of neither family are counted and passed here. Every counter
//! carries the family, so IPv4 and IPv6 traffic can be told apart.
//!
//! Which hook does what, and why (the same for IPv4 and IPv6, each family with its own trie and
//! endpoint table and its own forwarding switch):
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
//! Each family's path on each hook is a BPF subprogram of its own (`egress_v4`, `egress_v6`,
//! ...), called from the entry point once the family is known: inlined into one function, the
//! two paths' locals exceeded the 512-byte stack, while as subprograms each gets its own frame
//! and only one of them is on the stack at a time. The IPv6 path is the larger: it reads its
//! header in place and its routes from the map rather than copying them, to fit.
//!
//! Every error path and every unproven case ends in "hand to the stack unchanged".
#![expect(
    clippy::needless_pass_by_value,
    reason = "the program macros hand the context over by value"
)]

mod action;
mod ct;
mod hooks;
mod log;
mod maps;
mod parse;
mod v4;
mod v6;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, TC_ACT_UNSPEC, bpf_redir_neigh, xdp_action, xdp_md},
    helpers::generated::{
        bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer, bpf_skb_change_tail,
        bpf_xdp_adjust_tail,
    },
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use hostgw_common::{
    HOOK_F_PORT_EGRESS, HOOK_F_SHARED_INGRESS,
    counters::{family, hook, reason},
};

use self::{
    action::{Action, Nexthop},
    hooks::{Tc, Xdp},
    maps::{CONFIG, count, hook_flags, state},
    parse::{ETH_LEN, Hook, IPV6_LEN, rewrite_v4, rewrite_v6},
};

/// `AF_INET` and `AF_INET6`, as `bpf_redir_neigh` wants them.
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;

/// TC, ingress of every bridge port and of the bridge device: pod → remote pod.
#[classifier]
pub fn hostgw_egress(ctx: TcContext) -> i32 {
    let tc = Tc(&ctx);
    match parse::family(&tc) {
        family::IPV4 => egress_v4(ctx.skb.skb),
        family::IPV6 => egress_v6(ctx.skb.skb),
        _ => {
            let why = parse::other(&tc, &state().bridge_mac);
            count(family::OTHER, hook::EGRESS, why, tc.len());
            TC_ACT_UNSPEC
        }
    }
}

/// TC, ingress of the uplink: remote node → local pod, transit, FIB fallback.
#[classifier]
pub fn hostgw_ingress(ctx: TcContext) -> i32 {
    let tc = Tc(&ctx);
    match parse::family(&tc) {
        family::IPV4 => ingress_v4(ctx.skb.skb),
        family::IPV6 => ingress_v6(ctx.skb.skb),
        _ => {
            let why = parse::other(&tc, &state().uplink_mac);
            count(family::OTHER, hook::INGRESS_TC, why, tc.len());
            TC_ACT_UNSPEC
        }
    }
}

/// XDP on the uplink: transit with `XDP_TX`; everything else to the TC hook.
#[xdp]
pub fn hostgw_xdp(ctx: XdpContext) -> u32 {
    let x = Xdp(&ctx);
    match parse::family(&x) {
        family::IPV4 => xdp_v4(ctx.ctx),
        family::IPV6 => xdp_v6(ctx.ctx),
        _ => {
            let why = parse::other(&x, &state().uplink_mac);
            count(family::OTHER, hook::INGRESS_XDP, why, x.len());
            xdp_action::XDP_PASS
        }
    }
}

/// [`hostgw_egress`] for an IPv4 frame.
#[inline(never)]
fn egress_v4(skb: *mut __sk_buff) -> i32 {
    let ctx = TcContext::new(skb);
    let tc = Tc(&ctx);
    let action = v4::egress(&ctx, &tc, &CONFIG.load(), state());
    apply(&tc, family::IPV4, hook::EGRESS, action)
}

/// [`hostgw_egress`] for an IPv6 frame.
#[inline(never)]
fn egress_v6(skb: *mut __sk_buff) -> i32 {
    let ctx = TcContext::new(skb);
    let tc = Tc(&ctx);
    let action = v6::egress(&ctx, &tc, &CONFIG.load(), state());
    apply(&tc, family::IPV6, hook::EGRESS, action)
}

/// [`hostgw_ingress`] for an IPv4 frame.
#[inline(never)]
fn ingress_v4(skb: *mut __sk_buff) -> i32 {
    let ctx = TcContext::new(skb);
    let tc = Tc(&ctx);
    let action = v4::ingress(&ctx, &tc, &CONFIG.load(), state());
    apply(&tc, family::IPV4, hook::INGRESS_TC, action)
}

/// [`hostgw_ingress`] for an IPv6 frame.
#[inline(never)]
fn ingress_v6(skb: *mut __sk_buff) -> i32 {
    let ctx = TcContext::new(skb);
    let tc = Tc(&ctx);
    let action = v6::ingress(&ctx, &tc, &CONFIG.load(), state());
    apply(&tc, family::IPV6, hook::INGRESS_TC, action)
}

/// [`hostgw_xdp`] for an IPv4 frame.
#[inline(never)]
fn xdp_v4(md: *mut xdp_md) -> u32 {
    let ctx = XdpContext::new(md);
    let x = Xdp(&ctx);
    let action = v4::ingress_xdp(&x, ctx.as_ptr(), &CONFIG.load(), state());
    xdp_apply(&x, family::IPV4, action)
}

/// [`hostgw_xdp`] for an IPv6 frame.
#[inline(never)]
fn xdp_v6(md: *mut xdp_md) -> u32 {
    let ctx = XdpContext::new(md);
    let x = Xdp(&ctx);
    let action = v6::ingress_xdp(&x, ctx.as_ptr(), &CONFIG.load(), state());
    xdp_apply(&x, family::IPV6, action)
}

/// Rewrites a checked frame of `family` for the next hop (MACs unless `None`, TTL or hop
/// limit).
#[inline(always)]
fn rewrite<H: Hook>(h: &H, family: u32, macs: Option<(&[u8; 6], &[u8; 6])>) -> bool {
    if family == family::IPV6 {
        rewrite_v6(h, macs)
    } else {
        rewrite_v4(h, macs)
    }
}

/// The bytes after the IP packet in a checked frame of `family` (0 for a GSO packet, whose
/// length is not its segments').
#[inline(always)]
fn trailer<H: Hook>(h: &H, family: u32) -> u32 {
    if h.gso_size() != 0 {
        return 0;
    }
    let (at, fixed) = if family == family::IPV6 {
        (ETH_LEN + 4, (ETH_LEN + IPV6_LEN) as u32)
    } else {
        (ETH_LEN + 2, ETH_LEN as u32)
    };
    let Some(field) = h.ptr_at::<[u8; 2]>(at) else {
        return 0;
    };
    // SAFETY: `ptr_at` checked both bytes lie inside the packet.
    let end = fixed + u32::from(u16::from_be_bytes(unsafe { *field }));
    h.len().saturating_sub(end)
}

/// Carries out the XDP program's decision: `XDP_TX` for a transit redirect back out of the
/// uplink, otherwise pass (to the stack, or to the TC hook which decides again).
#[inline(always)]
fn xdp_apply(x: &Xdp, family: u32, action: Action) -> u32 {
    let len = x.len();
    match action {
        Action::Redirect {
            reason,
            ifindex,
            dmac,
            smac,
        } if ifindex == x.ingress_ifindex() && hook_flags(ifindex) & HOOK_F_SHARED_INGRESS == 0 => {
            let trimmed = match trailer(x, family) {
                0 => true,
                // SAFETY: the context is the program's own; the helper shrinks the frame by
                // the trailer's length, which lies inside it.
                n => unsafe { bpf_xdp_adjust_tail(x.0.ctx, -(n as i32)) == 0 },
            };
            if !trimmed || !rewrite(x, family, Some((&dmac, &smac))) {
                count(family, hook::INGRESS_XDP, reason::PASS_MALFORMED, len);
                return xdp_action::XDP_PASS;
            }
            count(family, hook::INGRESS_XDP, reason, len);
            xdp_action::XDP_TX
        }
        Action::Pass(why) => {
            count(family, hook::INGRESS_XDP, why, len);
            xdp_action::XDP_PASS
        }
        _ => {
            count(family, hook::INGRESS_XDP, reason::HANDOFF_TC, len);
            xdp_action::XDP_PASS
        }
    }
}

/// Carries out a TC program's decision: count it, rewrite, redirect. On a hook shared with
/// other tc users nothing is redirected: they get every packet, as on the kernel path.
#[inline(always)]
fn apply(tc: &Tc, family: u32, hook: u32, action: Action) -> i32 {
    let len = tc.len();
    let action = match action {
        Action::Pass(_) => action,
        _ if hook_flags(tc.ingress_ifindex()) & HOOK_F_SHARED_INGRESS != 0 => {
            Action::Pass(reason::PASS_TC_SHARED)
        }
        // A port with an egress of its own (a shaper) gets its pod's packets through it.
        Action::Peer {
            ifindex,
            dmac,
            smac,
        } if hook_flags(ifindex) & HOOK_F_PORT_EGRESS != 0 => Action::Redirect {
            reason: reason::FAST_INGRESS,
            ifindex,
            dmac,
            smac,
        },
        _ => action,
    };
    let (why, macs) = match &action {
        Action::Pass(why) => {
            count(family, hook, *why, len);
            return TC_ACT_UNSPEC;
        }
        Action::Redirect {
            reason, dmac, smac, ..
        } => (*reason, Some((*dmac, *smac))),
        Action::Peer { dmac, smac, .. } => (reason::FAST_INGRESS, Some((*dmac, *smac))),
        Action::Neigh { .. } => (reason::NEIGH_REDIRECT, None),
    };
    // Bytes after the IP packet (an Ethernet trailer, padding): the kernel trims them on
    // receive (`pskb_trim_rcsum`), and so does the helper here, which keeps `skb->csum` right.
    let trim = trailer(tc, family);
    // SAFETY: the context is the program's own; the new length lies inside the packet.
    if trim != 0 && unsafe { bpf_skb_change_tail(tc.0.skb.skb, len - trim, 0) } != 0 {
        count(family, hook, reason::PASS_MALFORMED, len);
        return TC_ACT_UNSPEC;
    }
    if !rewrite(tc, family, macs.as_ref().map(|(d, s)| (d, s))) {
        count(family, hook, reason::PASS_MALFORMED, len);
        return TC_ACT_UNSPEC;
    }
    count(family, hook, why, len);
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
            match nh {
                Nexthop::V4(a) => {
                    params.nh_family = AF_INET;
                    params.__bindgen_anon_1.ipv4_nh = u32::from_ne_bytes(a);
                }
                Nexthop::V6(a) => {
                    params.nh_family = AF_INET6;
                    params.__bindgen_anon_1.ipv6_nh = v6::words(&a);
                }
            }
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
        Action::Pass(_) => TC_ACT_UNSPEC,
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
