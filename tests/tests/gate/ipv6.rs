//! IPv6: an IPv6 `ClusterIP`, pod-to-pod IPv6 flows and `ICMPv6`, gated as their IPv4
//! siblings are.

use super::*;

/// The gate applies to IPv6 as to IPv4, with kube-proxy's IPv6 rules (an `ip6` nat table) on
/// both nodes: an IPv6 `ClusterIP` works for UDP and TCP (its replies are handed to A's stack
/// as NAT flows), a pod-to-pod IPv6 TCP transfer is forwarded as an established flow after its
/// first packets, and `ICMPv6` goes through the stack as a protocol the gate cannot look up.
#[test]
fn ipv6_flows_are_gated_like_ipv4_ones() {
    let mut lab = lab("gv6");
    let backend = lab.pod(2, 1).ip6();
    for i in [1, 2] {
        nft(&lab, i, &cluster_ip6_rules(backend));
        restart_with_gate(&mut lab, i, "on", true);
    }
    let server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV6::new(backend, BACKEND_PORT, 0, 0),
    );
    warm_up6(&lab, (1, 1), (2, 1));
    let client = lab.pod(1, 1);
    let vip = SocketAddrV6::new(VIP6, SVC_PORT, 0, 0);

    for proto in [Proto::Udp, Proto::Tcp] {
        let before = lab.fast_path_counters(1);
        match proto {
            Proto::Udp => {
                let replies = udp_exchange(client.netns(), vip, ROUNDS);
                assert_udp_from(&lab, &replies, vip, "UDP to the IPv6 ClusterIP");
            }
            Proto::Tcp => {
                let result = tcp_exchange(client.netns(), vip, ROUNDS);
                assert!(
                    result.is_ok(),
                    "TCP to the IPv6 ClusterIP: {result:?}\n{}\n{}",
                    moved(&lab, 1, &before),
                    lab.all_agent_logs()
                );
            }
        }
        assert_peers(&server, proto, client.ip6(), "IPv6 ClusterIP, no SNAT");
        let a = lab.fast_path_counters(1).since(&before);
        println!("IPv6 ClusterIP {proto:?}: n1 {:?}", a.nonzero());
        let nat = a.get_in(family::IPV6, hook::INGRESS_TC, reason::CT_NAT);
        assert!(
            nat >= ROUNDS as u64,
            "IPv6 ClusterIP {proto:?}: n1 gated {nat} replies as NAT for {ROUNDS} rounds\n{}",
            moved(&lab, 1, &before)
        );
        assert_eq!(
            a.get_in(family::IPV6, hook::INGRESS_TC, reason::FAST_INGRESS),
            0,
            "IPv6 ClusterIP {proto:?}: n1 fast-pathed a reply of the DNATed flow"
        );
    }

    warm_up6(&lab, (1, 1), (2, 2));
    let before = [1, 2].map(|i| (lab.fast_path_counters(i), lab.snmp6_forwarded(i)));
    let bytes = 8 << 20;
    let t = lab.tcp_transfer6(lab.pod(1, 1), lab.pod(2, 2), bytes);
    assert_eq!(t.bytes, bytes);
    for i in [1, 2] {
        let (c, f) = &before[i - 1];
        let c = lab.fast_path_counters(i).since(c);
        let forw = lab.snmp6_forwarded(i) - f;
        let fast = c.fast_in(family::IPV6);
        let est = c.reason_in(family::IPV6, reason::CT_ESTABLISHED);
        println!(
            "IPv6 TCP n1p1 → n2p2, {bytes} bytes: n{i} fast {fast}, established {est}, kernel \
             forwarded {forw}; {:?}",
            c.nonzero()
        );
        assert!(
            fast >= 100 && est >= fast * 9 / 10,
            "n{i}: the programs forwarded {fast} IPv6 packets of the transfer, {est} of them as \
             established flows\n{}",
            lab.agent_log(i)
        );
        assert!(
            forw * 20 < fast && forw < 20,
            "n{i}: the kernel forwarded {forw} IPv6 packets of the transfer (programs: {fast})"
        );
    }

    let before = [1, 2].map(|i| (lab.fast_path_counters(i), lab.snmp6_forwarded(i)));
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(2, 2).ip6(),
        20,
        Duration::from_millis(20),
    );
    assert_pings(&lab, s, 20, "ping -6 n1p1 → n2p2");
    for i in [1, 2] {
        let (c, f) = &before[i - 1];
        let c = lab.fast_path_counters(i).since(c);
        let forw = lab.snmp6_forwarded(i) - f;
        let proto = c.reason_in(family::IPV6, reason::CT_PROTO);
        assert!(
            proto >= 40 && c.fast_in(family::IPV6) == 0 && forw >= 40,
            "n{i}: ICMPv6 should go through the stack: ct_proto {proto}, fast {}, kernel \
             forwarded {forw}; {:?}",
            c.fast_in(family::IPV6),
            c.nonzero()
        );
    }
}
