//! Services through netfilter NAT with the gate on: a `ClusterIP`, a `NodePort` with
//! `externalTrafficPolicy: Local`, masquerade to an "internet" namespace.

use super::*;

/// A `ClusterIP` on node A (DNAT of the virtual IP to a pod on node B) works for TCP and UDP
/// with the gate on: every reply reaches the client from the virtual IP, because the gate sends
/// the replies of the flow DNAT rewrote through A's stack (`ct_nat`), where the DNAT is
/// undone. To node B, which has the same service rules (as every node of a cluster does) but
/// does not NAT this flow, it is a plain flow between pods: on the fast path after its first
/// packet. A plain flow on A next to the service's is on A's fast path once established.
#[test]
fn cluster_ip_dnat_works_with_the_gate_on() {
    let mut lab = lab("gclip");
    let backend = lab.pod(2, 1).ip();
    for i in [1, 2] {
        nft(&lab, i, &cluster_ip_rules(backend));
        restart_with_gate(&mut lab, i, "on", true);
    }
    let server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    let client = lab.pod(1, 1);
    let vip = SocketAddrV4::new(VIP, SVC_PORT);

    for proto in [Proto::Udp, Proto::Tcp] {
        let before = [1, 2].map(|i| lab.fast_path_counters(i));
        match proto {
            Proto::Udp => {
                let replies = udp_exchange(client.netns(), vip, ROUNDS);
                assert_udp_from(&lab, &replies, vip, "UDP to the ClusterIP");
            }
            Proto::Tcp => {
                let result = tcp_exchange(client.netns(), vip, ROUNDS);
                assert!(
                    result.is_ok(),
                    "TCP to the ClusterIP: {result:?}\n{}\n{}",
                    moved(&lab, 1, &before[0]),
                    lab.all_agent_logs()
                );
            }
        }
        assert_peers(&server, proto, client.ip(), "ClusterIP, no SNAT");
        let [a, b] = [1, 2].map(|i| lab.fast_path_counters(i).since(&before[i - 1]));
        println!(
            "ClusterIP {proto:?}: n1 {:?}\n    n2 {:?}",
            a.nonzero(),
            b.nonzero()
        );
        // Every reply (UDP: one per round; TCP: at least the SYN-ACK and one per round)
        // reached A's uplink and was handed to the stack for the un-DNAT.
        let nat = a.get(hook::INGRESS_TC, reason::CT_NAT);
        assert!(
            nat >= ROUNDS as u64,
            "ClusterIP {proto:?}: n1 gated {nat} replies as NAT for {ROUNDS} rounds\n{}",
            moved(&lab, 1, &before[0])
        );
        assert_eq!(
            a.get(hook::INGRESS_TC, reason::FAST_INGRESS),
            0,
            "ClusterIP {proto:?}: n1 fast-pathed a reply of the DNATed flow"
        );
        // B sees a plain pod-to-pod flow: after its first packet, fast both ways.
        let est = b.reason(reason::CT_ESTABLISHED);
        assert!(
            est >= ROUNDS as u64,
            "ClusterIP {proto:?}: n2 forwarded only {est} packets of the flow as established\n{}",
            moved(&lab, 2, &before[1])
        );
    }

    // Next to the service, a plain flow from the same client to the backend's own address
    // takes A's fast path once established, both ways, and still works.
    let before = lab.fast_path_counters(1);
    let result = tcp_exchange(
        client.netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
        ROUNDS,
    );
    assert!(result.is_ok(), "TCP to the backend itself: {result:?}");
    let after = lab.fast_path_counters(1);
    let a = after.since(&before);
    println!(
        "plain TCP flow next to the ClusterIP, n1 before: {:?}\n    after: {:?}",
        before.nonzero(),
        after.nonzero()
    );
    let (est, fast) = (a.reason(reason::CT_ESTABLISHED), a.fast());
    assert!(
        est >= ROUNDS as u64 && fast >= 2 * ROUNDS as u64,
        "the plain flow next to the ClusterIP: n1 forwarded {fast} packets on the fast path, \
         {est} as established, for {ROUNDS} rounds\n{}",
        moved(&lab, 1, &before)
    );
}

/// A `NodePort` on node B with `externalTrafficPolicy: Local` (DNAT of B's address and port to a
/// local pod, no SNAT), reached from a pod on node A, works with the gate on: the backend's
/// replies belong to a flow with DNAT on B (`ct_nat` on B's egress hook), un-NATed by B's
/// stack, and reach the client from B's address and the node port.
#[test]
fn node_port_local_dnat_works_with_the_gate_on() {
    let mut lab = lab("gnodeport");
    restart_with_gate(&mut lab, 1, "on", true);
    restart_with_gate(&mut lab, 2, "on", true);
    let node_b = lab.node(2).uplink_ip();
    let backend = lab.pod(2, 1).ip();
    nft(&lab, 2, &node_port_rules(node_b, backend));
    let server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    let client = lab.pod(1, 1);
    let node_port = SocketAddrV4::new(node_b, NODE_PORT);

    for proto in [Proto::Udp, Proto::Tcp] {
        let before = lab.fast_path_counters(2);
        match proto {
            Proto::Udp => {
                let replies = udp_exchange(client.netns(), node_port, ROUNDS);
                assert_udp_from(&lab, &replies, node_port, "UDP to the NodePort");
            }
            Proto::Tcp => {
                let result = tcp_exchange(client.netns(), node_port, ROUNDS);
                assert!(
                    result.is_ok(),
                    "TCP to the NodePort: {result:?}\n{}\n{}",
                    moved(&lab, 2, &before),
                    lab.all_agent_logs()
                );
            }
        }
        // externalTrafficPolicy: Local keeps the client's address.
        assert_peers(&server, proto, client.ip(), "NodePort (Local), no SNAT");
        let b = lab.fast_path_counters(2).since(&before);
        println!("NodePort {proto:?}: n2 {:?}", b.nonzero());
        let nat = b.get(hook::EGRESS, reason::CT_NAT);
        assert!(
            nat >= ROUNDS as u64,
            "NodePort {proto:?}: n2 gated {nat} replies as NAT for {ROUNDS} rounds\n{}",
            moved(&lab, 2, &before)
        );
        assert_eq!(
            b.get(hook::EGRESS, reason::FAST_EGRESS),
            0,
            "NodePort {proto:?}: n2 fast-pathed a reply of the DNATed flow"
        );
    }
}

/// An "internet" namespace on the nodes' switch, serving [`INTERNET_IP`]; it knows the nodes'
/// subnet and nothing of the pod network, so only masqueraded traffic gets answers.
struct Internet {
    // Declared first: the server's threads leave before the namespace goes.
    server: EchoServer,
    _netns: Netns,
}

impl Internet {
    fn attach(lab: &Lab, name: &str) -> Self {
        let netns = Netns::new(name);
        let port = "port-inet";
        sh_ip(
            lab.switch_netns(),
            &[
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                netns.name(),
            ],
        );
        sh_ip(
            lab.switch_netns(),
            &["link", "set", port, "master", lab::SWITCH_BRIDGE],
        );
        sh_ip(lab.switch_netns(), &["link", "set", port, "up"]);
        netns.ip(&[
            "addr",
            "add",
            &format!("{INTERNET_UPLINK}/24"),
            "dev",
            "eth0",
        ]);
        netns.ip(&["link", "set", "eth0", "up"]);
        netns.ip(&["addr", "add", &format!("{INTERNET_IP}/32"), "dev", "lo"]);
        let server = EchoServer::start(netns.name(), SocketAddrV4::new(INTERNET_IP, BACKEND_PORT));
        Self {
            server,
            _netns: netns,
        }
    }
}

fn sh_ip(netns: &str, args: &[&str]) {
    hostgw_tests::sh(
        std::process::Command::new("ip")
            .arg("-n")
            .arg(netns)
            .args(args),
    );
}

/// Masquerade on node A of pod traffic leaving the pod network works with the gate on: the
/// flow's later packets are gated as NAT (`ct_nat` on A's egress hook) and masqueraded by the
/// stack, so the internet (no route to the pods) answers A's address, which A un-NATs.
#[test]
fn masquerade_to_the_internet_works_with_the_gate_on() {
    let mut lab = lab("gmasq");
    restart_with_gate(&mut lab, 1, "on", true);
    let internet = Internet::attach(&lab, "gmasq-inet");
    lab.node(1).ns().ip(&[
        "route",
        "add",
        INTERNET_NET,
        "via",
        &INTERNET_UPLINK.to_string(),
        "dev",
        lab::UPLINK,
    ]);
    let client = lab.pod(1, 1);
    let target = SocketAddrV4::new(INTERNET_IP, BACKEND_PORT);

    // Without masquerade the internet cannot answer: the test would see it if it did.
    let replies = udp_exchange(client.netns(), target, 3);
    assert!(
        replies.iter().all(|r| *r == UdpReply::Nothing),
        "the internet answered a pod without masquerade: {replies:?}"
    );
    let seen = internet.server.peers(Proto::Udp);
    assert!(
        seen.len() == 3 && seen.iter().all(|p| p.ip() == IpAddr::V4(client.ip())),
        "without masquerade the internet should have seen the 3 datagrams from the pod itself: \
         {seen:?}"
    );

    nft(&lab, 1, &masquerade_rules());
    for proto in [Proto::Udp, Proto::Tcp] {
        let seen_before = internet.server.peers(proto).len();
        let before = lab.fast_path_counters(1);
        match proto {
            Proto::Udp => {
                let replies = udp_exchange(client.netns(), target, ROUNDS);
                assert_udp_from(&lab, &replies, target, "UDP to the internet");
            }
            Proto::Tcp => {
                let result = tcp_exchange(client.netns(), target, ROUNDS);
                assert!(
                    result.is_ok(),
                    "TCP to the internet: {result:?}\n{}\n{}",
                    moved(&lab, 1, &before),
                    lab.all_agent_logs()
                );
            }
        }
        let seen: Vec<SocketAddr> = internet.server.peers(proto)[seen_before..].to_vec();
        assert!(
            !seen.is_empty()
                && seen
                    .iter()
                    .all(|p| p.ip() == IpAddr::V4(lab.node(1).uplink_ip())),
            "masquerade {proto:?}: the internet saw {seen:?}, expected n1's address"
        );
        let a = lab.fast_path_counters(1).since(&before);
        println!("masquerade {proto:?}: n1 {:?}", a.nonzero());
        // The first packet has no entry yet; every later one leaving the pod is SNATed.
        let nat = a.get(hook::EGRESS, reason::CT_NAT);
        assert!(
            nat >= ROUNDS as u64 - 1,
            "masquerade {proto:?}: n1 gated {nat} packets as NAT for {ROUNDS} rounds\n{}",
            moved(&lab, 1, &before)
        );
        assert_eq!(
            a.fast(),
            0,
            "masquerade {proto:?}: n1 fast-pathed packets of the masqueraded flow"
        );
    }
}
