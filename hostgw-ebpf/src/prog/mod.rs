//! Program entry points, maps and the read-only configuration.
#![expect(
    clippy::needless_pass_by_value,
    reason = "the program macros hand the context over by value"
)]

mod maps;
mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action::XDP_PASS},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use hostgw_common::counters::{hook, reason};

use self::parse::{Frame, L3};

/// TC, ingress of every bridge port and of the bridge device: pod → remote pod.
#[classifier]
pub fn hostgw_egress(ctx: TcContext) -> i32 {
    let verdict = egress(&ctx);
    maps::count(hook::EGRESS, verdict, ctx.len());
    TC_ACT_OK
}

/// TC, ingress of the uplink: remote node → local pod.
#[classifier]
pub fn hostgw_ingress(ctx: TcContext) -> i32 {
    let verdict = ingress(&Frame::tc(&ctx));
    maps::count(hook::INGRESS_TC, verdict, ctx.len());
    TC_ACT_OK
}

/// XDP on the uplink: remote node → local pod, before the kernel allocates an skb.
#[xdp]
pub fn hostgw_xdp(ctx: XdpContext) -> u32 {
    let frame = Frame::xdp(&ctx);
    let len = frame.len();
    let verdict = ingress(&frame);
    maps::count(hook::INGRESS_XDP, verdict, len);
    XDP_PASS
}

/// Classifies a frame leaving a pod. No forwarding decision is taken yet: every frame goes
/// to the stack, counted under the reason it was passed for.
fn egress(ctx: &TcContext) -> u32 {
    classify(&Frame::tc(ctx))
}

/// Classifies a frame arriving from another node; as [`egress`], every frame goes to the stack.
fn ingress(frame: &Frame) -> u32 {
    classify(frame)
}

fn classify(frame: &Frame) -> u32 {
    match frame.l3() {
        Ok(L3::V4 | L3::V6) => reason::PASS_NO_ROUTE,
        Ok(L3::Other) => reason::PASS_NOT_IP,
        Err(()) => reason::PASS_MALFORMED,
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
