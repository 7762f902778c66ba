//! The conntrack gate rows: with the gate on, only flows conntrack has confirmed without NAT
//! take the fast path (IPv4 and IPv6, TC and XDP); new flows, flows that cannot be looked up
//! and flows with NAT go to the stack. Conntrack entries are made with `conntrack -I` in the
//! test namespace.

use hostgw_common::{
    CONFIG_F_CT_TIMEOUT, CONFIG_F_FIB_FALLBACK, CONFIG_F_XDP_TX, CtTimeouts, STATE_F_CT_GATE,
    STATE_F_FORWARD_V4, STATE_F_FORWARD_V6, counters::reason,
};
use hostgw_tests::{
    frame::{Ipv4Frame, Ipv6Frame},
    sh,
};

use crate::harness::{Expect, Prog, Programs, Row, Table, egress_frame, egress6, fwd, with, with6};
use crate::world::{
    BRIDGE_MAC, NODE42_MAC, NODE45_MAC, POD, POD_MAC, POD6, REMOTE, REMOTE6, SMALL_MTU, SMALL_MTU6,
    UPLINK_MAC, inside,
};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The seconds left of the conntrack entry `tuple` (`-p … -s … -d … --sport … --dport …`)
/// in the test namespace.
fn ct_timeout(world: &crate::world::World, tuple: &str) -> u32 {
    let mut cmd = world.ns.command("conntrack");
    cmd.arg("-G").args(tuple.split_whitespace());
    let out = String::from_utf8_lossy(&sh(&mut cmd).stdout).into_owned();
    // `udp      17 119 src=…`, `tcp      6 299 ESTABLISHED src=…`
    out.split_whitespace()
        .nth(2)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("conntrack -G {tuple}: {out:?}"))
}

/// The running kernel's release.
fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("osrelease")
        .trim()
        .to_owned()
}

/// The conntrack gate: with it on, only flows conntrack has confirmed without NAT are
/// forwarded. Conntrack entries are made with `conntrack -I` in the test namespace, where the
/// programs' lookups run.
#[test]
fn conntrack_gate() {
    inside("gate", |world| {
        let mut table = Table::default();
        let mut progs = Programs::load(
            world,
            CONFIG_F_FIB_FALLBACK | CONFIG_F_XDP_TX | CONFIG_F_CT_TIMEOUT,
        );
        progs.attach_xdp();
        progs.set_state(STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6 | STATE_F_CT_GATE);
        let ct = |args: &str| {
            let mut cmd = world.ns.command("conntrack");
            cmd.args(["-I"]).args(args.split_whitespace());
            sh(&mut cmd);
        };
        let (e, i, x) = (Prog::Egress, Prog::Ingress, Prog::Xdp);
        let (port, up) = (world.port, world.uplink);
        let pass = Expect::Pass;
        let udp = |src, dst, sport: u16, dport: u16, dmac, smac| {
            let mut frame = Ipv4Frame::udp(dmac, smac, src, dst, 16);
            frame.payload[0..2].copy_from_slice(&sport.to_be_bytes());
            frame.payload[2..4].copy_from_slice(&dport.to_be_bytes());
            frame.bytes()
        };
        let tcp_flags = |src, dst, sport: u16, dport: u16, flags: u8| {
            let mut frame = Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, src, dst, 0);
            frame.proto = 6;
            let mut header = vec![0u8; 20];
            header[0..2].copy_from_slice(&sport.to_be_bytes());
            header[2..4].copy_from_slice(&dport.to_be_bytes());
            header[12] = 5 << 4;
            header[13] = flags;
            frame.payload = header;
            frame.bytes()
        };
        let tcp = |src, dst, sport, dport| tcp_flags(src, dst, sport, dport, ACK);

        // No entry yet: a flow's first packets go through netfilter.
        let rows: Vec<Row> = vec![
            Row {
                name: "gate: UDP without a conntrack entry",
                prog: e,
                frame: udp(POD, REMOTE, 40000, 5201, BRIDGE_MAC, POD_MAC),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_NEW),
            },
            Row {
                name: "gate: TCP without a conntrack entry",
                prog: e,
                frame: tcp(POD, REMOTE, 41000, 80),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_NEW),
            },
            Row {
                name: "gate: ICMP cannot be looked up",
                prog: e,
                frame: with(egress_frame, |f| {
                    f.proto = 1;
                }),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_PROTO),
            },
            Row {
                name: "gate: no L4 header to look up",
                prog: e,
                frame: with(egress_frame, |f| f.payload.clear()),
                ifindex: port,
                gso: 0,
                expect: pass(reason::PASS_MALFORMED),
            },
            Row {
                name: "gate: xdp transit without an entry",
                prog: x,
                frame: udp(REMOTE, SMALL_MTU, 40000, 5201, UPLINK_MAC, NODE42_MAC),
                ifindex: up,
                gso: 0,
                expect: pass(reason::CT_NEW),
            },
        ];
        table.check(&progs, &rows);

        // Established without NAT: forwarded, in both directions, and counted as such.
        ct(
            "-p udp -s 10.1.79.3 -d 10.1.27.4 --sport 40000 --dport 5201 -t 120 -u SEEN_REPLY,ASSURED",
        );
        ct(
            "-p tcp -s 10.1.79.3 -d 10.1.27.4 --sport 41000 --dport 80 --state ESTABLISHED -t 120 -u SEEN_REPLY,ASSURED",
        );
        ct(
            "-p udp -s 10.1.27.4 -d 10.1.29.4 --sport 40000 --dport 5201 -t 120 -u SEEN_REPLY,ASSURED",
        );
        let gated = [
            Row {
                name: "gate: established UDP, original direction",
                prog: e,
                frame: udp(POD, REMOTE, 40000, 5201, BRIDGE_MAC, POD_MAC),
                ifindex: port,
                gso: 0,
                expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            },
            Row {
                name: "gate: established TCP",
                prog: e,
                frame: tcp(POD, REMOTE, 41000, 80),
                ifindex: port,
                gso: 0,
                expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            },
            Row {
                name: "gate: established UDP, reply direction",
                prog: i,
                frame: udp(REMOTE, POD, 5201, 40000, UPLINK_MAC, NODE42_MAC),
                ifindex: up,
                gso: 0,
                expect: fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC),
            },
            Row {
                name: "gate: xdp transit, established",
                prog: x,
                frame: udp(REMOTE, SMALL_MTU, 40000, 5201, UPLINK_MAC, NODE42_MAC),
                ifindex: up,
                gso: 0,
                expect: fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
            },
        ];
        table.gated(&progs, &gated);

        // Confirmed but never replied to (a SYN forwarded, a one-way UDP stream): the stack's,
        // so that conntrack sees the reply and the entry does not expire under a live flow.
        ct("-p udp -s 10.1.79.3 -d 10.1.27.4 --sport 40003 --dport 5201 -t 120");
        ct("-p tcp -s 10.1.79.3 -d 10.1.27.4 --sport 41003 --dport 80 --state SYN_SENT -t 120");
        let unreplied = vec![
            Row {
                name: "gate: UDP without a reply seen (one way so far)",
                prog: e,
                frame: udp(POD, REMOTE, 40003, 5201, BRIDGE_MAC, POD_MAC),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_UNREPLIED),
            },
            Row {
                name: "gate: TCP after its SYN, before the SYN-ACK went through the stack",
                prog: e,
                frame: tcp(POD, REMOTE, 41003, 80),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_UNREPLIED),
            },
        ];
        table.check(&progs, &unreplied);

        // TCP as netfilter's flowtable takes it: only a connection conntrack holds as
        // established and assured; a SYN on its tuple is the stack's.
        ct(
            "-p tcp -s 10.1.79.3 -d 10.1.27.4 --sport 41004 --dport 80 --state SYN_RECV -t 120 -u SEEN_REPLY",
        );
        ct(
            "-p tcp -s 10.1.79.3 -d 10.1.27.4 --sport 41005 --dport 80 --state ESTABLISHED -t 120 -u SEEN_REPLY",
        );
        ct(
            "-p tcp -s 10.1.79.3 -d 10.1.27.4 --sport 41006 --dport 80 --state FIN_WAIT -t 120 -u SEEN_REPLY,ASSURED",
        );
        let tcp_rows = vec![
            Row {
                name: "gate: TCP whose handshake conntrack has not seen end (SYN_RECV)",
                prog: e,
                frame: tcp(POD, REMOTE, 41004, 80),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_TCP),
            },
            Row {
                name: "gate: TCP established but not assured",
                prog: e,
                frame: tcp(POD, REMOTE, 41005, 80),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_TCP),
            },
            Row {
                name: "gate: TCP closing (FIN_WAIT)",
                prog: e,
                frame: tcp(POD, REMOTE, 41006, 80),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_TCP),
            },
            Row {
                name: "gate: SYN on an established connection's tuple",
                prog: e,
                frame: tcp_flags(POD, REMOTE, 41000, 80, SYN),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_TCP),
            },
        ];
        table.check(&progs, &tcp_rows);

        // Lifetimes: the fast path sets the entry's timeout as conntrack would for the
        // packets it hides from it — the state's timeout again when the entry is close to
        // expiring, TIME_WAIT's after a FIN, CLOSE's after an RST.
        let (hz, _) = hostgw_agent::kernel_hz(&release());
        let timeouts = CtTimeouts {
            refresh: 30 * hz,
            tcp_established: 300_000,
            tcp_time_wait: 60_000,
            tcp_close: 10_000,
            udp: 30_000,
            udp_stream: 200_000,
        };
        progs.set_state_ct(
            STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6 | STATE_F_CT_GATE,
            timeouts,
        );
        let entry = |proto: &str, sport: u16, dport: u16| {
            format!("-p {proto} -s 10.1.79.3 -d 10.1.27.4 --sport {sport} --dport {dport}")
        };
        // Two close to expiring (10 s left, the threshold is 30 s), two far from it.
        for (proto, sport, dport, state, left) in [
            ("udp", 40006, 5201, "", 10),
            ("tcp", 41007, 80, "--state ESTABLISHED", 10),
            ("tcp", 41008, 80, "--state ESTABLISHED", 100),
            ("tcp", 41009, 80, "--state ESTABLISHED", 100),
        ] {
            ct(&format!(
                "{} {state} -t {left} -u SEEN_REPLY,ASSURED",
                entry(proto, sport, dport)
            ));
        }
        let lifetimes = [
            (
                Row {
                    name: "gate: UDP entry about to time out gets the stream timeout",
                    prog: e,
                    frame: udp(POD, REMOTE, 40006, 5201, BRIDGE_MAC, POD_MAC),
                    ifindex: port,
                    gso: 0,
                    expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
                },
                entry("udp", 40006, 5201),
                190..=200,
            ),
            (
                Row {
                    name: "gate: TCP entry about to time out gets the established timeout",
                    prog: e,
                    frame: tcp(POD, REMOTE, 41007, 80),
                    ifindex: port,
                    gso: 0,
                    expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
                },
                entry("tcp", 41007, 80),
                290..=300,
            ),
            (
                Row {
                    name: "gate: a FIN gives the entry TIME_WAIT's timeout",
                    prog: e,
                    frame: tcp_flags(POD, REMOTE, 41008, 80, FIN | ACK),
                    ifindex: port,
                    gso: 0,
                    expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
                },
                entry("tcp", 41008, 80),
                50..=60,
            ),
            (
                Row {
                    name: "gate: an RST gives the entry CLOSE's timeout",
                    prog: e,
                    frame: tcp_flags(POD, REMOTE, 41009, 80, RST | ACK),
                    ifindex: port,
                    gso: 0,
                    expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
                },
                entry("tcp", 41009, 80),
                5..=10,
            ),
        ];
        for (row, tuple, want) in &lifetimes {
            table.gated(&progs, std::slice::from_ref(row));
            let left = ct_timeout(world, tuple);
            table.record(if want.contains(&left) {
                Ok(())
            } else {
                Err(format!(
                    "{}: the entry has {left} s left, expected {want:?}",
                    row.name
                ))
            });
        }
        // Far from its timeout, an entry is left alone.
        table.gated(
            &progs,
            &[Row {
                name: "gate: established UDP, far from its timeout",
                prog: e,
                frame: udp(POD, REMOTE, 40000, 5201, BRIDGE_MAC, POD_MAC),
                ifindex: port,
                gso: 0,
                expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            }],
        );
        let left = ct_timeout(world, &entry("udp", 40000, 5201));
        table.record(if (100..=120).contains(&left) {
            Ok(())
        } else {
            Err(format!(
                "gate: an entry far from its timeout was changed to {left} s"
            ))
        });
        // A kernel without bpf_ct_change_timeout: those packets go through the stack, which
        // refreshes the entry itself.
        let mut old = Programs::load(world, CONFIG_F_FIB_FALLBACK);
        old.set_state_ct(
            STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6 | STATE_F_CT_GATE,
            timeouts,
        );
        ct(&format!(
            "{} -t 10 -u SEEN_REPLY,ASSURED",
            entry("udp", 40007, 5201)
        ));
        table.check(
            &old,
            &[
                Row {
                    name: "gate without bpf_ct_change_timeout: UDP entry about to time out",
                    prog: e,
                    frame: udp(POD, REMOTE, 40007, 5201, BRIDGE_MAC, POD_MAC),
                    ifindex: port,
                    gso: 0,
                    expect: pass(reason::CT_REFRESH),
                },
                Row {
                    name: "gate without bpf_ct_change_timeout: a FIN",
                    prog: e,
                    frame: tcp_flags(POD, REMOTE, 41000, 80, FIN | ACK),
                    ifindex: port,
                    gso: 0,
                    expect: pass(reason::CT_REFRESH),
                },
            ],
        );
        drop(old);
        progs.set_state(STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6 | STATE_F_CT_GATE);

        // NAT: a service's DNAT (the reply comes back from the backend) and a masquerade.
        ct(
            "-p udp -s 10.1.79.3 -d 10.96.0.10 --sport 40001 --dport 53 -t 120 --dst-nat 10.1.27.4:5353",
        );
        ct(
            "-p udp -s 10.1.79.3 -d 10.1.27.4 --sport 40002 --dport 5201 -t 120 --src-nat 172.20.11.43",
        );
        let rows: Vec<Row> = vec![
            Row {
                name: "gate: reply of a DNATed flow (ClusterIP)",
                prog: i,
                frame: udp(REMOTE, POD, 5353, 40001, UPLINK_MAC, NODE42_MAC),
                ifindex: up,
                gso: 0,
                expect: pass(reason::CT_NAT),
            },
            Row {
                name: "gate: SNATed flow (masquerade)",
                prog: e,
                frame: udp(POD, REMOTE, 40002, 5201, BRIDGE_MAC, POD_MAC),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_NAT),
            },
        ];
        table.check(&progs, &rows);

        // IPv6 flows: the same gate, looked up with the IPv6 tuple.
        let udp6 = |src, dst, sport: u16, dport: u16, dmac, smac| {
            let mut frame = Ipv6Frame::udp(dmac, smac, src, dst, 16);
            frame.payload[0..2].copy_from_slice(&sport.to_be_bytes());
            frame.payload[2..4].copy_from_slice(&dport.to_be_bytes());
            frame.bytes()
        };
        let tcp6 = |src, dst, sport: u16, dport: u16| {
            let mut frame = Ipv6Frame::udp(BRIDGE_MAC, POD_MAC, src, dst, 0);
            frame.next = 6;
            let mut header = vec![0u8; 20];
            header[0..2].copy_from_slice(&sport.to_be_bytes());
            header[2..4].copy_from_slice(&dport.to_be_bytes());
            header[12] = 5 << 4;
            header[13] = 0x10; // ACK
            frame.payload = header;
            frame.bytes()
        };
        let rows: Vec<Row> = vec![
            Row {
                name: "gate6: UDP without an entry (its IPv4 twin has one)",
                prog: e,
                frame: udp6(POD6, REMOTE6, 40000, 5201, BRIDGE_MAC, POD_MAC),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_NEW),
            },
            Row {
                name: "gate6: TCP without a conntrack entry",
                prog: e,
                frame: tcp6(POD6, REMOTE6, 41000, 80),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_NEW),
            },
            Row {
                name: "gate6: ICMPv6 cannot be looked up",
                prog: e,
                frame: Ipv6Frame::icmp(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 128).bytes(),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_PROTO),
            },
            Row {
                name: "gate6: no L4 header to look up",
                prog: e,
                frame: with6(egress6, |f| f.payload.clear()),
                ifindex: port,
                gso: 0,
                expect: pass(reason::PASS_MALFORMED),
            },
            Row {
                name: "gate6: xdp transit without an entry",
                prog: x,
                frame: udp6(REMOTE6, SMALL_MTU6, 40000, 5201, UPLINK_MAC, NODE42_MAC),
                ifindex: up,
                gso: 0,
                expect: pass(reason::CT_NEW),
            },
        ];
        table.check(&progs, &rows);
        ct(
            "-p udp -s fd00:10:1:79::3 -d fd00:10:1:27::4 --sport 40000 --dport 5201 -t 120 -u SEEN_REPLY,ASSURED",
        );
        ct(
            "-p tcp -s fd00:10:1:79::3 -d fd00:10:1:27::4 --sport 41000 --dport 80 --state ESTABLISHED -t 120 -u SEEN_REPLY,ASSURED",
        );
        ct(
            "-p udp -s fd00:10:1:27::4 -d fd00:10:1:29::4 --sport 40000 --dport 5201 -t 120 -u SEEN_REPLY,ASSURED",
        );
        let gated = [
            Row {
                name: "gate6: established UDP, original direction",
                prog: e,
                frame: udp6(POD6, REMOTE6, 40000, 5201, BRIDGE_MAC, POD_MAC),
                ifindex: port,
                gso: 0,
                expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            },
            Row {
                name: "gate6: established TCP",
                prog: e,
                frame: tcp6(POD6, REMOTE6, 41000, 80),
                ifindex: port,
                gso: 0,
                expect: fwd(reason::FAST_EGRESS, NODE42_MAC, UPLINK_MAC),
            },
            Row {
                name: "gate6: established UDP, reply direction",
                prog: i,
                frame: udp6(REMOTE6, POD6, 5201, 40000, UPLINK_MAC, NODE42_MAC),
                ifindex: up,
                gso: 0,
                expect: fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC),
            },
            Row {
                name: "gate6: xdp transit, established",
                prog: x,
                frame: udp6(REMOTE6, SMALL_MTU6, 40000, 5201, UPLINK_MAC, NODE42_MAC),
                ifindex: up,
                gso: 0,
                expect: fwd(reason::FAST_TRANSIT, NODE45_MAC, UPLINK_MAC),
            },
        ];
        table.gated(&progs, &gated);
        ct(
            "-p udp -s fd00:10:1:79::3 -d fd00:10:1:27::4 --sport 40002 --dport 5201 -t 120 --src-nat fd00:172:20:11::43",
        );
        table.check(
            &progs,
            &[Row {
                name: "gate6: SNATed flow (masquerade)",
                prog: e,
                frame: udp6(POD6, REMOTE6, 40002, 5201, BRIDGE_MAC, POD_MAC),
                ifindex: port,
                gso: 0,
                expect: pass(reason::CT_NAT),
            }],
        );

        // The gate off: the same NATed flow would take the fast path.
        progs.set_state(STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6);
        table.check(
            &progs,
            &[Row {
                name: "gate off: the DNATed reply is forwarded (what the gate prevents)",
                prog: i,
                frame: udp(REMOTE, POD, 5353, 40001, UPLINK_MAC, NODE42_MAC),
                ifindex: up,
                gso: 0,
                expect: fwd(reason::FAST_INGRESS, POD_MAC, BRIDGE_MAC),
            }],
        );
        table.finish();
    });
}
