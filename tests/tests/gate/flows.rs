//! Plain pod-to-pod flows with the gate on, the `ClusterIP` breaking with it off, and
//! `--conntrack-gate auto` following NAT rules as they come and go.

use super::*;

/// With the gate on, on nodes that have kube-proxy-like NAT rules (which NAT none of these
/// flows), a plain pod-to-pod TCP flow between nodes takes the fast path after its first
/// packet: the programs forward (and count as established) nearly everything, the kernel
/// forwards a handful. UDP too. ICMP, which the kernel's lookup cannot check, goes through the
/// stack.
#[test]
fn pod_to_pod_flows_take_the_fast_path_with_the_gate_on() {
    let mut lab = lab("gfast");
    for i in [1, 2] {
        // kube-proxy's rules are everywhere in a real cluster.
        nft(&lab, i, &cluster_ip_rules(lab.pod(2, 1).ip()));
        restart_with_gate(&mut lab, i, "on", true);
    }
    warm_up(&lab, (1, 1), (2, 2));

    let before = [1, 2].map(|i| (lab.fast_path_counters(i), lab.snmp_forwarded(i)));
    let bytes = 16 << 20;
    let t = lab.tcp_transfer(lab.pod(1, 1), lab.pod(2, 2), bytes);
    assert_eq!(t.bytes, bytes);
    for i in [1, 2] {
        let (c, f) = &before[i - 1];
        let c = lab.fast_path_counters(i).since(c);
        let forw = lab.snmp_forwarded(i) - f;
        let (fast, est, new) = (
            c.fast(),
            c.reason(reason::CT_ESTABLISHED),
            c.reason(reason::CT_NEW),
        );
        println!(
            "TCP n1p1 → n2p2, {bytes} bytes, {:.0} Mbit/s: n{i} fast {fast}, established {est}, \
             ct_new {new}, kernel forwarded {forw}; {:?}",
            t.mbit_per_s(),
            c.nonzero()
        );
        assert!(
            fast >= 200 && est >= fast * 9 / 10,
            "n{i}: the programs forwarded {fast} packets of the transfer, {est} of them as \
             established flows\n{}",
            lab.agent_log(i)
        );
        assert!(
            forw * 20 < fast && forw < 20,
            "n{i}: the kernel forwarded {forw} packets of the transfer (programs: {fast})"
        );
        assert!(
            new < 10,
            "n{i}: {new} packets of one flow had no conntrack entry"
        );
    }

    // UDP: the first datagram creates the entry, every later one and every reply is fast.
    let server = EchoServer::start(
        lab.pod(2, 2).netns(),
        SocketAddrV4::new(lab.pod(2, 2).ip(), BACKEND_PORT),
    );
    let before = [1, 2].map(|i| lab.fast_path_counters(i));
    let to = SocketAddrV4::new(lab.pod(2, 2).ip(), BACKEND_PORT);
    let replies = udp_exchange(lab.pod(1, 1).netns(), to, 50);
    assert_udp_from(&lab, &replies, to, "UDP n1p1 → n2p2");
    assert_peers(&server, Proto::Udp, lab.pod(1, 1).ip(), "UDP pod to pod");
    for i in [1, 2] {
        let c = lab.fast_path_counters(i).since(&before[i - 1]);
        let est = c.reason(reason::CT_ESTABLISHED);
        println!("UDP n1p1 → n2p2, 50 rounds: n{i} {:?}", c.nonzero());
        assert!(
            est >= 2 * 50 - 2,
            "n{i}: {est} of 100 datagrams forwarded as established\n{:?}",
            c.nonzero()
        );
    }

    // ICMP: every echo and reply through the stack, counted as a protocol the gate cannot see.
    let before = [1, 2].map(|i| (lab.fast_path_counters(i), lab.snmp_forwarded(i)));
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(2, 2).ip(),
        20,
        Duration::from_millis(20),
    );
    assert_pings(&lab, s, 20, "ping n1p1 → n2p2");
    for i in [1, 2] {
        let (c, f) = &before[i - 1];
        let c = lab.fast_path_counters(i).since(c);
        let forw = lab.snmp_forwarded(i) - f;
        println!(
            "ping n1p1 → n2p2, 20: n{i} kernel forwarded {forw}; {:?}",
            c.nonzero()
        );
        assert!(
            c.reason(reason::CT_PROTO) >= 40 && c.fast() == 0 && forw >= 40,
            "n{i}: ICMP should go through the stack: ct_proto {}, fast {}, kernel forwarded {forw}",
            c.reason(reason::CT_PROTO),
            c.fast()
        );
    }
}

/// Why the gate exists: with it off on node A, the `ClusterIP`'s replies are fast-pathed
/// straight into the client pod, skipping A's stack and so the un-DNAT. The client gets its UDP
/// echoes from the backend's address instead of the virtual IP (or not at all), and its TCP
/// connection never opens (the SYN-ACK comes from an address it never called). The same
/// exchanges with the gate on, first, show the service itself is sound.
#[test]
fn without_the_gate_cluster_ip_replies_skip_the_un_dnat() {
    let mut lab = lab("goff");
    restart_with_gate(&mut lab, 1, "on", true);
    let backend = lab.pod(2, 1).ip();
    nft(&lab, 1, &cluster_ip_rules(backend));
    let _server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    let client = lab.pod(1, 1).netns().to_owned();
    let vip = SocketAddrV4::new(VIP, SVC_PORT);

    // The control: the gate on.
    let replies = udp_exchange(&client, vip, 5);
    assert_udp_from(
        &lab,
        &replies,
        vip,
        "control, gate on: UDP to the ClusterIP",
    );
    let result = tcp_exchange(&client, vip, 5);
    assert!(
        result.is_ok(),
        "control, gate on: TCP to the ClusterIP: {result:?}"
    );

    restart_with_gate(&mut lab, 1, "off", false);
    // Endpoints are learned (pinned maps survive the restart); make sure of it.
    warm_up(&lab, (1, 1), (2, 1));
    let before = lab.fast_path_counters(1);
    let replies = udp_exchange(&client, vip, 5);
    let udp = lab.fast_path_counters(1).since(&before);
    println!(
        "gate off, UDP to the ClusterIP: client saw {replies:?}; n1 {:?}",
        udp.nonzero()
    );
    assert!(
        replies.iter().all(|r| *r != UdpReply::From(vip.into())),
        "gate off: a UDP echo came back from the ClusterIP: {replies:?}"
    );
    let backend_addr = SocketAddr::from(SocketAddrV4::new(backend, BACKEND_PORT));
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, UdpReply::Nothing) || *r == UdpReply::From(backend_addr)),
        "gate off: UDP echoes from an unexpected address: {replies:?}"
    );
    // The mechanism: n1's ingress hook delivered the replies to the pod itself.
    assert!(
        udp.get(hook::INGRESS_TC, reason::FAST_INGRESS) >= 5 && udp.reason(reason::CT_NAT) == 0,
        "gate off: n1 should have fast-pathed the 5 replies: {:?}",
        udp.nonzero()
    );

    let before = lab.fast_path_counters(1);
    let result = tcp_exchange(&client, vip, 5);
    let tcp = lab.fast_path_counters(1).since(&before);
    println!(
        "gate off, TCP to the ClusterIP: {result:?}; n1 {:?}",
        tcp.nonzero()
    );
    assert!(
        result.is_err(),
        "gate off: TCP to the ClusterIP worked, the fast path must have been skipped: {:?}",
        tcp.nonzero()
    );
    assert!(
        tcp.get(hook::INGRESS_TC, reason::FAST_INGRESS) >= 1,
        "gate off: n1 should have fast-pathed the SYN-ACK: {:?}",
        tcp.nonzero()
    );
}

/// `--conntrack-gate auto` (the default) turns the gate on by itself when NAT rules appear on
/// the node, at the next round of its agent, and off again when they go.
#[test]
fn auto_gate_follows_nat_rules() {
    let lab = lab("gauto");
    for i in [1, 2] {
        wait_gate(&lab, i, false, GATE_TIMEOUT);
    }
    let backend = lab.pod(2, 1).ip();
    nft(&lab, 1, &cluster_ip_rules(backend));
    let start = Instant::now();
    poke_agent(&lab, 1);
    wait_gate(&lab, 1, true, AUTO_TIMEOUT);
    println!(
        "auto: n1's gate went on {:?} after the rules",
        start.elapsed()
    );
    assert!(
        nat_logged(&lab, 1, 1),
        "n1 did not log the NAT it found:\n{}",
        lab.agent_log(1)
    );
    // Node B has no NAT: its gate stays off.
    assert_eq!(gate_logged(&lab, 2), Some(false), "n2's gate");
    assert!(!gate_bit(&lab, 2), "n2's STATE gate bit");

    let _server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    let vip = SocketAddrV4::new(VIP, SVC_PORT);
    let before = lab.fast_path_counters(1);
    let replies = udp_exchange(lab.pod(1, 1).netns(), vip, ROUNDS);
    assert_udp_from(&lab, &replies, vip, "auto gate: UDP to the ClusterIP");
    let result = tcp_exchange(lab.pod(1, 1).netns(), vip, ROUNDS);
    assert!(
        result.is_ok(),
        "auto gate: TCP to the ClusterIP: {result:?}"
    );
    let nat = lab
        .fast_path_counters(1)
        .since(&before)
        .get(hook::INGRESS_TC, reason::CT_NAT);
    assert!(
        nat >= 2 * ROUNDS as u64,
        "auto gate: n1 gated {nat} replies as NAT"
    );

    // The rules go: so does the gate.
    nft(&lab, 1, "delete table ip kube-proxy\n");
    let start = Instant::now();
    poke_agent(&lab, 1);
    wait_gate(&lab, 1, false, AUTO_TIMEOUT);
    println!(
        "auto: n1's gate went off {:?} after the rules",
        start.elapsed()
    );
    assert!(
        nat_logged(&lab, 1, 0),
        "n1 did not log that the NAT went:\n{}",
        lab.agent_log(1)
    );
}

/// A lab without netfilter rules (both gates off), an echo server on pod n2p1 and the path from
/// n1p1 to it warm.
fn without_netfilter(name: &str) -> (Lab, EchoServer) {
    let lab = lab(name);
    for i in [1, 2] {
        wait_gate(&lab, i, false, GATE_TIMEOUT);
    }
    let server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(lab.pod(2, 1).ip(), BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    (lab, server)
}

/// A Service appearing while its clients already connect: the DNAT rule is added and, with
/// no pause and nothing else to wake the agent, 20 TCP connections are opened to it. The gate
/// follows nftables' own change notification, so every reply is un-DNATed by the stack and
/// every connection succeeds (one whose first reply beat the gate retries its SYN).
#[test]
fn auto_gate_is_on_for_connections_right_after_a_dnat_rule() {
    let (lab, server) = without_netfilter("gnow");
    let backend = lab.pod(2, 1).ip();
    let vip = SocketAddrV4::new(VIP, SVC_PORT);
    let start = Instant::now();
    nft(&lab, 1, &cluster_ip_rules(backend));
    let results: Vec<Result<(), String>> = (0..20)
        .map(|_| tcp_exchange(lab.pod(1, 1).netns(), vip, 1))
        .collect();
    println!(
        "20 connections right after the DNAT rule took {:?}",
        start.elapsed()
    );
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "connections to the new ClusterIP that failed: {failed:?}\n{}",
        lab.agent_log(1)
    );
    assert_peers(&server, Proto::Tcp, lab.pod(1, 1).ip(), "the new ClusterIP");
    assert_eq!(gate_logged(&lab, 1), Some(true), "n1's gate");
}

/// A `NetworkPolicy` engine's drop rule in the forward chain, on a node without any NAT: the gate
/// goes on with it, so the flow it drops stays dropped, datagram after datagram, while other
/// flows between the same pods keep working.
#[test]
fn auto_gate_keeps_a_forward_drop_rule_dropping() {
    let (lab, server) = without_netfilter("gfwdrop");
    let backend = lab.pod(2, 1).ip();
    let to = SocketAddrV4::new(backend, BACKEND_PORT);
    nft(
        &lab,
        1,
        &format!(
            "table inet netpol {{\n\
             \tchain pod_forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tip daddr {backend} udp dport {BACKEND_PORT} drop\n\
             \t}}\n\
             }}\n"
        ),
    );
    // The gate goes on within milliseconds of the rule (a datagram sent in those could pass).
    wait_gate(&lab, 1, true, GATE_TIMEOUT);
    let replies = udp_exchange(lab.pod(1, 1).netns(), to, 5);
    assert!(
        replies.iter().all(|r| *r == UdpReply::Nothing) && server.peers(Proto::Udp).is_empty(),
        "UDP the forward chain drops: replies {replies:?}, the server saw {:?}\n{}",
        server.peers(Proto::Udp),
        lab.agent_log(1)
    );
    let result = tcp_exchange(lab.pod(1, 1).netns(), to, ROUNDS);
    assert!(result.is_ok(), "TCP between the same pods: {result:?}");
}
