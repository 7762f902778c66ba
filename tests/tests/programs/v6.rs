//! The IPv6 decision table: the IPv4 table's shape, and what IPv6 adds (extension headers,
//! neighbour discovery, address scopes, no fragmentation by routers, forwarding switched per
//! family). Each row is a frame and the verdict it must get; the harness checks them all and
//! reports every failing row.

use std::net::Ipv6Addr;

use hostgw_common::{
    CONFIG_F_FIB_FALLBACK, CONFIG_F_XDP_TX, STATE_F_FORWARD_V4, STATE_F_FORWARD_V6,
    counters::reason,
};
use hostgw_tests::frame::{ETH_LEN, IPV6_LEN, Ipv6Frame};

use crate::harness::{
    Expect, NEIGH, Prog, Programs, Row, Table, egress_frame, egress6, fwd, ingress_frame, ingress6,
    refused, with, with6,
};
use crate::world::{
    ALL_NODES6, BRIDGE_MAC, FIB_NO_NEIGH6, FIB_ONLY6, FIB_UNREACHABLE6, GATEWAY6, LINK_LOCAL6,
    NODE42_MAC, NODE45_MAC, NODE50_MAC, OTHER_POD_MAC, OTHER_POD6, POD_MAC, POD6, REMOTE6,
    SMALL_MTU, SMALL_MTU6, STRANGER6, UNRESOLVED6, UPLINK_MAC, World, inside, node6, sysctl, v6,
};

/// The IPv6 rows of the decision table: the IPv4 table's shape, and what IPv6 adds (extension
/// headers, neighbour discovery, address scopes, no fragmentation by routers).
#[test]
fn decision_table_ipv6() {
    inside("table6", decision_table_v6_rows);
}

#[expect(clippy::too_many_lines, reason = "one table")]
fn decision_table_v6_rows(world: &World) {
    let mut table = Table::default();
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
        Row {
            name: "egress6: route hit, rewritten and redirected to the uplink",
            prog: e,
            frame: egress6().bytes(),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress6: same on the bridge device (catch-all hook)",
            prog: e,
            frame: egress6().bytes(),
            ifindex: br,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress6: hop limit 2 is forwarded with hop limit 1",
            prog: e,
            frame: with6(egress6, |f| f.hop_limit = 2),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress6: hop limit 1 → stack (time exceeded)",
            prog: e,
            frame: with6(egress6, |f| f.hop_limit = 1),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_TTL),
        },
        Row {
            name: "egress6: hop limit 0 → stack",
            prog: e,
            frame: with6(egress6, |f| f.hop_limit = 0),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_TTL),
        },
        Row {
            name: "egress6: TCP is forwarded",
            prog: e,
            frame: with6(egress6, |f| f.next = 6),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress6: ICMPv6 echo request is forwarded",
            prog: e,
            frame: icmp(128, REMOTE6),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress6: route with unresolved MAC → redirect_neigh",
            prog: e,
            frame: with6(egress6, |f| f.dst = UNRESOLVED6),
            ifindex: port,
            gso: 0,
            expect: NEIGH,
        },
        Row {
            name: "egress6: frame to another pod's MAC is switched, not routed",
            prog: e,
            frame: with6(egress6, |f| f.dmac = OTHER_POD_MAC),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_ROUTED),
        },
        Row {
            name: "egress6: multicast MAC",
            prog: e,
            frame: with6(egress6, |f| f.dmac = [0x33, 0x33, 0, 0, 0, 1]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MULTICAST),
        },
        Row {
            name: "egress6: multicast ff02::1 to the bridge MAC",
            prog: e,
            frame: with6(egress6, |f| f.dst = ALL_NODES6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MULTICAST),
        },
        Row {
            name: "egress6: router solicitation (133)",
            prog: e,
            frame: icmp(133, REMOTE6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: router advertisement (134)",
            prog: e,
            frame: icmp(134, REMOTE6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: neighbour solicitation (135) unicast to a pod address",
            prog: e,
            frame: icmp(135, REMOTE6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: neighbour advertisement (136) unicast to a pod address",
            prog: e,
            frame: icmp(136, REMOTE6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: redirect (137)",
            prog: e,
            frame: icmp(137, REMOTE6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: ICMPv6 without its type byte",
            prog: e,
            frame: with6(egress6, |f| {
                f.next = 58;
                f.payload.clear();
            }),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress6: link-local source",
            prog: e,
            frame: with6(egress6, |f| f.src = LINK_LOCAL6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: link-local destination",
            prog: e,
            frame: with6(egress6, |f| f.dst = LINK_LOCAL6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: unspecified source ::",
            prog: e,
            frame: with6(egress6, |f| f.src = [0; 16]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: loopback destination ::1",
            prog: e,
            frame: with6(egress6, |f| f.dst = Ipv6Addr::LOCALHOST.octets()),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: multicast source",
            prog: e,
            frame: with6(egress6, |f| f.src = ALL_NODES6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: hop-by-hop options header",
            prog: e,
            frame: ext(0),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress6: routing header",
            prog: e,
            frame: ext(43),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress6: fragment header",
            prog: e,
            frame: ext(44),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_FRAGMENT),
        },
        Row {
            name: "egress6: destination options header",
            prog: e,
            frame: ext(60),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress6: authentication header",
            prog: e,
            frame: ext(51),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress6: ESP",
            prog: e,
            frame: with6(egress6, |f| f.next = 50),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress6: no next header (59)",
            prog: e,
            frame: with6(egress6, |f| f.next = 59),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress6: an upper layer it does not parse (SCTP)",
            prog: e,
            frame: with6(egress6, |f| f.next = 132),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress6: jumbogram (payload length 0, hop-by-hop)",
            prog: e,
            frame: with6(egress6, |f| {
                *f = f.clone().with_extension(0);
                f.payload_len = Some(0);
            }),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress6: version 4 in an IPv6 frame",
            prog: e,
            frame: with6(egress6, |f| f.version = 4),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress6: payload length beyond the frame",
            prog: e,
            frame: with6(egress6, |f| f.payload_len = Some(41)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress6: payload length shorter than the frame: the trailer is trimmed, the packet forwarded",
            prog: e,
            frame: with6(egress6, |f| f.payload_len = Some(20)),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress6: multicast source MAC (the bridge drops it)",
            prog: e,
            frame: with6(egress6, |f| f.smac = [0x33, 0x33, 0, 0, 0, 1]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress6: through the gateway to a pod of this node (the kernel redirects it)",
            prog: e,
            frame: with6(egress6, |f| f.dst = v6(0x79, 9)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_HAIRPIN),
        },
        Row {
            name: "egress6: spoofed source (not a pod of this node)",
            prog: e,
            frame: with6(egress6, |f| f.src = v6(0x79, 0x99)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "egress6: source of another node's CIDR",
            prog: e,
            frame: with6(egress6, |f| f.src = REMOTE6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "egress6: 1501 bytes over MTU 1500 (the stack sends Packet Too Big)",
            prog: e,
            frame: sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 1501).bytes(),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "egress6: exactly MTU 1500",
            prog: e,
            frame: sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 1500).bytes(),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress6: over the route's MTU 1000",
            prog: e,
            frame: sized(BRIDGE_MAC, POD_MAC, POD6, SMALL_MTU6, 1001).bytes(),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "egress6: at the route's MTU 1000",
            prog: e,
            frame: sized(BRIDGE_MAC, POD_MAC, POD6, SMALL_MTU6, 1000).bytes(),
            ifindex: port,
            gso: 0,
            expect: fwd(reason::FAST_EGRESS, NODE45_MAC, UPLINK_MAC),
        },
        Row {
            name: "egress6: GSO 3000 bytes, 1448-byte segments fit",
            prog: e,
            frame: sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 3000).bytes(),
            ifindex: port,
            gso: 1400,
            expect: fast_egress,
        },
        Row {
            name: "egress6: GSO 3000 bytes, 1648-byte segments do not",
            prog: e,
            frame: sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 3000).bytes(),
            ifindex: port,
            gso: 1600,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "egress6: GSO, segments of 1453 bytes over MTU 1500 by 1",
            prog: e,
            frame: sized(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 3000).bytes(),
            ifindex: port,
            gso: 1453,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "egress6: trie miss, FIB forwards (neighbour known)",
            prog: e,
            frame: with6(egress6, |f| f.dst = FIB_ONLY6),
            ifindex: port,
            gso: 0,
            expect: fwd(reason::FIB_FORWARD, NODE50_MAC, UPLINK_MAC),
        },
        Row {
            name: "egress6: trie miss, FIB next hop unresolved → redirect_neigh",
            prog: e,
            frame: with6(egress6, |f| f.dst = FIB_NO_NEIGH6),
            ifindex: port,
            gso: 0,
            expect: NEIGH,
        },
        Row {
            name: "egress6: trie miss, FIB unreachable route",
            prog: e,
            frame: with6(egress6, |f| f.dst = FIB_UNREACHABLE6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NO_ROUTE),
        },
        Row {
            name: "egress6: to the node's own (gateway) address",
            prog: e,
            frame: with6(egress6, |f| f.dst = GATEWAY6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: to the node's uplink address",
            prog: e,
            frame: with6(egress6, |f| f.dst = node6(0x43)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress6: no route anywhere",
            prog: e,
            frame: with6(egress6, |f| {
                f.dst = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets();
            }),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        // Ingress, TC on the uplink: remote node → local pod, transit.
        Row {
            name: "ingress6: local pod, delivered with redirect_peer",
            prog: i,
            frame: ingress6().bytes(),
            ifindex: up,
            gso: 0,
            expect: fast_ingress,
        },
        Row {
            name: "ingress6: hop limit 2 delivered with hop limit 1",
            prog: i,
            frame: with6(ingress6, |f| f.hop_limit = 2),
            ifindex: up,
            gso: 0,
            expect: fast_ingress,
        },
        Row {
            name: "ingress6: hop limit 1 → stack",
            prog: i,
            frame: with6(ingress6, |f| f.hop_limit = 1),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_TTL),
        },
        Row {
            name: "ingress6: frame not addressed to the uplink MAC",
            prog: i,
            frame: with6(ingress6, |f| f.dmac = [0x02, 0, 0, 0x11, 0, 0x99]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_NOT_ROUTED),
        },
        Row {
            name: "ingress6: neighbour solicitation to the uplink MAC",
            prog: i,
            frame: Ipv6Frame::icmp(UPLINK_MAC, NODE42_MAC, REMOTE6, POD6, 135).bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "ingress6: source not in any remote pod CIDR (rp_filter)",
            prog: i,
            frame: with6(ingress6, |f| f.src = STRANGER6),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "ingress6: source is one of this node's pods (spoofed)",
            prog: i,
            frame: with6(ingress6, |f| f.src = OTHER_POD6),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "ingress6: source route points at another interface",
            prog: i,
            frame: ingress6().bytes(),
            ifindex: br,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "ingress6: over the pod veth's MTU",
            prog: i,
            frame: sized(UPLINK_MAC, NODE42_MAC, REMOTE6, POD6, 1501).bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "ingress6: transit to another node's pods",
            prog: i,
            frame: with6(ingress6, |f| f.dst = SMALL_MTU6),
            ifindex: up,
            gso: 0,
            expect: fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        },
        Row {
            name: "ingress6: unresolved pod address → the stack resolves it (or says unreachable)",
            prog: i,
            frame: with6(ingress6, |f| f.dst = v6(0x79, 0x77)),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_UNRESOLVED),
        },
        Row {
            name: "ingress6: to the node's uplink address",
            prog: i,
            frame: with6(ingress6, |f| f.dst = node6(0x43)),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "ingress6: fragment header",
            prog: i,
            frame: ingress6().with_extension(44).bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_FRAGMENT),
        },
        // XDP on the uplink.
        Row {
            name: "xdp6: local pod is left to TC",
            prog: x,
            frame: ingress6().bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::HANDOFF_TC),
        },
        Row {
            name: "xdp6: transit goes back out with XDP_TX",
            prog: x,
            frame: with6(ingress6, |f| f.dst = SMALL_MTU6),
            ifindex: up,
            gso: 0,
            expect: fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        },
        Row {
            name: "xdp6: transit to an unresolved next hop is left to TC",
            prog: x,
            frame: with6(ingress6, |f| f.dst = UNRESOLVED6),
            ifindex: up,
            gso: 0,
            expect: pass(reason::HANDOFF_TC),
        },
        Row {
            name: "xdp6: trie miss is left to TC",
            prog: x,
            frame: with6(ingress6, |f| f.dst = FIB_ONLY6),
            ifindex: up,
            gso: 0,
            expect: pass(reason::HANDOFF_TC),
        },
        Row {
            name: "xdp6: hop limit 1",
            prog: x,
            frame: with6(ingress6, |f| f.hop_limit = 1),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_TTL),
        },
        Row {
            name: "xdp6: extension header",
            prog: x,
            frame: ingress6().with_extension(60).bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "xdp6: spoofed source",
            prog: x,
            frame: with6(ingress6, |f| f.src = STRANGER6),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "xdp6: transit over the route MTU",
            prog: x,
            frame: sized(UPLINK_MAC, NODE42_MAC, REMOTE6, SMALL_MTU6, 1001).bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "xdp6: multicast destination",
            prog: x,
            frame: with6(ingress6, |f| f.dst = ALL_NODES6),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_MULTICAST),
        },
    ];
    table.check(&progs, &rows);

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
            let name = format!("{prog:?}: IPv6 truncated to {len} bytes");
            table.row(
                &progs,
                &Row {
                    name: &name,
                    prog,
                    frame,
                    ifindex,
                    gso: 0,
                    expect: exp,
                },
            );
        }
    }
    println!("IPv6 truncation rows 0..={} checked", full.len());

    // Forwarding is switched per family: IPv6 off with IPv4 on, and the other way round.
    let mut progs = progs;
    progs.set_state(STATE_F_FORWARD_V4);
    table.check(
        &progs,
        &[
            Row {
                name: "egress6: IPv6 forwarding off, IPv4 on",
                prog: e,
                frame: egress6().bytes(),
                ifindex: port,
                gso: 0,
                expect: pass(reason::PASS_FWD_DISABLED),
            },
            Row {
                name: "ingress6: IPv6 forwarding off, IPv4 on",
                prog: i,
                frame: ingress6().bytes(),
                ifindex: up,
                gso: 0,
                expect: pass(reason::PASS_FWD_DISABLED),
            },
            Row {
                name: "xdp6: IPv6 forwarding off, IPv4 on",
                prog: x,
                frame: with6(ingress6, |f| f.dst = SMALL_MTU6),
                ifindex: up,
                gso: 0,
                expect: pass(reason::PASS_FWD_DISABLED),
            },
            Row {
                name: "egress: IPv4 still forwards with only IPv4 on",
                prog: e,
                frame: egress_frame().bytes(),
                ifindex: port,
                gso: 0,
                expect: fast_egress,
            },
        ],
    );
    progs.set_state(STATE_F_FORWARD_V6);
    table.check(
        &progs,
        &[
            Row {
                name: "egress6: IPv6 forwards with only IPv6 on",
                prog: e,
                frame: egress6().bytes(),
                ifindex: port,
                gso: 0,
                expect: fast_egress,
            },
            Row {
                name: "egress: IPv4 forwarding off, IPv6 on",
                prog: e,
                frame: egress_frame().bytes(),
                ifindex: port,
                gso: 0,
                expect: pass(reason::PASS_FWD_DISABLED),
            },
            Row {
                name: "xdp: IPv4 forwarding off, IPv6 on",
                prog: x,
                frame: with(ingress_frame, |f| f.dst = SMALL_MTU),
                ifindex: up,
                gso: 0,
                expect: pass(reason::PASS_FWD_DISABLED),
            },
        ],
    );
    progs.set_forwarding(true);
    sysctl(&world.ns, "net.ipv6.conf.cni0.forwarding", "0");
    table.check(
        &progs,
        &[Row {
            name: "egress6: FIB path, kernel IPv6 forwarding off on the bridge",
            prog: e,
            frame: with6(egress6, |f| f.dst = FIB_ONLY6),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_FWD_DISABLED),
        }],
    );
    sysctl(&world.ns, "net.ipv6.conf.cni0.forwarding", "1");

    // FIB fallback and XDP_TX switched off.
    let plain = Programs::load(world, 0);
    table.check(
        &plain,
        &[
            Row {
                name: "egress6: trie miss with the FIB fallback off",
                prog: e,
                frame: with6(egress6, |f| f.dst = FIB_ONLY6),
                ifindex: port,
                gso: 0,
                expect: pass(reason::PASS_NO_ROUTE),
            },
            Row {
                name: "xdp6: transit when the uplink cannot XDP_TX",
                prog: x,
                frame: with6(ingress6, |f| f.dst = SMALL_MTU6),
                ifindex: up,
                gso: 0,
                expect: pass(reason::HANDOFF_TC),
            },
        ],
    );
    table.finish();
}
