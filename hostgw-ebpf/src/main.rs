//! The hostgw eBPF programs: host-gw forwarding in TC and XDP hooks.
//!
//! - `hostgw_egress` (TC, ingress of every bridge port and of the bridge device): traffic that
//!   pods send towards remote pods.
//! - `hostgw_ingress` (TC, ingress of the uplink) and `hostgw_xdp` (XDP, uplink): traffic from
//!   other nodes towards local pods.
//!
//! Every path that cannot prove the kernel would forward the packet the same way hands it on
//! unchanged: `TC_ACT_UNSPEC` (the hook's next tcx program or clsact filter, then the stack) /
//! `XDP_PASS`. The code only builds for the BPF target;
//! on the host this crate is an empty binary so that workspace-wide commands keep working.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod prog;

#[cfg(not(target_arch = "bpf"))]
fn main() {}
