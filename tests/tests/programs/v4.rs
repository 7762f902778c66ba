//! The IPv4 decision table: one or more rows per decision of the egress, TC ingress and XDP
//! programs (route hits and misses, TTL, MTU, malformed and truncated frames, forwarding
//! switched off by the agent or the kernel, the FIB fallback). Each row is a frame and the
//! verdict it must get; the harness checks them all and reports every failing row.

use hostgw_common::{CONFIG_F_FIB_FALLBACK, CONFIG_F_XDP_TX, counters::reason, names};
use hostgw_tests::frame::{ETH_LEN, Ipv4Frame};

use crate::harness::{
    Expect, NEIGH, Prog, Programs, Row, Table, egress_frame, fwd, ingress_frame, refused, with,
};
use crate::world::{
    BRIDGE_MAC, FIB_NO_NEIGH, FIB_ONLY, FIB_UNREACHABLE, GATEWAY, NODE42_MAC, NODE45_MAC,
    NODE50_MAC, OTHER_POD_MAC, POD, POD_MAC, REMOTE, SMALL_MTU, UNRESOLVED, UPLINK_MAC, World,
    inside, sysctl,
};

/// The decision table, one or more rows per decision.
#[test]
fn decision_table() {
    inside("table", decision_table_rows);
}

#[expect(clippy::too_many_lines, reason = "one table")]
fn decision_table_rows(world: &World) {
    let mut table = Table::default();
    let mut progs = Programs::load(world, CONFIG_F_FIB_FALLBACK | CONFIG_F_XDP_TX);
    progs.attach_xdp();
    for name in [names::PROG_EGRESS, names::PROG_INGRESS, names::PROG_XDP] {
        let info = progs.program(name).info().unwrap();
        let insns = info.verified_instruction_count().unwrap_or(0);
        println!(
            "verifier accepted {name}: {insns} instructions verified, {} bytes translated",
            info.size_translated().unwrap_or(0)
        );
        assert!(insns > 0, "{name} reports no verified instructions");
    }
    let (up, port, br) = (world.uplink, world.port, world.bridge);
    let e = Prog::Egress;
    let i = Prog::Ingress;
    let x = Prog::Xdp;
    let fast_egress = fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC);
    let fast_ingress = fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC);
    let pass = Expect::Pass;

    let rows: Vec<Row> = vec![
        // Egress: pod → remote pod.
        Row {
            name: "egress: route hit, rewritten and redirected to the uplink",
            prog: e,
            frame: egress_frame().bytes(),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress: same on the bridge device (catch-all hook)",
            prog: e,
            frame: egress_frame().bytes(),
            ifindex: br,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress: TTL 2 is forwarded with TTL 1",
            prog: e,
            frame: with(egress_frame, |f| f.ttl = 2),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress: TTL 1 → stack (time exceeded)",
            prog: e,
            frame: with(egress_frame, |f| f.ttl = 1),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_TTL),
        },
        Row {
            name: "egress: TTL 0 → stack",
            prog: e,
            frame: with(egress_frame, |f| f.ttl = 0),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_TTL),
        },
        Row {
            name: "egress: DF clear is forwarded too",
            prog: e,
            frame: with(egress_frame, |f| f.frag = 0),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress: route with unresolved MAC → redirect_neigh",
            prog: e,
            frame: with(egress_frame, |f| f.dst = UNRESOLVED),
            ifindex: port,
            gso: 0,
            expect: NEIGH,
        },
        Row {
            name: "egress: frame to another pod's MAC is switched, not routed",
            prog: e,
            frame: with(egress_frame, |f| f.dmac = OTHER_POD_MAC),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_ROUTED),
        },
        Row {
            name: "egress: broadcast MAC",
            prog: e,
            frame: with(egress_frame, |f| f.dmac = [0xff; 6]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MULTICAST),
        },
        Row {
            name: "egress: multicast MAC",
            prog: e,
            frame: with(egress_frame, |f| f.dmac = [0x01, 0, 0x5e, 0, 0, 5]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MULTICAST),
        },
        Row {
            name: "egress: multicast IP to the bridge MAC",
            prog: e,
            frame: with(egress_frame, |f| f.dst = [224, 0, 0, 5]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MULTICAST),
        },
        Row {
            name: "egress: limited broadcast IP",
            prog: e,
            frame: with(egress_frame, |f| f.dst = [255, 255, 255, 255]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MULTICAST),
        },
        Row {
            name: "egress: ARP",
            prog: e,
            frame: with(egress_frame, |f| f.ethertype = 0x0806),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_IP),
        },
        Row {
            name: "egress: VLAN-tagged",
            prog: e,
            frame: with(egress_frame, |f| f.ethertype = 0x8100),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_IP),
        },
        Row {
            name: "egress: an IPv4 packet in an IPv6 frame (version 4)",
            prog: e,
            frame: with(egress_frame, |f| f.ethertype = 0x86dd),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: IP options",
            prog: e,
            frame: with(egress_frame, |f| f.options = vec![1, 1, 1, 0]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "egress: IHL 4 (bad)",
            prog: e,
            frame: with(egress_frame, |f| f.ver_ihl = Some(0x44)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: IHL 0 (bad)",
            prog: e,
            frame: with(egress_frame, |f| f.ver_ihl = Some(0x40)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: version 6 in an IPv4 frame",
            prog: e,
            frame: with(egress_frame, |f| f.ver_ihl = Some(0x65)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: total length beyond the frame",
            prog: e,
            frame: with(egress_frame, |f| f.tot_len = Some(200)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: total length below the header",
            prog: e,
            frame: with(egress_frame, |f| f.tot_len = Some(19)),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: total length shorter than the frame: the trailer is trimmed, the packet forwarded",
            prog: e,
            frame: with(egress_frame, |f| f.tot_len = Some(30)),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress: bad header checksum",
            prog: e,
            frame: with(egress_frame, |f| f.bad_checksum = true),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: first fragment (MF)",
            prog: e,
            frame: with(egress_frame, |f| f.frag = 0x2000),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_FRAGMENT),
        },
        Row {
            name: "egress: later fragment (offset)",
            prog: e,
            frame: with(egress_frame, |f| f.frag = 0x00b9),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_FRAGMENT),
        },
        Row {
            name: "egress: last fragment (offset, no MF)",
            prog: e,
            frame: with(egress_frame, |f| f.frag = 0x0001),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_FRAGMENT),
        },
        Row {
            name: "egress: multicast source MAC (the bridge drops it)",
            prog: e,
            frame: with(egress_frame, |f| f.smac = [0x01, 0, 0x5e, 0, 0, 1]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: all-zero source MAC (the bridge drops it)",
            prog: e,
            frame: with(egress_frame, |f| f.smac = [0; 6]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "egress: through the gateway to a pod of this node (the kernel redirects it)",
            prog: e,
            frame: with(egress_frame, |f| f.dst = [10, 1, 79, 9]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_HAIRPIN),
        },
        Row {
            name: "egress: spoofed source (not a pod of this node)",
            prog: e,
            frame: with(egress_frame, |f| f.src = [10, 1, 79, 99]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "egress: source of another node's CIDR",
            prog: e,
            frame: with(egress_frame, |f| f.src = REMOTE),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "egress: DF, 1501 bytes over MTU 1500",
            prog: e,
            frame: Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 1501 - 28).bytes(),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "egress: no DF, over MTU (the stack fragments)",
            prog: e,
            frame: with(
                || Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 1501 - 28),
                |f| f.frag = 0,
            ),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "egress: exactly MTU 1500",
            prog: e,
            frame: Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 1500 - 28).bytes(),
            ifindex: port,
            gso: 0,
            expect: fast_egress,
        },
        Row {
            name: "egress: over the route's MTU 1000",
            prog: e,
            frame: Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, SMALL_MTU, 1001 - 28).bytes(),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "egress: at the route's MTU 1000",
            prog: e,
            frame: Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, SMALL_MTU, 1000 - 28).bytes(),
            ifindex: port,
            gso: 0,
            expect: fwd(reason::FAST_EGRESS, NODE45_MAC, UPLINK_MAC),
        },
        Row {
            name: "egress: GSO 3000 bytes, 1400-byte segments fit",
            prog: e,
            frame: Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 3000 - 28).bytes(),
            ifindex: port,
            gso: 1400,
            expect: fast_egress,
        },
        Row {
            name: "egress: GSO 3000 bytes, 1600-byte segments do not",
            prog: e,
            frame: Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 3000 - 28).bytes(),
            ifindex: port,
            gso: 1600,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "egress: trie miss, FIB forwards (neighbour known)",
            prog: e,
            frame: with(egress_frame, |f| f.dst = FIB_ONLY),
            ifindex: port,
            gso: 0,
            expect: fwd(reason::FIB_FORWARD, NODE50_MAC, UPLINK_MAC),
        },
        Row {
            name: "egress: trie miss, FIB next hop unresolved → redirect_neigh",
            prog: e,
            frame: with(egress_frame, |f| f.dst = FIB_NO_NEIGH),
            ifindex: port,
            gso: 0,
            expect: NEIGH,
        },
        Row {
            name: "egress: trie miss, FIB unreachable route",
            prog: e,
            frame: with(egress_frame, |f| f.dst = FIB_UNREACHABLE),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NO_ROUTE),
        },
        Row {
            name: "egress: to the node's own (gateway) address",
            prog: e,
            frame: with(egress_frame, |f| f.dst = GATEWAY),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress: to the node's uplink address",
            prog: e,
            frame: with(egress_frame, |f| f.dst = [172, 20, 11, 43]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "egress: no route anywhere",
            prog: e,
            frame: with(egress_frame, |f| f.dst = [192, 0, 2, 1]),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        // Ingress, TC on the uplink: remote node → local pod, transit.
        Row {
            name: "ingress: local pod, delivered with redirect_peer",
            prog: i,
            frame: ingress_frame().bytes(),
            ifindex: up,
            gso: 0,
            expect: fast_ingress,
        },
        Row {
            name: "ingress: TTL 2 delivered with TTL 1",
            prog: i,
            frame: with(ingress_frame, |f| f.ttl = 2),
            ifindex: up,
            gso: 0,
            expect: fast_ingress,
        },
        Row {
            name: "ingress: TTL 1 → stack",
            prog: i,
            frame: with(ingress_frame, |f| f.ttl = 1),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_TTL),
        },
        Row {
            name: "ingress: frame not addressed to the uplink MAC",
            prog: i,
            frame: with(ingress_frame, |f| f.dmac = [0x02, 0, 0, 0x11, 0, 0x99]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_NOT_ROUTED),
        },
        Row {
            name: "ingress: broadcast",
            prog: i,
            frame: with(ingress_frame, |f| f.dmac = [0xff; 6]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_MULTICAST),
        },
        Row {
            name: "ingress: source not in any remote pod CIDR (rp_filter)",
            prog: i,
            frame: with(ingress_frame, |f| f.src = [10, 9, 9, 9]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "ingress: source is one of this node's pods (spoofed)",
            prog: i,
            frame: with(ingress_frame, |f| f.src = [10, 1, 79, 8]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "ingress: source route points at another interface",
            prog: i,
            frame: ingress_frame().bytes(),
            ifindex: br,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "ingress: over the pod veth's MTU",
            prog: i,
            frame: Ipv4Frame::udp(UPLINK_MAC, NODE42_MAC, REMOTE, POD, 1501 - 28).bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
        Row {
            name: "ingress: transit to another node's pods",
            prog: i,
            frame: with(ingress_frame, |f| f.dst = SMALL_MTU),
            ifindex: up,
            gso: 0,
            expect: fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        },
        Row {
            name: "ingress: unresolved pod address → the stack resolves it (or says unreachable)",
            prog: i,
            frame: with(ingress_frame, |f| f.dst = [10, 1, 79, 77]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_UNRESOLVED),
        },
        Row {
            name: "ingress: to the node's uplink address",
            prog: i,
            frame: with(ingress_frame, |f| f.dst = [172, 20, 11, 43]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_NOT_FWDED),
        },
        Row {
            name: "ingress: bad checksum",
            prog: i,
            frame: with(ingress_frame, |f| f.bad_checksum = true),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_MALFORMED),
        },
        Row {
            name: "ingress: fragment",
            prog: i,
            frame: with(ingress_frame, |f| f.frag = 0x2000),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_FRAGMENT),
        },
        // XDP on the uplink.
        Row {
            name: "xdp: local pod is left to TC",
            prog: x,
            frame: ingress_frame().bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::HANDOFF_TC),
        },
        Row {
            name: "xdp: transit goes back out with XDP_TX",
            prog: x,
            frame: with(ingress_frame, |f| f.dst = SMALL_MTU),
            ifindex: up,
            gso: 0,
            expect: fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        },
        Row {
            name: "xdp: transit with a trailer: trimmed, then back out with XDP_TX",
            prog: x,
            frame: with(ingress_frame, |f| {
                f.dst = SMALL_MTU;
                f.tot_len = Some(40);
            }),
            ifindex: up,
            gso: 0,
            expect: fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
        },
        Row {
            name: "xdp: transit to an unresolved next hop is left to TC",
            prog: x,
            frame: with(ingress_frame, |f| f.dst = UNRESOLVED),
            ifindex: up,
            gso: 0,
            expect: pass(reason::HANDOFF_TC),
        },
        Row {
            name: "xdp: trie miss is left to TC",
            prog: x,
            frame: with(ingress_frame, |f| f.dst = FIB_ONLY),
            ifindex: up,
            gso: 0,
            expect: pass(reason::HANDOFF_TC),
        },
        Row {
            name: "xdp: TTL 1",
            prog: x,
            frame: with(ingress_frame, |f| f.ttl = 1),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_TTL),
        },
        Row {
            name: "xdp: options",
            prog: x,
            frame: with(ingress_frame, |f| f.options = vec![1, 1, 1, 0]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_IP_OPTIONS),
        },
        Row {
            name: "xdp: VLAN-tagged",
            prog: x,
            frame: with(ingress_frame, |f| f.ethertype = 0x8100),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_NOT_IP),
        },
        Row {
            name: "xdp: spoofed source",
            prog: x,
            frame: with(ingress_frame, |f| f.src = [10, 9, 9, 9]),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_RPF),
        },
        Row {
            name: "xdp: transit over the route MTU",
            prog: x,
            frame: Ipv4Frame::udp(UPLINK_MAC, NODE42_MAC, REMOTE, SMALL_MTU, 1001 - 28).bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_MTU),
        },
    ];
    table.check(&progs, &rows);

    // Every truncation of a forwardable frame, from 0 bytes to its full Ethernet + IPv4 + UDP
    // headers. What the kernel refuses to run (see `refused`) must be refused; every other
    // length is malformed (the IPv4 header is incomplete, or the total length no longer fits)
    // until the frame is whole.
    let full = with(egress_frame, |f| f.payload.truncate(8));
    assert_eq!(full.len(), ETH_LEN + 20 + 8);
    for len in 0..=full.len() {
        for (prog, ifindex) in [(e, port), (x, up)] {
            let mut frame = full[..len].to_vec();
            if prog == Prog::Xdp && len >= 6 {
                frame[0..6].copy_from_slice(&UPLINK_MAC);
            }
            let exp = match len {
                _ if refused(prog, &frame) => Expect::Rejected,
                l if l < full.len() => pass(reason::PASS_MALFORMED),
                // The whole frame: the egress source is a local pod, which the uplink's
                // reverse-path check refuses.
                _ if prog == Prog::Xdp => pass(reason::PASS_RPF),
                _ => fast_egress,
            };
            let name = format!("{prog:?}: truncated to {len} bytes");
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
    println!("truncation rows 0..={} checked", full.len());

    // Forwarding disabled: by the node state the agent writes, and by the kernel (FIB path).
    let mut progs = progs;
    progs.set_forwarding(false);
    let state_off: Vec<Row> = vec![
        Row {
            name: "egress: forwarding off (agent state)",
            prog: e,
            frame: egress_frame().bytes(),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_FWD_DISABLED),
        },
        Row {
            name: "ingress: forwarding off (agent state)",
            prog: i,
            frame: ingress_frame().bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_FWD_DISABLED),
        },
        Row {
            name: "xdp: forwarding off (agent state)",
            prog: x,
            frame: ingress_frame().bytes(),
            ifindex: up,
            gso: 0,
            expect: pass(reason::PASS_FWD_DISABLED),
        },
    ];
    table.check(&progs, &state_off);
    progs.set_forwarding(true);
    sysctl(&world.ns, "net.ipv4.conf.cni0.forwarding", "0");
    table.check(
        &progs,
        &[Row {
            name: "egress: FIB path, kernel forwarding off on the bridge",
            prog: e,
            frame: with(egress_frame, |f| f.dst = FIB_ONLY),
            ifindex: port,
            gso: 0,
            expect: pass(reason::PASS_FWD_DISABLED),
        }],
    );
    sysctl(&world.ns, "net.ipv4.conf.cni0.forwarding", "1");

    // The FIB path checks what will leave, each GSO segment, against the egress MTU; and a
    // route MTU elsewhere in the main table (which the kernel's forwarding honours and the
    // FIB lookup does not) sends larger packets there to the stack.
    let big = |data: usize| Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, FIB_ONLY, data).bytes();
    table.check(
        &progs,
        &[
            Row {
                name: "egress: FIB path, GSO segments that fit the egress MTU",
                prog: e,
                frame: big(3000 - 28),
                ifindex: port,
                gso: 1400,
                expect: fwd(reason::FIB_FORWARD, NODE50_MAC, UPLINK_MAC),
            },
            Row {
                name: "egress: FIB path, GSO segments over the egress MTU",
                prog: e,
                frame: big(3000 - 28),
                ifindex: port,
                gso: 1600,
                expect: pass(reason::PASS_MTU),
            },
        ],
    );
    progs.set_fib_mtu(1000);
    table.check(
        &progs,
        &[
            Row {
                name: "egress: FIB path, under the smallest route MTU",
                prog: e,
                frame: big(1000 - 28),
                ifindex: port,
                gso: 0,
                expect: fwd(reason::FIB_FORWARD, NODE50_MAC, UPLINK_MAC),
            },
            Row {
                name: "egress: FIB path, over the smallest route MTU",
                prog: e,
                frame: big(1001 - 28),
                ifindex: port,
                gso: 0,
                expect: pass(reason::PASS_MTU),
            },
            Row {
                name: "egress: trie hit, over the smallest route MTU elsewhere",
                prog: e,
                frame: Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 1200).bytes(),
                ifindex: port,
                gso: 0,
                expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            },
        ],
    );
    progs.set_fib_mtu(0);

    // FIB fallback and XDP_TX switched off: misses go to the stack, XDP leaves transit to TC.
    let plain = Programs::load(world, 0);
    table.check(
        &plain,
        &[
            Row {
                name: "egress: trie miss with the FIB fallback off",
                prog: e,
                frame: with(egress_frame, |f| f.dst = FIB_ONLY),
                ifindex: port,
                gso: 0,
                expect: pass(reason::PASS_NO_ROUTE),
            },
            Row {
                name: "egress: route hit with the FIB fallback off",
                prog: e,
                frame: egress_frame().bytes(),
                ifindex: port,
                gso: 0,
                expect: fast_egress,
            },
            Row {
                name: "xdp: transit when the uplink cannot XDP_TX",
                prog: x,
                frame: with(ingress_frame, |f| f.dst = SMALL_MTU),
                ifindex: up,
                gso: 0,
                expect: pass(reason::HANDOFF_TC),
            },
        ],
    );
    table.finish();
}
