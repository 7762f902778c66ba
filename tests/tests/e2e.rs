//! End-to-end tests on a 3-node × 2-pod lab (see `hostgw_tests::lab`): real `ping`,
//! `traceroute` and TCP between pods, the kernel's forwarding counter next to the programs'
//! counters, and the agent's reaction to node list edits, MAC changes, deleted routes,
//! malformed nodes and being killed.
//!
//! Kernel-only tests run the flannel host-gw baseline (kernel routes, no programs): they prove
//! the lab and its measurements, so that a fast-path test failing means the fast path failed.
//! Each test builds its own lab under a name of its own, so tests run in parallel.

use std::{
    net::Ipv4Addr,
    os::unix::process::ExitStatusExt as _,
    time::{Duration, Instant},
};

use hostgw_common::{ROUTE_F_RESOLVED, names};
use hostgw_tests::lab::{self, Family, Lab, Mode, NodeEntry, PingStats, Spec, wait_for};

const NODES: usize = 3;
const PODS: usize = 2;
/// How long the agents get to apply a nodes-file edit.
const FILE_EDIT_TIMEOUT: Duration = Duration::from_secs(10);

fn lab(name: &str, mode: Mode) -> Lab {
    Lab::start(name, &Spec::new(NODES, PODS, mode))
}

/// Every ordered pair of pods pings, all pairs at once; every echo is answered.
fn every_pod_pair_pings(lab: &Lab) {
    let (pairs, failed) = lab.unanswered_pod_pairs(Family::V4);
    assert_eq!(pairs, NODES * PODS * (NODES * PODS - 1));
    assert!(
        failed.is_empty(),
        "pod pairs that did not ping:\n{}\n{}",
        failed.join("\n"),
        lab.all_agent_logs()
    );
}

fn assert_pings(lab: &Lab, stats: PingStats, count: u32, what: &str) {
    assert!(
        stats.sent == count && stats.received == count,
        "{what}: {stats:?} of {count}\n{}",
        lab.all_agent_logs()
    );
}

#[test]
fn kernel_only_every_pod_pair_pings() {
    let lab = lab("kping", Mode::KernelOnly);
    every_pod_pair_pings(&lab);
}

#[test]
fn fast_path_every_pod_pair_pings() {
    let lab = lab("fping", Mode::FastPath);
    every_pod_pair_pings(&lab);
}

#[test]
fn kernel_only_tcp_transfer_arrives_intact() {
    let lab = lab("ktcp", Mode::KernelOnly);
    let t = lab.tcp_transfer(lab.pod(1, 1), lab.pod(2, 2), 16 << 20);
    assert_eq!(t.bytes, 16 << 20);
}

#[test]
fn fast_path_tcp_transfer_arrives_intact() {
    let lab = lab("ftcp", Mode::FastPath);
    let before = lab.fast_path_counters(1);
    let t = lab.tcp_transfer(lab.pod(1, 1), lab.pod(2, 2), 16 << 20);
    assert_eq!(t.bytes, 16 << 20);
    // The other direction too: data one way, acks the other, then the roles swap.
    let t = lab.tcp_transfer(lab.pod(3, 2), lab.pod(1, 2), 16 << 20);
    assert_eq!(t.bytes, 16 << 20);
    let grew = lab.fast_path_counters(1).since(&before).fast();
    assert!(
        grew > 0,
        "n1's programs forwarded none of the TCP segments\n{}",
        lab.all_agent_logs()
    );
}

/// The host-gw hops from pod n1p1 to pod n2p1: its gateway, n2's uplink, the pod.
fn host_gw_hops(lab: &Lab) -> Vec<Option<Ipv4Addr>> {
    vec![
        Some(lab.node(1).gateway()),
        Some(lab.node(2).uplink_ip()),
        Some(lab.pod(2, 1).ip()),
    ]
}

#[test]
fn kernel_only_traceroute_shows_host_gw_hops() {
    let lab = lab("ktrace", Mode::KernelOnly);
    let hops = lab.traceroute(lab.pod(1, 1), lab.pod(2, 1).ip());
    assert_eq!(hops, host_gw_hops(&lab), "traceroute n1p1 → n2p1");
}

#[test]
fn fast_path_traceroute_shows_the_kernel_hops() {
    let kernel = lab("ftrace-k", Mode::KernelOnly);
    let kernel_hops = kernel.traceroute(kernel.pod(1, 1), kernel.pod(2, 1).ip());
    drop(kernel);
    let fast = lab("ftrace-f", Mode::FastPath);
    // Twice: the second run meets resolved neighbours and learned MACs, the steady state.
    for run in 1..=2 {
        let hops = fast.traceroute(fast.pod(1, 1), fast.pod(2, 1).ip());
        assert_eq!(
            hops, kernel_hops,
            "run {run}: fast-path hops differ from kernel-only hops"
        );
    }
    assert_eq!(kernel_hops, host_gw_hops(&fast));
}

/// [`Lab::forwarding_during_pings`] over IPv4, with the programs' fast counters (`None` in
/// kernel-only mode).
fn forwarding_counters(lab: &Lab, count: u32) -> [(u64, Option<u64>); 2] {
    lab.forwarding_during_pings(Family::V4, count)
        .map(|(forw, grew)| (forw, grew.map(|c| c.fast())))
}

#[test]
fn kernel_only_forwarding_counter_counts_pod_traffic() {
    let lab = lab("kforw", Mode::KernelOnly);
    let count = 200;
    for (k, (forw, _)) in forwarding_counters(&lab, count).into_iter().enumerate() {
        // Each node forwards every request and every reply once.
        assert!(
            forw >= 2 * u64::from(count),
            "n{}: ForwDatagrams grew by {forw} for {count} pings",
            k + 1
        );
    }
}

#[test]
fn fast_path_bypasses_kernel_forwarding() {
    let lab = lab("fforw", Mode::FastPath);
    let count = 200;
    for (k, (forw, fast)) in forwarding_counters(&lab, count).into_iter().enumerate() {
        let fast = fast.expect("fast-path lab has counters");
        assert!(
            forw < 10,
            "n{}: the kernel forwarded {forw} datagrams of {count} pings (fast path: {fast})\n{}",
            k + 1,
            lab.all_agent_logs()
        );
        assert!(
            fast >= 2 * u64::from(count),
            "n{}: the programs forwarded {fast} packets for {count} pings (requests and \
             replies: {})",
            k + 1,
            2 * count
        );
    }
}

#[test]
fn removing_a_node_removes_its_route_and_trie_entry() {
    let mut lab = lab("fremove", Mode::FastPath);
    let cidr = lab.node(3).pod_cidr();
    let n3_ip = lab.node(3).uplink_ip();
    for i in [1, 2] {
        assert_eq!(lab.agent_routes(i).get(&cidr), Some(&n3_ip), "n{i} routes");
        let entry = lab.trie_entry(i, &cidr);
        assert!(
            entry.is_some_and(|e| e.route.node_ip == n3_ip.octets()),
            "n{i}: trie entry for {cidr} is {entry:?}"
        );
    }

    lab.remove_node(3);
    for i in [1, 2] {
        wait_for(
            FILE_EDIT_TIMEOUT,
            || {
                format!(
                    "n{i} to drop {cidr}: routes {:?}, trie {:?}\n{}",
                    lab.agent_routes(i),
                    lab.trie(i),
                    lab.agent_log(i)
                )
            },
            || {
                (!lab.agent_routes(i).contains_key(&cidr) && lab.trie_entry(i, &cidr).is_none())
                    .then_some(())
            },
        );
        // The route to n2's pods is untouched.
        let other = if i == 1 { 2 } else { 1 };
        assert!(
            lab.agent_routes(i)
                .contains_key(&lab.node(other).pod_cidr()),
            "n{i} lost its route to n{other}"
        );
    }
    // Without a route, n3's pods are unreachable from n1.
    let cut = lab.ping(
        lab.pod(1, 1),
        lab.pod(3, 1).ip(),
        2,
        Duration::from_millis(200),
    );
    assert_eq!(cut.received, 0, "n1p1 still reaches n3p1: {cut:?}");

    lab.restore_nodes();
    lab.wait_routes_converged(FILE_EDIT_TIMEOUT);
    for i in [1, 2] {
        let entry = wait_for(
            FILE_EDIT_TIMEOUT,
            || format!("n{i} to restore the trie entry for {cidr}"),
            || lab.trie_entry(i, &cidr),
        );
        assert_eq!(entry.route.node_ip, n3_ip.octets(), "n{i}: {entry:?}");
    }
    let back = lab.ping(
        lab.pod(1, 1),
        lab.pod(3, 1).ip(),
        3,
        Duration::from_millis(200),
    );
    assert_pings(&lab, back, 3, "n1p1 → n3p1 after restoring n3");
}

#[test]
fn uplink_mac_change_is_picked_up_without_restart() {
    let mut lab = lab("fmac", Mode::FastPath);
    let cidr = lab.node(2).pod_cidr();
    let old = lab.node(2).uplink_mac();
    let new = [0x02, 0, 0xac, 0x14, 0x0b, 0x99];
    let pids = [1, 2, 3].map(|i| lab.agent_pid(i));

    // Traffic from n1 and n3 to n2 resolves n2's MAC on both.
    for i in [1, 3] {
        let s = lab.ping(
            lab.pod(i, 1),
            lab.pod(2, 1).ip(),
            3,
            Duration::from_millis(200),
        );
        assert_pings(&lab, s, 3, &format!("n{i}p1 → n2p1"));
    }
    let has_mac = |lab: &Lab, i: usize, mac: [u8; 6]| {
        lab.trie_entry(i, &cidr)
            .is_some_and(|e| e.route.node_mac == mac && e.route.flags & ROUTE_F_RESOLVED != 0)
    };
    for i in [1, 3] {
        wait_for(
            FILE_EDIT_TIMEOUT,
            || {
                format!(
                    "n{i}'s trie entry for {cidr} to carry n2's MAC: {:?}",
                    lab.trie_entry(i, &cidr)
                )
            },
            || has_mac(&lab, i, old).then_some(()),
        );
    }

    lab.set_uplink_mac(2, new);
    for i in [1, 3] {
        wait_for(
            Duration::from_secs(5),
            || {
                format!(
                    "n{i}'s trie entry for {cidr} to carry n2's new MAC {}: {:?}\n{}",
                    lab::mac_string(new),
                    lab.trie_entry(i, &cidr),
                    lab.agent_log(i)
                )
            },
            || has_mac(&lab, i, new).then_some(()),
        );
    }
    for i in [1, 3] {
        let s = lab.ping(
            lab.pod(i, 1),
            lab.pod(2, 2).ip(),
            20,
            Duration::from_millis(50),
        );
        assert_pings(&lab, s, 20, &format!("n{i}p1 → n2p2 after the MAC change"));
    }
    // Without a restart: the same agent processes, all still running.
    for i in [1, 2, 3] {
        assert!(lab.agent_running(i), "the agent of n{i} exited");
        assert_eq!(
            lab.agent_pid(i),
            pids[i - 1],
            "the agent of n{i} was replaced"
        );
    }
}

/// The agent's programs stay attached when it is killed, forward the whole time, and the
/// restarted agent adopts them: with tcx (or, on kernels without it, clsact) as the kernel
/// offers.
#[test]
fn agent_sigkill_loses_no_packet_and_restart_adopts_pins() {
    sigkill_and_restart(lab("fkill", Mode::FastPath));
}

/// The same with clsact filters, which kernels before 6.6 get (`--tc-attach clsact` here): one
/// filter per hook before and after, the running programs kept.
#[test]
fn agent_sigkill_loses_no_packet_and_restart_adopts_clsact_filters() {
    let spec = Spec {
        agent_args: vec!["--tc-attach".into(), "clsact".into()],
        ..Spec::new(NODES, PODS, Mode::FastPath)
    };
    let lab = Lab::start("fkillcls", &spec);
    assert!(
        matches!(attached(&lab, 1), Attached::Clsact(_)),
        "n1 attached with tcx despite --tc-attach clsact"
    );
    sigkill_and_restart(lab);
}

/// How node 1's TC programs are attached: the pinned tcx link of its uplink, or else its
/// clsact filters (one per hook, which this asserts) as `(hook, program id)`.
#[derive(Debug, PartialEq, Eq)]
enum Attached {
    Tcx(u32),
    Clsact(Vec<(String, u64)>),
}

fn attached(lab: &Lab, i: usize) -> Attached {
    if let Some(link) = lab.uplink_link_id(i) {
        return Attached::Tcx(link);
    }
    let hooks = [lab::UPLINK.to_owned(), lab::BRIDGE.to_owned()]
        .into_iter()
        .chain((1..=PODS).map(|j| lab.pod(i, j).host_veth()));
    Attached::Clsact(
        hooks
            .map(|dev| {
                let filters = lab.hook_filters(i, &dev);
                assert_eq!(
                    filters.len(),
                    1,
                    "hostgw filters on n{i}'s {dev}: {filters:?}"
                );
                (dev, filters[0].prog_id)
            })
            .collect(),
    )
}

fn sigkill_and_restart(mut lab: Lab) {
    let (from, to) = (lab.pod(1, 1), lab.pod(2, 1).ip());
    let warm = lab.ping(from, to, 3, Duration::from_millis(200));
    assert_pings(&lab, warm, 3, "warm-up n1p1 → n2p1");
    let maps = [names::STATS, names::ROUTES_V4, names::ENDPOINTS_V4];
    let map_ids = maps.map(|m| lab.map_id(1, m));
    let hooks = attached(&lab, 1);
    let prog = lab
        .uplink_prog_id(1)
        .expect("n1 has a program on its uplink");

    let count = 500;
    let job = lab.ping_spawn(from, to, count, Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(1));
    let status = lab.kill_agent(1, libc::SIGKILL);
    assert_eq!(status.signal(), Some(libc::SIGKILL), "agent exit: {status}");
    // Killed, the agent left its programs attached (pinned links, or filters).
    assert_eq!(
        lab.uplink_prog_id(1),
        Some(prog),
        "n1's uplink program went away with its agent"
    );
    assert_eq!(attached(&lab, 1), hooks, "the killed agent's hooks changed");
    lab.restart_agent(1);
    let stats = job.wait(Duration::from_secs(30));
    assert_pings(
        &lab,
        stats,
        count,
        "100 pps ping across the agent's SIGKILL and restart",
    );

    // The restarted agent took the pins over: the same maps, the same hooks and programs.
    for (m, id) in maps.iter().zip(map_ids) {
        assert_eq!(lab.map_id(1, m), id, "the restarted agent replaced map {m}");
    }
    assert_eq!(
        attached(&lab, 1),
        hooks,
        "the restarted agent replaced its hooks instead of adopting them"
    );
    assert_eq!(
        lab.uplink_prog_id(1),
        Some(prog),
        "the uplink program changed"
    );
    if let Attached::Tcx(link) = hooks {
        assert!(
            lab.agent_link_ids(1).contains(&link),
            "the restarted agent does not hold the pinned uplink link {link}: {:?}",
            lab.agent_link_ids(1)
        );
    }
    // ...and manages them: a deleted route comes back.
    let cidr = lab.node(2).pod_cidr();
    lab.node(1).ns().ip(&["route", "del", &cidr]);
    wait_for(
        Duration::from_secs(3),
        || {
            format!(
                "the restarted agent of n1 to restore {cidr}\n{}",
                lab.agent_log(1)
            )
        },
        || lab.agent_routes(1).contains_key(&cidr).then_some(()),
    );
    // The adopted dataplane keeps forwarding.
    let before = lab.fast_path_counters(1);
    let again = lab.ping(lab.pod(1, 1), to, 20, Duration::from_millis(10));
    assert_pings(&lab, again, 20, "n1p1 → n2p1 after the restart");
    let grew = lab.fast_path_counters(1).since(&before).fast();
    assert!(
        grew >= 40,
        "n1's fast path forwarded {grew} of 40 packets after the restart"
    );
}

#[test]
fn replace_programs_swaps_them_in_place_without_loss() {
    let mut lab = lab("freplace", Mode::FastPath);
    let (from, to) = (lab.pod(1, 1), lab.pod(2, 1).ip());
    let warm = lab.ping(from, to, 3, Duration::from_millis(200));
    assert_pings(&lab, warm, 3, "warm-up n1p1 → n2p1");
    let link = lab.uplink_link_id(1).expect("n1 has a pinned uplink link");
    let prog = lab
        .uplink_prog_id(1)
        .expect("n1 has a program on its uplink");

    let count = 300;
    let job = lab.ping_spawn(from, to, count, Duration::from_millis(10));
    std::thread::sleep(Duration::from_millis(500));
    lab.kill_agent(1, libc::SIGKILL);
    lab.restart_agent_with(1, &["--replace-programs"]);
    let stats = job.wait(Duration::from_secs(30));
    assert_pings(
        &lab,
        stats,
        count,
        "100 pps ping across a restart that replaces the programs",
    );
    // The same link, updated in place to the new agent's program.
    assert_eq!(
        lab.uplink_link_id(1),
        Some(link),
        "the uplink link was recreated, not updated"
    );
    let now = lab
        .uplink_prog_id(1)
        .expect("n1 has a program on its uplink");
    assert_ne!(
        now, prog,
        "--replace-programs left the old uplink program in place"
    );
    let before = lab.fast_path_counters(1);
    let again = lab.ping(lab.pod(1, 1), to, 20, Duration::from_millis(10));
    assert_pings(&lab, again, 20, "n1p1 → n2p1 on the replaced programs");
    let grew = lab.fast_path_counters(1).since(&before).fast();
    assert!(
        grew >= 40,
        "the replaced programs fast-pathed {grew} of 40 packets"
    );
}

#[test]
fn deleted_route_is_back_within_a_second() {
    let lab = lab("fdel", Mode::FastPath);
    let cidr = lab.node(2).pod_cidr();
    let via = lab.node(2).uplink_ip();
    lab.node(1).ns().ip(&["route", "del", &cidr]);
    let start = Instant::now();
    // A functional check, not a speed assertion: the agent notices and repairs within a
    // second; the poll allows 500 ms of scheduling slack on a loaded machine.
    wait_for(
        Duration::from_millis(1500),
        || {
            format!(
                "n1 to restore its route to {cidr}: {:?}\n{}",
                lab.routes(1),
                lab.agent_log(1)
            )
        },
        || (lab.agent_routes(1).get(&cidr) == Some(&via)).then_some(()),
    );
    eprintln!("route to {cidr} back after {:?}", start.elapsed());
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(2, 1).ip(),
        3,
        Duration::from_millis(200),
    );
    assert_pings(&lab, s, 3, "n1p1 → n2p1 after the route came back");
}

#[test]
fn uplink_down_and_up_is_repaired() {
    let lab = lab("fupdown", Mode::FastPath);
    let ns = lab.node(1).ns();
    ns.ip(&["link", "set", "eth0", "down"]);
    // The kernel drops every route through a downed interface.
    wait_for(
        Duration::from_secs(5),
        || format!("n1's routes to go with its uplink: {:?}", lab.routes(1)),
        || lab.agent_routes(1).is_empty().then_some(()),
    );
    ns.ip(&["link", "set", "eth0", "up"]);
    let start = Instant::now();
    // Functional, not a speed assertion: the link event brings the routes back at once; the
    // budget allows scheduling slack on a loaded machine.
    wait_for(
        Duration::from_millis(1500),
        || {
            format!(
                "n1 to restore its routes after the uplink came back: {:?}\n{}",
                lab.routes(1),
                lab.agent_log(1)
            )
        },
        || (lab.agent_routes(1) == lab.expected_agent_routes(1)).then_some(()),
    );
    eprintln!("routes back {:?} after the uplink came up", start.elapsed());
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(3, 2).ip(),
        3,
        Duration::from_millis(200),
    );
    assert_pings(&lab, s, 3, "n1p1 → n3p2 after the uplink came back");
}

#[test]
fn a_new_pod_is_on_the_fast_path_after_its_first_packets() {
    let lab = lab("fnewpod", Mode::FastPath);
    // A pod the lab did not create: its own namespace, a veth into n1's bridge.
    let pod = hostgw_tests::Netns::new("fnewpod-extra");
    let node = lab.node(1).ns();
    node.ip(&[
        "link",
        "add",
        "vethx",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        pod.name(),
    ]);
    node.ip(&["link", "set", "vethx", "master", "cni0", "up"]);
    pod.ip(&["addr", "add", "10.1.1.50/24", "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["route", "add", "default", "via", "10.1.1.1"]);
    let pin = lab
        .node(1)
        .pin_dir()
        .join("links")
        .join(format!("{}@vethx", names::PROG_EGRESS));
    // Functional, not a speed assertion: the link event attaches the program at once.
    wait_for(
        Duration::from_millis(1500),
        || {
            format!(
                "the egress program on the new port ({}):\n{}",
                pin.display(),
                lab.agent_log(1)
            )
        },
        || pin.exists().then_some(()),
    );
    let ping = |count: u32| {
        let out = hostgw_tests::sh(pod.command("ping").args([
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.05",
            "-W",
            "1",
            &lab.pod(2, 1).ip().to_string(),
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The first packets go through the kernel, which learns the pod's MAC and port.
    let first = ping(3);
    assert!(first.contains("3 received"), "{first}");
    let before = lab.fast_path_counters(1);
    let forwarded = lab.snmp_forwarded(1);
    let then = ping(20);
    assert!(then.contains("20 received"), "{then}");
    let fast = lab.fast_path_counters(1).since(&before).fast();
    assert!(
        fast >= 40,
        "n1 fast-pathed {fast} of the new pod's 40 packets"
    );
    let kernel = lab.snmp_forwarded(1) - forwarded;
    assert!(
        kernel < 5,
        "n1's kernel forwarded {kernel} of the new pod's packets"
    );

    // The pod goes: its port's hook and its endpoint go with it.
    drop(pod);
    wait_for(
        Duration::from_secs(3),
        || format!("the pin of the removed port to go: {}", pin.display()),
        || (!pin.exists()).then_some(()),
    );
}

#[test]
fn malformed_node_is_reported_and_skipped() {
    let mut list: Vec<NodeEntry> = (1..=NODES).map(NodeEntry::of).collect();
    list[2].pod_cidr = "10.1.3.0/33".into();
    let lab = Lab::start(
        "fmalformed",
        &Spec {
            node_list: Some(list),
            ..Spec::new(NODES, PODS, Mode::FastPath)
        },
    );
    // The lab waited for n1 and n2 to route to each other only.
    for i in [1, 2] {
        let routes = lab.agent_routes(i);
        assert_eq!(routes.len(), 1, "n{i} routes: {routes:?}");
        assert!(
            !routes.keys().any(|c| c.starts_with("10.1.3.")),
            "n{i} routes to the malformed node: {routes:?}"
        );
        let reported = lab.agent_events(i).iter().any(|e| {
            matches!(e.level.as_str(), "WARN" | "ERROR")
                && e.field_str("node") == Some("n3")
                && e.field_str("reason") == Some("malformed_cidr")
        });
        assert!(
            reported,
            "n{i}'s agent did not report the malformed node n3 with a warning:\n{}",
            lab.agent_log(i)
        );
    }
    for (a, b) in [((1, 1), (2, 1)), ((2, 2), (1, 2))] {
        let s = lab.ping(
            lab.pod(a.0, a.1),
            lab.pod(b.0, b.1).ip(),
            3,
            Duration::from_millis(200),
        );
        assert_pings(&lab, s, 3, &format!("n{}p{} → n{}p{}", a.0, a.1, b.0, b.1));
    }
}

/// The lab removes every namespace, pin directory and scratch directory on drop, also when
/// the test using it panics.
#[test]
fn lab_is_torn_down_even_after_a_panic() {
    let netns_names = || -> Vec<String> {
        std::fs::read_dir("/run/netns")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let prefix = format!("hgw-{}-kdrop-", std::process::id());
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let lab = lab("kdrop", Mode::KernelOnly);
        tx.send(lab.dir().to_path_buf()).expect("send");
        panic!("deliberate panic with the lab up");
    })
    .join();
    assert!(result.is_err(), "the lab thread did not panic");
    let dir = rx.recv().expect("the lab was built");
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left after a panic: {left:?}");
    assert!(!dir.exists(), "{} left after a panic", dir.display());
}

/// The lab adds nothing to the root namespace: no interface, address or route of the lab
/// appears there.
#[test]
fn kernel_only_lab_leaves_the_root_namespace_alone() {
    let root_state = || -> Vec<String> {
        [
            &["-o", "link", "show"][..],
            &["-o", "-4", "addr", "show"],
            &["-4", "route", "show", "table", "all"],
            &["-o", "-6", "addr", "show"],
            &["-6", "route", "show", "table", "all"],
        ]
        .iter()
        .flat_map(|args| {
            let out = hostgw_tests::ip(args);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
    };
    let before = root_state();
    let lab = lab("kroot", Mode::KernelOnly);
    let lab_words = [
        "172.20.11.",
        "10.1.",
        "fd00:20:11:",
        "fd00:10:1:",
        "cni0",
        "sw0",
        "port-n",
        "veth",
    ];
    let added: Vec<String> = root_state()
        .into_iter()
        .filter(|l| !before.contains(l) && lab_words.iter().any(|w| l.contains(w)))
        .collect();
    assert!(
        added.is_empty(),
        "the lab added to the root namespace:\n{}",
        added.join("\n")
    );
    // ...while the nodes have them.
    assert!(
        lab.routes(1)
            .iter()
            .any(|r| r.starts_with("10.1.2.0/24 via 172.20.11.12 dev eth0")),
        "n1 routes: {:?}",
        lab.routes(1)
    );
    let routes6 = lab.node(1).ns().ip(&["-6", "route", "show"]);
    let routes6 = String::from_utf8_lossy(&routes6.stdout);
    assert!(
        routes6.contains("fd00:10:1:2::/64 via fd00:20:11::c dev eth0"),
        "n1 IPv6 routes: {routes6}"
    );
}
