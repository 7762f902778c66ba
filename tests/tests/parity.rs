//! The fast path routes as the kernel does: each scenario runs on a 3-node × 1-pod lab twice,
//! on kernel routes alone and with the agent, and what the pods see (the path a traceroute
//! shows, replies) must be the same. The kernel run is the judge, and also shows that the
//! scenario tests something.
//!
//! - a more specific route inside a remote pod CIDR (n2's pod via n3);
//! - a policy routing rule (n1's pod routed by a table of its own, via n3);
//! - an xfrm policy that blocks forwarding between the pod CIDRs;
//! - an MTU set on the route to a remote pod CIDR: a DF packet over it gets "fragmentation
//!   needed" from the first node; and the same for another route's MTU on the FIB fallback.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use hostgw_common::{
    ROUTE_F_FIB, STATE_F_POLICY, STATE_F_XFRM,
    counters::{hook, reason},
};
use hostgw_tests::lab::{Lab, Mode, Spec, UPLINK, uplink_ip, wait_for};

const NODES: usize = 3;
const PODS: usize = 1;

/// Runs `scenario` on a kernel-only lab and on a fast-path lab of the same shape; returns
/// both results, the kernel's first.
fn both<T>(name: &str, scenario: impl Fn(&Lab) -> T) -> (T, T) {
    let spec = |mode| Spec {
        ipv6: false,
        ..Spec::new(NODES, PODS, mode)
    };
    let kernel = {
        let lab = Lab::start(&format!("k{name}"), &spec(Mode::KernelOnly));
        scenario(&lab)
    };
    let lab = Lab::start(&format!("f{name}"), &spec(Mode::FastPath));
    (kernel, scenario(&lab))
}

/// Pings both ways between every pair of pods, so that the agents know every pod and the next
/// hops are resolved: from here on the fast path, not the kernel's first packets, decides.
/// With agents, checks that n1's pod reaches n3's pod on the fast path.
fn warm_up(lab: &Lab) {
    for (a, b) in [(1, 2), (1, 3), (2, 3)] {
        for (x, y) in [(a, b), (b, a)] {
            let s = lab.ping(
                lab.pod(x, 1),
                lab.pod(y, 1).ip(),
                3,
                Duration::from_millis(100),
            );
            assert_eq!(s.received, 3, "warm-up n{x}p1 → n{y}p1");
        }
    }
    if lab.mode() == Mode::FastPath {
        let before = lab.fast_path_counters(1);
        lab.ping(
            lab.pod(1, 1),
            lab.pod(3, 1).ip(),
            3,
            Duration::from_millis(50),
        );
        let c = lab.fast_path_counters(1).since(&before);
        assert!(
            c.get(hook::EGRESS, reason::FAST_EGRESS) >= 3,
            "n1p1 → n3p1 took the fast path: {:?}",
            c.nonzero()
        );
    }
}

/// With agents, waits until `done` holds for node 1; the kernel path has nothing to wait for.
fn settle(lab: &Lab, what: &str, done: impl Fn() -> bool) {
    if lab.mode() != Mode::FastPath {
        return;
    }
    wait_for(
        Duration::from_secs(10),
        || format!("n1's agent: {what}\n{}", lab.agent_log(1)),
        || done().then_some(()),
    );
}

/// The kernel's path from n1p1 to n2p1 goes through n3, and the fast path's is the same.
fn assert_same_path_via_n3(kernel: &[Option<Ipv4Addr>], fast: &[Option<Ipv4Addr>]) {
    assert!(
        kernel.contains(&Some(uplink_ip(3))),
        "the kernel path goes through n3: {kernel:?}"
    );
    assert_eq!(fast, kernel, "the hops from n1p1 to n2p1");
}

/// The hops from n1's pod to n2's pod.
fn path(lab: &Lab) -> Vec<Option<Ipv4Addr>> {
    lab.traceroute(lab.pod(1, 1), lab.pod(2, 1).ip())
}

#[test]
fn a_more_specific_route_inside_a_remote_cidr_is_followed() {
    let (kernel, fast) = both("rtinside", |lab| {
        warm_up(lab);
        let to = format!("{}/32", lab.pod(2, 1).ip());
        let via = lab.node(3).uplink_ip().to_string();
        lab.node(1)
            .ns()
            .ip(&["route", "add", &to, "via", &via, "dev", UPLINK]);
        let cidr = lab.node(2).pod_cidr();
        settle(lab, "flag n2's CIDR to ask the FIB", || {
            lab.trie_entry(1, &cidr)
                .is_some_and(|e| e.route.flags & ROUTE_F_FIB != 0)
        });
        path(lab)
    });
    assert_same_path_via_n3(&kernel, &fast);
}

#[test]
fn a_policy_routing_rule_is_followed() {
    let (kernel, fast) = both("rtrule", |lab| {
        warm_up(lab);
        let ns = lab.node(1).ns();
        let via = lab.node(3).uplink_ip().to_string();
        ns.ip(&[
            "route",
            "add",
            &lab.node(2).pod_cidr(),
            "via",
            &via,
            "dev",
            UPLINK,
            "table",
            "100",
        ]);
        ns.ip(&[
            "rule",
            "add",
            "from",
            &lab.pod(1, 1).ip().to_string(),
            "lookup",
            "100",
            "pref",
            "100",
        ]);
        settle(lab, "see the policy rule", || {
            lab.state_flags(1) & STATE_F_POLICY != 0
        });
        path(lab)
    });
    assert_same_path_via_n3(&kernel, &fast);
}

#[test]
fn an_xfrm_policy_applies_to_forwarded_traffic() {
    let (kernel, fast) = both("xfrm", |lab| {
        warm_up(lab);
        lab.node(1).ns().ip(&[
            "xfrm",
            "policy",
            "add",
            "src",
            &lab.node(1).pod_cidr(),
            "dst",
            &lab.node(2).pod_cidr(),
            "dir",
            "fwd",
            "action",
            "block",
        ]);
        settle(lab, "see the xfrm policy", || {
            lab.state_flags(1) & STATE_F_XFRM != 0
        });
        let blocked = lab
            .ping(
                lab.pod(1, 1),
                lab.pod(2, 1).ip(),
                5,
                Duration::from_millis(20),
            )
            .received;
        let other = lab
            .ping(
                lab.pod(1, 1),
                lab.pod(3, 1).ip(),
                5,
                Duration::from_millis(20),
            )
            .received;
        (blocked, other)
    });
    assert_eq!(kernel, (0, 5), "the kernel path, which is the judge");
    assert_eq!(fast, kernel, "pings received: to n2p1 (blocked), to n3p1");
}

/// What `ping -M do -s size` from pod `from` to `to` saw: replies received, and whether an
/// ICMP error said the path's MTU is `mtu`.
fn df_ping(lab: &Lab, from: (usize, usize), to: IpAddr, size: u32, mtu: u32) -> (u32, bool) {
    let out = lab
        .pod(from.0, from.1)
        .ns()
        .command("ping")
        .args(["-n", "-c", "3", "-i", "0.2", "-W", "1", "-M", "do", "-s"])
        .arg(size.to_string())
        .arg(to.to_string())
        .output()
        .expect("ping runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let received = text
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no ping summary in {text}"));
    (received, text.contains(&format!("mtu = {mtu}")))
}

/// DF pings from n1's pod to `to` just under and just over a 1400-byte route MTU (1372 bytes
/// of ICMP data make a 1400-byte IPv4 packet): `(received, told mtu = 1400)` for each.
fn around_1400(lab: &Lab, to: IpAddr) -> ((u32, bool), (u32, bool)) {
    (
        df_ping(lab, (1, 1), to, 1372, 1400),
        df_ping(lab, (1, 1), to, 1392, 1400),
    )
}

/// The kernel forwards under the route's MTU and answers "fragmentation needed" over it; the
/// fast path does the same.
fn assert_mtu_honoured(kernel: ((u32, bool), (u32, bool)), fast: ((u32, bool), (u32, bool))) {
    assert_eq!(
        kernel,
        ((3, false), (0, true)),
        "the kernel path, which is the judge: (under the route's MTU, over it)"
    );
    assert_eq!(
        fast, kernel,
        "(received, told mtu = 1400) under and over the route's MTU"
    );
}

#[test]
fn an_mtu_on_the_route_to_a_remote_cidr_is_honoured() {
    let (kernel, fast) = both("rtmtu", |lab| {
        warm_up(lab);
        let cidr = lab.node(2).pod_cidr();
        let via = lab.node(2).uplink_ip().to_string();
        lab.node(1).ns().ip(&[
            "route", "change", &cidr, "via", &via, "dev", UPLINK, "proto", "203", "mtu", "1400",
        ]);
        settle(lab, "put the route's MTU into the trie", || {
            lab.trie_entry(1, &cidr)
                .is_some_and(|e| e.route.mtu == 1400)
        });
        around_1400(lab, IpAddr::from(lab.pod(2, 1).ip()))
    });
    assert_mtu_honoured(kernel, fast);
}

/// A route of someone else's with an MTU, to an address the FIB fallback forwards to (a
/// service address on n2's loopback, routed via n2): the kernel honours the route's MTU when
/// forwarding, and so must the fast path, although the FIB lookup it asks does not.
#[test]
fn an_mtu_on_another_route_is_honoured_on_the_fib_path() {
    let (kernel, fast) = both("fibmtu", |lab| {
        warm_up(lab);
        lab.node(2)
            .ns()
            .ip(&["addr", "add", "10.99.0.1/32", "dev", "lo"]);
        let via = lab.node(2).uplink_ip().to_string();
        lab.node(1).ns().ip(&[
            "route",
            "add",
            "10.99.0.0/24",
            "via",
            &via,
            "dev",
            UPLINK,
            "mtu",
            "1400",
        ]);
        settle(lab, "tell the programs the route's MTU", || {
            lab.state(1).fib_mtu == 1400
        });
        around_1400(lab, IpAddr::from(Ipv4Addr::new(10, 99, 0, 1)))
    });
    assert_mtu_honoured(kernel, fast);
}
