//! The checksum state of an skb: NICs such as mlx5 hand the stack packets with
//! `CHECKSUM_COMPLETE`, the sum of their bytes in `skb->csum`, which the receiver checks the L4
//! checksum against. A program that changes bytes must keep it right, as the kernel's
//! forwarding does (`ip6_forward` with `skb_postpull_rcsum` for the hop limit; the IPv4
//! header checksum makes up for the TTL by itself). The kernel's test run can start a program
//! on such an skb and check the sum afterwards (`BPF_F_TEST_SKB_CHECKSUM_COMPLETE`, Linux
//! 6.11): on older kernels there is nothing to run this on, and the test says so. (A frame
//! with a trailer is not a row: trimming it turns the skb's `CHECKSUM_COMPLETE` into
//! `CHECKSUM_NONE`, after which the kernel recomputes checksums and `skb->csum` means
//! nothing, though the test run still compares it.)

use hostgw_common::CONFIG_F_FIB_FALLBACK;

use crate::harness::{Prog, Programs, egress_frame, egress6, ingress_frame, ingress6};
use crate::world::inside;

/// `TC_ACT_REDIRECT`: the rows are all forwarded.
const REDIRECT: u32 = 7;

#[test]
fn forwarding_keeps_a_complete_checksum_right() {
    inside("csum", |world| {
        let progs = Programs::load(world, CONFIG_F_FIB_FALLBACK);
        let (port, up) = (world.port, world.uplink);
        let rows: Vec<(&str, Prog, Vec<u8>, u32)> = vec![
            (
                "IPv6 pod → remote pod",
                Prog::Egress,
                egress6().bytes(),
                port,
            ),
            (
                "IPv6 remote → local pod",
                Prog::Ingress,
                ingress6().bytes(),
                up,
            ),
            (
                "IPv4 pod → remote pod",
                Prog::Egress,
                egress_frame().bytes(),
                port,
            ),
            (
                "IPv4 remote → local pod",
                Prog::Ingress,
                ingress_frame().bytes(),
                up,
            ),
        ];
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let version: Vec<u32> = release
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .filter_map(|n| n.parse().ok())
            .collect();
        let has_flag = version >= vec![6, 11];
        let mut failures = Vec::new();
        for (name, prog, frame, ifindex) in &rows {
            match progs.run_csum_complete(*prog, frame, *ifindex) {
                Ok(REDIRECT) => println!("  ok  {name}: forwarded, skb->csum right"),
                Ok(rc) => failures.push(format!("{name}: return code {rc}, not a redirect")),
                Err(libc::EBADMSG) => {
                    failures.push(format!("{name}: skb->csum stale after the program"));
                }
                Err(libc::EINVAL) if !has_flag => {
                    println!(
                        "  --  {name}: kernel {} cannot run an skb with CHECKSUM_COMPLETE \
                         (needs 6.11)",
                        release.trim()
                    );
                }
                Err(e) => failures.push(format!("{name}: the test run failed, errno {e}")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    });
}
