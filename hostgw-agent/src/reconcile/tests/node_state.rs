//! Rounds that change the node state: forwarding, the conntrack gate, and the timeouts and
//! route MTUs the programs get.

use super::*;

#[tokio::test]
async fn forwarding_switched_off_and_nat_appearing_change_the_node_state() {
    let (mut r, _tx, mut fake) = converged(cluster(), &[]).await;
    fake.node.forwarding.v4_uplink = Some("0".into());
    assert_eq!(
        fake.round(&mut r).await,
        vec![Op::SetState { state: state(0) }]
    );
    fake.node.forwarding.v4_uplink = Some("1".into());
    assert_eq!(
        fake.round(&mut r).await,
        vec![Op::SetState {
            state: state(STATE_F_FORWARD_V4)
        }]
    );
    // kube-proxy starts: NAT chains appear, the gate goes on.
    fake.node.netfilter = Some(Ok(Netfilter {
        nat_chains: 2,
        ..Netfilter::default()
    }));
    assert_eq!(
        fake.round(&mut r).await,
        vec![Op::SetState {
            state: state(STATE_F_FORWARD_V4 | STATE_F_CT_GATE)
        }]
    );
    assert_eq!(fake.round(&mut r).await, vec![]);
    // NAT that cannot be read gates too.
    fake.node.netfilter = Some(Err("nft: permission denied".into()));
    assert_eq!(fake.round(&mut r).await, vec![]);
    fake.node.netfilter = Some(Ok(Netfilter::default()));
    assert_eq!(
        fake.round(&mut r).await,
        vec![Op::SetState {
            state: state(STATE_F_FORWARD_V4)
        }]
    );
    // A NetworkPolicy engine's forward chain, without any NAT: gated too.
    fake.node.netfilter = Some(Ok(Netfilter {
        forward_chains: 1,
        ..Netfilter::default()
    }));
    assert_eq!(
        fake.round(&mut r).await,
        vec![Op::SetState {
            state: state(STATE_F_FORWARD_V4 | STATE_F_CT_GATE)
        }]
    );
}

/// The programs get conntrack's timeouts as the sysctls have them, and a changed one at once.
#[tokio::test]
async fn conntrack_timeouts_reach_the_programs() {
    let (mut r, _tx, mut fake) = converged(cluster(), &[]).await;
    fake.node.ct_timeouts = ConntrackTimeouts {
        tcp_established: Some(432_000),
        tcp_time_wait: Some(120),
        tcp_close: Some(10),
        udp: Some(30),
        udp_stream: Some(120),
        hz: 250,
    };
    let mut want = state(STATE_F_FORWARD_V4);
    want.ct = fake.node.ct_timeouts.for_programs();
    assert_eq!((want.ct.refresh, want.ct.udp), (5 * 250, 30_000));
    assert_eq!(fake.round(&mut r).await, vec![Op::SetState { state: want }]);
    assert_eq!(fake.round(&mut r).await, vec![]);
    // An admin shortens the UDP stream timeout.
    fake.node.ct_timeouts.udp_stream = Some(60);
    want.ct.udp_stream = 60_000;
    assert_eq!(fake.round(&mut r).await, vec![Op::SetState { state: want }]);
}

/// An MTU on another route of the main table reaches the programs, the smallest one wins.
#[tokio::test]
async fn the_smallest_route_mtu_reaches_the_programs() {
    let (mut r, _tx, mut fake) = converged(cluster(), &[]).await;
    let with_mtu = |cidr: &str, mtu| Route {
        mtu: Some(mtu),
        ..route(cidr, "172.20.11.12")
    };
    fake.node.other_routes = vec![
        with_mtu("10.99.0.0/24", 1400),
        route("10.98.0.0/24", "172.20.11.12"),
        with_mtu("10.97.0.0/24", 1300),
    ];
    let mut want = state(STATE_F_FORWARD_V4);
    want.fib_mtu = 1300;
    assert_eq!(fake.round(&mut r).await, vec![Op::SetState { state: want }]);
    fake.node.other_routes.clear();
    assert_eq!(
        fake.round(&mut r).await,
        vec![Op::SetState {
            state: state(STATE_F_FORWARD_V4)
        }]
    );
}

#[tokio::test]
async fn gate_modes_on_and_off_ignore_nat() {
    for (mode, flags) in [
        ("on", STATE_F_FORWARD_V4 | STATE_F_CT_GATE),
        ("off", STATE_F_FORWARD_V4),
    ] {
        let (mut r, _tx, mut fake) = converged(cluster(), &["--conntrack-gate", mode]).await;
        assert_eq!(fake.node.state, state(flags), "--conntrack-gate {mode}");
        fake.node.netfilter = Some(Ok(Netfilter {
            nat_chains: 2,
            forward_chains: 1,
            legacy_tables: true,
        }));
        assert_eq!(fake.round(&mut r).await, vec![], "--conntrack-gate {mode}");
    }
}

#[tokio::test]
async fn an_ipv6_pod_cidr_switches_ipv6_forwarding_on_in_the_same_round() {
    let items = vec![
        node(
            "me",
            &["10.1.79.0/24", "fd00:10:79::/64"],
            &["172.20.11.43", "fd00:20::43"],
        ),
        node("b", &["10.1.27.0/24"], &["172.20.11.42"]),
    ];
    let (tx, rx) = watch::channel(Some(Arc::new(items)));
    let mut r = Reconciler::new(config(&[]), Some(rx));
    let mut fake = Fake::new();
    let ops = fake.round(&mut r).await;
    // The uplink keeps accepting Router Advertisements, then forwarding goes on; the second
    // pass writes the node state with IPv6 forwarding.
    let writes: Vec<&Op> = ops
        .iter()
        .filter(|op| matches!(op, Op::WriteSysctl { .. } | Op::SetState { .. }))
        .collect();
    assert_eq!(
        writes,
        vec![
            &Op::WriteSysctl {
                key: "net/ipv6/conf/eth0/accept_ra".into(),
                from: "1".into(),
                to: "2"
            },
            &Op::WriteSysctl {
                key: "net/ipv6/conf/all/forwarding".into(),
                from: "0".into(),
                to: "1"
            },
            &Op::SetState {
                state: state(STATE_F_FORWARD_V4)
            },
            &Op::SetState {
                state: state(STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6)
            },
        ]
    );
    fake.resolve();
    fake.round(&mut r).await;
    assert_eq!(fake.round(&mut r).await, vec![]);
    drop(tx);
}
