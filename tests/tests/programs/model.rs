//! The model check: 200,000 frames of both families, mutated from forwardable ones, against
//! a model of the decision tables written as plain code. The model is the only thing here
//! that decides a verdict; running and checking frames is the harness's.

use std::{collections::HashMap, net::Ipv6Addr};

use hostgw_common::{
    CONFIG_F_XDP_TX, Endpoint, ROUTE_F_RESOLVED,
    counters::{self, family, hook, reason},
};
use hostgw_tests::frame::{ETH_LEN, IP, IPV6_LEN, Ipv4Frame, fix_checksum, ipv4_checksum};

use crate::harness::{
    Expect, NEIGH, Prog, Programs, TC_ACT_REDIRECT, TC_ACT_UNSPEC, XDP_PASS, XDP_TX,
    assert_rewritten, counter_name, egress_frame, egress6, frame_family, fwd, ingress_frame,
    ingress6, reason_name, refused,
};
use crate::world::{
    ALL_NODES6, BRIDGE_MAC, GATEWAY, GATEWAY6, LINK_LOCAL6, NODE42_MAC, OTHER_POD_MAC, OTHER_POD6,
    POD, POD6, REMOTE, REMOTE6, SMALL_MTU, SMALL_MTU6, STRANGER6, UNRESOLVED, UNRESOLVED6,
    UPLINK_MAC, World, inside, v6,
};

/// 200,000 frames mutated from forwardable ones; each verdict must match the model of the
/// decision table: a pass leaves the frame unchanged, a forward is a correct rewrite, and the
/// counters add up to exactly the model's tally.
#[test]
pub(crate) fn randomized_frames_match_the_model() {
    inside("random", randomized);
}

pub(crate) fn randomized(world: &World) {
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
                        TC_ACT_UNSPEC
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
pub(crate) fn mutate(rng: &mut fastrand::Rng, prog: Prog) -> Vec<u8> {
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

pub(crate) fn with_fields(mut f: Ipv4Frame, change: impl FnOnce(&mut Ipv4Frame)) -> Ipv4Frame {
    change(&mut f);
    f
}

/// An IPv6 frame derived from a forwardable one for `prog`, with a few fields or bytes
/// changed.
pub(crate) fn mutate6(rng: &mut fastrand::Rng, prog: Prog) -> Vec<u8> {
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

/// The decision table as plain code, for frames on the port (egress) or the uplink, with the
/// FIB fallback off, `XDP_TX` allowed and forwarding on.
pub(crate) fn model(prog: Prog, f: &[u8], w: &World) -> Expect {
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
        // A multicast or all-zero source, which the bridge drops.
        [8, 0] | [0x86, 0xdd] if f[6] & 1 != 0 || f[6..12] == [0; 6] => {
            return Pass(reason::PASS_MALFORMED);
        }
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
pub(crate) struct Hop {
    mtu: u32,
    flags: u32,
    node_mac: [u8; 6],
    uplink_mac: [u8; 6],
}

/// The table after the checks, for either family: a packet of `tot` L3 bytes to a local
/// endpoint `ep` or along a trie route `hop`.
pub(crate) fn forward_model(
    prog: Prog,
    tot: usize,
    ep: Option<Endpoint>,
    hop: Option<Hop>,
) -> Expect {
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
pub(crate) fn model6(prog: Prog, f: &[u8], w: &World) -> Expect {
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
