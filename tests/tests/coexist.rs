//! Coexistence with other tc users, with the kernel as the judge: each scenario runs on a
//! 2-node × 2-pod lab twice, on kernel routes alone (the flannel host-gw baseline) and with the
//! agent, and what the traffic meets must be the same. The kernel run also proves the scenario:
//! it must show the effect (a drop filter drops, a shaper's qdisc sees the packets).
//!
//! - an admin's drop filter on a pod's host veth, for traffic to a pod of the same node (which
//!   the programs pass) and to a remote pod (which they would redirect);
//! - a drop filter on the uplink, for traffic to the node itself and to a local pod;
//! - the CNI bandwidth plugin's shapes: a `tbf` root qdisc on the host veth (the pod's
//!   ingress), and an `ingress` qdisc whose filter redirects to an `ifb` with a `tbf` (the pod's
//!   egress).

use std::{net::IpAddr, process::Command, time::Duration};

use hostgw_common::{
    HOOK_F_PORT_EGRESS, HOOK_F_SHARED_INGRESS,
    counters::{hook, reason},
};
use hostgw_tests::{
    agent_binary,
    lab::{Lab, Mode, Spec, wait_for},
    sh,
};

const NODES: usize = 2;
const PODS: usize = 2;
const PINGS: u32 = 10;

/// Runs `scenario` on a kernel-only lab and on a fast-path lab of the same shape; returns
/// both results, the kernel's first.
fn both<T>(name: &str, scenario: impl Fn(&Lab) -> T) -> (T, T) {
    let kernel = {
        let lab = Lab::start(
            &format!("k{name}"),
            &Spec::new(NODES, PODS, Mode::KernelOnly),
        );
        scenario(&lab)
    };
    let lab = Lab::start(&format!("f{name}"), &Spec::new(NODES, PODS, Mode::FastPath));
    (kernel, scenario(&lab))
}

/// With agents, waits until node `i`'s agent has seen the other tc users of `dev`: its `HOOKS`
/// entry is `flags` (0: none). The kernel path has nothing to wait for.
fn settle(lab: &Lab, i: usize, dev: &str, flags: u32) {
    if lab.mode() != Mode::FastPath {
        return;
    }
    let ifindex = lab.ifindex(i, dev);
    wait_for(
        Duration::from_secs(10),
        || {
            format!(
                "n{i}'s agent to set the HOOKS flags of {dev} to {flags:#x}: {:?}\n{}",
                lab.hook_flags(i),
                lab.agent_log(i)
            )
        },
        || (lab.hook_flags(i).get(&ifindex).copied().unwrap_or(0) == flags).then_some(()),
    );
}

/// `hostgw-agent status -o json` of node `i`.
fn status(lab: &Lab, i: usize) -> serde_json::Value {
    let node = lab.node(i);
    let out = sh(Command::new(agent_binary())
        .args(["status", "--netns", node.netns(), "--pin-dir"])
        .arg(node.pin_dir())
        .args(["-o", "json"]));
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `tc ARGS…` on node `i`.
fn tc(lab: &Lab, i: usize, args: &[&str]) {
    sh(lab.node(i).ns().command("tc").args(args));
}

/// Pings received of [`PINGS`] from pod `from` to `to`.
fn received(lab: &Lab, from: (usize, usize), to: impl Into<IpAddr>) -> u32 {
    lab.ping(
        lab.pod(from.0, from.1),
        to,
        PINGS,
        Duration::from_millis(20),
    )
    .received
}

/// A 20 Mbit/s `tbf` as the root qdisc of `dev` on node `i`, as the bandwidth plugin adds.
fn shape(lab: &Lab, i: usize, dev: &str) {
    tc(
        lab,
        i,
        &[
            "qdisc", "add", "dev", dev, "root", "tbf", "rate", "20mbit", "burst", "32kb",
            "latency", "50ms",
        ],
    );
}

/// Packets `tc -s` counted on the root qdisc of `dev` on node `i`.
fn root_qdisc_packets(lab: &Lab, i: usize, dev: &str) -> u64 {
    let out = sh(lab
        .node(i)
        .ns()
        .command("tc")
        .args(["-s", "-j", "qdisc", "show", "dev", dev, "root"]));
    let q: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tc JSON");
    q[0]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no root qdisc counters on n{i}'s {dev}: {q}"))
}

/// Adds a clsact qdisc and a filter that drops ICMP echo requests on `dev`'s ingress, as an
/// admin would: `flower ip_proto icmp type 8 action drop`. Where the kernel has no
/// `cls_flower` or `act_gact` (this machine's is built without them; Debian's has them as
/// modules), the same effect with what every kernel here has: a u32 match (protocol 1, type 8
/// behind a 20-byte header) whose action redirects to an `ifb` device that is down, where the
/// packet is dropped. Says which it used, and returns its kind as `tc` names it.
fn drop_echo_requests_on_ingress(lab: &Lab, i: usize, dev: &str) -> &'static str {
    let ns = lab.node(i).ns();
    // Without tcx (before 6.6) the agent's own filters already have the port's clsact.
    let qdiscs = sh(ns.command("tc").args(["qdisc", "show", "dev", dev]));
    if !String::from_utf8_lossy(&qdiscs.stdout).contains("clsact") {
        tc(lab, i, &["qdisc", "add", "dev", dev, "clsact"]);
    }
    let filter = [
        "filter", "add", "dev", dev, "ingress", "pref", "49152", "protocol", "ip",
    ];
    let flower = ns
        .command("tc")
        .args(filter)
        .args(["flower", "ip_proto", "icmp", "type", "8", "action", "drop"])
        .output()
        .expect("running tc");
    if flower.status.success() {
        println!("n{i} {dev}: flower drop filter");
        return "flower";
    }
    println!(
        "n{i} {dev}: no flower/gact here ({}), u32 + mirred to a down ifb instead",
        String::from_utf8_lossy(&flower.stderr).trim()
    );
    ns.ip(&["link", "add", "blackhole", "type", "ifb"]);
    let mut u32_filter: Vec<&str> = filter.to_vec();
    u32_filter.extend([
        "u32",
        "match",
        "ip",
        "protocol",
        "1",
        "0xff",
        "match",
        "u8",
        "8",
        "0xff",
        "at",
        "20",
        "action",
        "mirred",
        "egress",
        "redirect",
        "dev",
        "blackhole",
    ]);
    tc(lab, i, &u32_filter);
    "u32"
}

#[test]
fn an_admins_drop_filter_on_a_pod_veth_drops_like_the_kernel() {
    let (kernel, fast) = both("podrop", |lab| {
        let veth = lab.pod(1, 1).host_veth();
        let kind = drop_echo_requests_on_ingress(lab, 1, &veth);
        settle(lab, 1, &veth, HOOK_F_SHARED_INGRESS);
        let got = [
            received(lab, (1, 1), lab.pod(1, 2).ip()),
            received(lab, (1, 1), lab.pod(2, 1).ip()),
            // The other pod of the node is not filtered.
            received(lab, (1, 2), lab.pod(2, 1).ip()),
        ];
        if lab.mode() == Mode::FastPath {
            // `status` names the hook and its other user; the other pod stays fast.
            let shared = status(lab, 1)["shared_hooks"].clone();
            assert_eq!(shared[0]["interface"], veth.as_str(), "{shared}");
            assert_eq!(shared[0]["flags"][0], "shared_ingress", "{shared}");
            assert!(
                shared[0]["ingress"][0]
                    .as_str()
                    .is_some_and(|u| u.starts_with(&format!("{kind} filter, pref 49152"))),
                "{shared}"
            );
            let before = lab.fast_path_counters(1);
            assert_eq!(received(lab, (1, 2), lab.pod(2, 1).ip()), PINGS);
            let fast = lab.fast_path_counters(1).since(&before);
            assert!(
                fast.get(hook::EGRESS, reason::FAST_EGRESS) >= u64::from(PINGS),
                "n1p2's pings took n1's fast path: {:?}",
                fast.nonzero()
            );
            // The filter goes (the qdisc may hold the agent's own, without tcx): so does the
            // flag, and n1p1 is fast again.
            tc(
                lab,
                1,
                &["filter", "del", "dev", &veth, "ingress", "pref", "49152"],
            );
            settle(lab, 1, &veth, 0);
            let before = lab.fast_path_counters(1);
            assert_eq!(received(lab, (1, 1), lab.pod(2, 1).ip()), PINGS);
            let fast = lab.fast_path_counters(1).since(&before);
            assert!(
                fast.get(hook::EGRESS, reason::FAST_EGRESS) >= u64::from(PINGS)
                    && fast.get(hook::EGRESS, reason::PASS_TC_SHARED) == 0,
                "n1p1's pings once the filter went: {:?}",
                fast.nonzero()
            );
        }
        got
    });
    assert_eq!(kernel, [0, 0, PINGS], "the kernel path, which is the judge");
    assert_eq!(
        fast, kernel,
        "n1p1 → same-node pod, n1p1 → remote pod, n1p2 → remote pod: pings received"
    );
}

#[test]
fn a_drop_filter_on_the_uplink_drops_like_the_kernel() {
    let (kernel, fast) = both("updrop", |lab| {
        drop_echo_requests_on_ingress(lab, 2, hostgw_tests::lab::UPLINK);
        settle(lab, 2, hostgw_tests::lab::UPLINK, HOOK_F_SHARED_INGRESS);
        [
            received(lab, (1, 1), lab.node(2).uplink_ip()),
            received(lab, (1, 1), lab.pod(2, 1).ip()),
            // Echo replies are not filtered.
            received(lab, (2, 1), lab.node(1).uplink_ip()),
        ]
    });
    assert_eq!(kernel, [0, 0, PINGS], "the kernel path, which is the judge");
    assert_eq!(
        fast, kernel,
        "n1p1 → n2, n1p1 → n2p1, n2p1 → n1: pings received"
    );
}

/// The bandwidth plugin limits a pod's ingress with a `tbf` root qdisc on its host veth: every
/// packet to the pod goes through it.
#[test]
fn a_shaped_pods_ingress_goes_through_its_qdisc() {
    let (kernel, fast) = both("tbf", |lab| {
        let veth = lab.pod(2, 1).host_veth();
        shape(lab, 2, &veth);
        settle(lab, 2, &veth, HOOK_F_PORT_EGRESS);
        let before = root_qdisc_packets(lab, 2, &veth);
        let got = received(lab, (1, 1), lab.pod(2, 1).ip());
        (
            got,
            root_qdisc_packets(lab, 2, &veth) - before >= u64::from(PINGS),
        )
    });
    assert_eq!(kernel, (PINGS, true), "the kernel path, which is the judge");
    assert_eq!(
        fast, kernel,
        "(pings received, every echo request through n2p1's tbf)"
    );
}

/// The bandwidth plugin limits a pod's egress with an `ingress` qdisc on its host veth whose
/// filter redirects everything to an `ifb` device, shaped by a `tbf` there.
#[test]
fn a_shaped_pods_egress_goes_through_its_ifb() {
    let (kernel, fast) = both("ifb", |lab| {
        let veth = lab.pod(1, 1).host_veth();
        let ns = lab.node(1).ns();
        ns.ip(&["link", "add", "ifb0", "type", "ifb"]);
        ns.ip(&["link", "set", "ifb0", "up"]);
        shape(lab, 1, "ifb0");
        tc(
            lab,
            1,
            &["qdisc", "add", "dev", &veth, "handle", "ffff:", "ingress"],
        );
        tc(
            lab,
            1,
            &[
                "filter", "add", "dev", &veth, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", "ifb0",
            ],
        );
        settle(lab, 1, &veth, HOOK_F_SHARED_INGRESS);
        let before = root_qdisc_packets(lab, 1, "ifb0");
        let got = received(lab, (1, 1), lab.pod(2, 1).ip());
        (
            got,
            root_qdisc_packets(lab, 1, "ifb0") - before >= u64::from(PINGS),
        )
    });
    assert_eq!(kernel, (PINGS, true), "the kernel path, which is the judge");
    assert_eq!(
        fast, kernel,
        "(pings received, every echo request through n1's ifb0)"
    );
}
