//! End-to-end tests of IPv6 on a dual-stack 3-node × 2-pod lab (see `hostgw_tests::lab`):
//! every pod has an IPv4 and an IPv6 address, every node an IPv4 and an IPv6 pod CIDR, and
//! the agents route both. Real `ping`, `traceroute -6` and TCP between pods over IPv6, the
//! kernel's IPv6 forwarding counter next to the programs' IPv6 counters, Packet Too Big for an
//! over-MTU packet, and nodes with only one family.
//!
//! Kernel-only tests run the flannel host-gw baseline (kernel routes, no programs): they prove
//! the lab and its measurements. Each test builds its own lab under a name of its own, so tests
//! run in parallel.

use std::{net::Ipv6Addr, time::Duration};

use hostgw_common::counters::{family, hook, reason};
use hostgw_tests::lab::{self, Family, Lab, Mode, NodeEntry, PingStats, Spec};

const NODES: usize = 3;
const PODS: usize = 2;

fn lab(name: &str, mode: Mode) -> Lab {
    let lab = Lab::start(name, &Spec::new(NODES, PODS, mode));
    assert!(lab.ipv6(), "the default lab is dual-stack");
    lab
}

fn assert_pings(lab: &Lab, stats: PingStats, count: u32, what: &str) {
    assert!(
        stats.sent == count && stats.received == count,
        "{what}: {stats:?} of {count}\n{}",
        lab.all_agent_logs()
    );
}

/// Every ordered pair of pods pings over IPv6, all pairs at once; every echo is answered.
fn every_pod_pair_pings6(lab: &Lab) {
    let (pairs, failed) = lab.unanswered_pod_pairs(Family::V6);
    assert_eq!(pairs, NODES * PODS * (NODES * PODS - 1));
    assert!(
        failed.is_empty(),
        "pod pairs that did not ping over IPv6:\n{}\n{}",
        failed.join("\n"),
        lab.all_agent_logs()
    );
}

#[test]
fn kernel_only_every_pod_pair_pings_over_ipv6() {
    let lab = lab("k6ping", Mode::KernelOnly);
    every_pod_pair_pings6(&lab);
}

/// The agents route IPv6 (`podCIDRv6 via nodeIPv6 dev eth0 proto 203`, the lab waited for
/// them), turned IPv6 forwarding on, and every pod pair pings over IPv6, and over IPv4 too.
#[test]
fn fast_path_every_pod_pair_pings_over_ipv6() {
    let lab = lab("f6ping", Mode::FastPath);
    for i in 1..=NODES {
        assert_eq!(
            lab.sysctl(i, "net.ipv6.conf.all.forwarding"),
            "1",
            "n{i}: the agent did not turn IPv6 forwarding on\n{}",
            lab.agent_log(i)
        );
        let routes = lab.agent_routes6(i);
        assert_eq!(routes.len(), NODES - 1, "n{i} IPv6 routes: {routes:?}");
        let trie = lab.trie6(i);
        for (cidr, via) in &routes {
            let entry = trie
                .get(cidr)
                .unwrap_or_else(|| panic!("n{i}: no ROUTES_V6 entry for {cidr}: {trie:?}"));
            assert_eq!(Ipv6Addr::from(entry.node_ip), *via, "n{i} {cidr}");
        }
    }
    every_pod_pair_pings6(&lab);
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(3, 2).ip(),
        3,
        Duration::from_millis(100),
    );
    assert_pings(&lab, s, 3, "IPv4 ping n1p1 → n3p2 in the dual-stack lab");
}

#[test]
fn fast_path_ipv6_tcp_transfer_arrives_intact() {
    let lab = lab("f6tcp", Mode::FastPath);
    let before = lab.fast_path_counters(1);
    let t = lab.tcp_transfer6(lab.pod(1, 1), lab.pod(2, 2), 16 << 20);
    assert_eq!(t.bytes, 16 << 20);
    let t = lab.tcp_transfer6(lab.pod(3, 2), lab.pod(1, 2), 16 << 20);
    assert_eq!(t.bytes, 16 << 20);
    let grew = lab.fast_path_counters(1).since(&before);
    println!(
        "16 MiB each way over IPv6, {:.0} Mbit/s: n1 {:?}",
        t.mbit_per_s(),
        grew.nonzero()
    );
    // Segments travel as GSO super-packets of up to 64 KiB: 32 MiB is some 500 of them, plus
    // the acknowledgements.
    assert!(
        grew.fast_in(family::IPV6) >= 200,
        "n1's programs forwarded {} IPv6 packets of two 16 MiB transfers\n{}",
        grew.fast_in(family::IPV6),
        lab.all_agent_logs()
    );
}

/// The host-gw hops from pod n1p1 to pod n2p1 over IPv6: its gateway, n2's uplink, the pod.
fn host_gw_hops6(lab: &Lab) -> Vec<Option<Ipv6Addr>> {
    vec![
        Some(lab.node(1).gateway6()),
        Some(lab.node(2).uplink_ip6()),
        Some(lab.pod(2, 1).ip6()),
    ]
}

#[test]
fn fast_path_traceroute6_shows_the_kernel_hops() {
    let kernel = lab("f6trace-k", Mode::KernelOnly);
    let kernel_hops = kernel.traceroute(kernel.pod(1, 1), kernel.pod(2, 1).ip6());
    assert_eq!(
        kernel_hops,
        host_gw_hops6(&kernel),
        "kernel-only traceroute -6"
    );
    drop(kernel);
    let fast = lab("f6trace-f", Mode::FastPath);
    // Twice: the second run meets resolved neighbours and learned MACs, the steady state.
    for run in 1..=2 {
        let hops = fast.traceroute(fast.pod(1, 1), fast.pod(2, 1).ip6());
        assert_eq!(
            hops,
            kernel_hops,
            "run {run}: fast-path traceroute -6 hops differ from kernel-only hops\n{}",
            fast.all_agent_logs()
        );
    }
}

/// [`Lab::forwarding_during_pings`] over IPv6, with the programs' IPv6 fast counters (`None`
/// in kernel-only mode).
fn forwarding_counters6(lab: &Lab, count: u32) -> [(u64, Option<u64>); 2] {
    lab.forwarding_during_pings(Family::V6, count)
        .map(|(forw, grew)| (forw, grew.map(|c| c.fast_in(family::IPV6))))
}

#[test]
fn kernel_only_ipv6_forwarding_counter_counts_pod_traffic() {
    let lab = lab("k6forw", Mode::KernelOnly);
    let count = 200;
    for (k, (forw, _)) in forwarding_counters6(&lab, count).into_iter().enumerate() {
        assert!(
            forw >= 2 * u64::from(count),
            "n{}: Ip6OutForwDatagrams grew by {forw} for {count} pings",
            k + 1
        );
    }
}

#[test]
fn fast_path_bypasses_kernel_ipv6_forwarding() {
    let lab = lab("f6forw", Mode::FastPath);
    let count = 200;
    for (k, (forw, fast)) in forwarding_counters6(&lab, count).into_iter().enumerate() {
        let fast = fast.expect("fast-path lab has counters");
        println!(
            "n{}: Ip6OutForwDatagrams +{forw}, IPv6 fast path +{fast}",
            k + 1
        );
        assert!(
            forw < 10,
            "n{}: the kernel forwarded {forw} IPv6 datagrams of {count} pings (fast path: \
             {fast})\n{}",
            k + 1,
            lab.all_agent_logs()
        );
        assert!(
            fast >= 2 * u64::from(count),
            "n{}: the programs forwarded {fast} IPv6 packets for {count} pings",
            k + 1
        );
    }
}

/// A packet larger than the egress MTU is the stack's: n1's uplink is narrowed to 1400 bytes
/// while its pods keep 1500, and a full-size IPv6 ping from n1p1 gets `ICMPv6` Packet Too Big
/// from n1's gateway (IPv6 routers never fragment), which the programs left to the stack.
/// Smaller packets keep flowing.
#[test]
fn over_mtu_ipv6_packet_gets_packet_too_big() {
    let lab = lab("f6mtu", Mode::FastPath);
    let (from, to) = (lab.pod(1, 1), lab.pod(2, 1).ip6());
    let warm = lab.ping(from, to, 3, Duration::from_millis(100));
    assert_pings(&lab, warm, 3, "warm-up ping -6 n1p1 → n2p1");
    lab.node(1)
        .ns()
        .ip(&["link", "set", lab::UPLINK, "mtu", "1400"]);
    let before = lab.fast_path_counters(1);
    // 1452 bytes of payload + 8 (ICMPv6) + 40 (IPv6) = 1500 bytes.
    let mut cmd = from.ns().command("ping");
    cmd.args(["-6", "-n", "-c", "1", "-W", "2", "-s", "1452", "-M", "do"])
        .arg(to.to_string());
    let out = lab::output_within(&mut cmd, Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    let grew = lab.fast_path_counters(1).since(&before);
    println!("{}\nn1: {:?}", text.trim(), grew.nonzero());
    assert!(
        text.contains("Packet too big") && text.contains("mtu=1400"),
        "ping -6 -s 1452 over a 1400-byte uplink did not get Packet Too Big:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mtu = grew.get_in(family::IPV6, hook::EGRESS, reason::PASS_MTU);
    assert!(
        mtu >= 1,
        "n1's egress program did not hand the packet to the stack as over-MTU"
    );
    let s = lab.ping(from, to, 5, Duration::from_millis(50));
    assert_pings(&lab, s, 5, "small pings -6 after Packet Too Big");
}

/// A node with only one family is fine: n3 lists only IPv4 and n2 only IPv6. The others route
/// each family where the node has it, skip the family it lacks with a reason, and traffic of
/// each family flows where both ends have it.
#[test]
fn nodes_with_one_family_are_routed_for_that_family() {
    let mut list: Vec<NodeEntry> = (1..=NODES).map(NodeEntry::of).collect();
    // n2: IPv6 only (an IPv6 pod CIDR and InternalIP, no IPv4 ones).
    list[1].pod_cidr = list[1].pod_cidr_v6.take().expect("dual-stack entry");
    list[1].internal_ip = list[1].internal_ip_v6.take();
    // n3: IPv4 only.
    list[2].pod_cidr_v6 = None;
    list[2].internal_ip_v6 = None;
    let lab = Lab::start(
        "f6mixed",
        &Spec {
            node_list: Some(list),
            ..Spec::new(NODES, PODS, Mode::FastPath)
        },
    );
    let v4 = lab.agent_routes(1);
    let v6 = lab.agent_routes6(1);
    assert_eq!(
        v4.keys().cloned().collect::<Vec<_>>(),
        [lab.node(3).pod_cidr()],
        "n1's IPv4 routes"
    );
    assert_eq!(
        v6.keys().cloned().collect::<Vec<_>>(),
        [lab.node(2).pod_cidr6()],
        "n1's IPv6 routes"
    );
    let events = lab.agent_events(1);
    for (node, family) in [("n2", "ipv4"), ("n3", "ipv6")] {
        let reported = events.iter().any(|e| {
            e.level == "WARN"
                && e.message().starts_with("skipping node")
                && e.field_str("node") == Some(node)
                && e.field_str("family") == Some(family)
                && e.field_str("reason") == Some("no_pod_cidr")
        });
        assert!(
            reported,
            "n1's agent did not report the family {node} lacks ({family}):\n{}",
            lab.agent_log(1)
        );
    }
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(2, 1).ip6(),
        3,
        Duration::from_millis(100),
    );
    assert_pings(&lab, s, 3, "ping -6 n1p1 → n2p1 (n2 is IPv6-only)");
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(3, 1).ip(),
        3,
        Duration::from_millis(100),
    );
    assert_pings(&lab, s, 3, "ping n1p1 → n3p1 (n3 is IPv4-only)");
}
