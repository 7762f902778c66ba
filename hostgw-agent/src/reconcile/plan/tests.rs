//! The plan from observed and desired states: order, convergence, next hops, routes, endpoints.

use super::*;
use crate::reconcile::desired::Remote;

const UPLINK: Uplink = Uplink {
    index: 2,
    mac: [2, 0, 0, 0, 0, 0x43],
    mtu: 1500,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The last byte of an address: the test MACs end in it.
fn last(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    }
}

fn desired(routes: &[(&str, &str)]) -> Desired {
    Desired {
        local_cidrs: vec![net("10.1.79.0/24")],
        routes: routes
            .iter()
            .map(|(c, via)| {
                (
                    net(c),
                    Remote {
                        node: format!("node-{via}"),
                        via: ip(via),
                    },
                )
            })
            .collect(),
        skipped: vec![],
    }
}

fn kroute(cidr: &str, via: &str, oif: u32) -> Route {
    Route {
        cidr: net(cidr),
        via: Some(ip(via)),
        oif: Some(oif),
        metric: None,
        mtu: None,
    }
}

fn port(index: u32) -> Link {
    Link {
        index,
        name: format!("veth{index}"),
        controller: Some(5),
        is_veth: true,
        ..Link::default()
    }
}

fn neigh(addr: &str, mac: Option<u8>, state: NeighState, ours: bool) -> Neighbour {
    Neighbour {
        ip: ip(addr),
        ifindex: UPLINK.index,
        mac: mac.map(|m| [2, 0, 0, 0, 0, m]),
        state,
        ours,
        managed: ours,
    }
}

fn trie_entry(via: &str, mac: Option<u8>) -> TrieRoute {
    TrieRoute {
        node_ip: ip(via),
        ifindex: UPLINK.index,
        mtu: 1500,
        flags: if mac.is_some() { ROUTE_F_RESOLVED } else { 0 },
        node_mac: mac.map_or([0; 6], |m| [2, 0, 0, 0, 0, m]),
        uplink_mac: UPLINK.mac,
    }
}

/// The actual state that the plan for `d` leads to, with every next hop resolved.
fn converged(d: &Desired) -> Observed {
    Observed {
        routes: d
            .routes
            .iter()
            .map(|(c, r)| kroute(&c.to_string(), &r.via.to_string(), UPLINK.index))
            .collect(),
        neighbours: d
            .routes
            .values()
            .map(|r| {
                neigh(
                    &r.via.to_string(),
                    Some(last(r.via)),
                    NeighState::Valid,
                    true,
                )
            })
            .collect(),
        trie: d
            .routes
            .iter()
            .map(|(c, r)| (*c, trie_entry(&r.via.to_string(), Some(last(r.via)))))
            .collect(),
        ..Observed::default()
    }
}

#[test]
fn from_nothing_everything_is_added_in_order() {
    let d = desired(&[("10.1.27.0/24", "172.20.11.42")]);
    let ops = network_via(&d, &Observed::default(), &UPLINK);
    assert_eq!(
        ops,
        vec![
            Op::ResolveNeighbour {
                ip: ip("172.20.11.42"),
                ifindex: 2
            },
            Op::ReplaceRoute {
                cidr: net("10.1.27.0/24"),
                via: ip("172.20.11.42"),
                oif: 2
            },
            Op::PutTrie {
                cidr: net("10.1.27.0/24"),
                route: trie_entry("172.20.11.42", None)
            },
        ]
    );
}

#[test]
fn converged_state_plans_nothing() {
    let d = desired(&[
        ("10.1.27.0/24", "172.20.11.42"),
        ("10.1.28.0/24", "172.20.11.44"),
    ]);
    assert_eq!(network_via(&d, &converged(&d), &UPLINK), vec![]);
}

#[test]
fn a_resolved_neighbour_fills_the_mac_in() {
    let d = desired(&[("10.1.27.0/24", "172.20.11.42")]);
    let mut a = converged(&d);
    a.trie
        .insert(net("10.1.27.0/24"), trie_entry("172.20.11.42", None));
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![Op::PutTrie {
            cidr: net("10.1.27.0/24"),
            route: trie_entry("172.20.11.42", Some(42))
        }]
    );
    // A changed MAC is written again.
    a.neighbours[0].mac = Some([2, 0, 0, 0, 0, 0x99]);
    let ops = network_via(&d, &a, &UPLINK);
    assert!(
        matches!(&ops[..], [Op::PutTrie { route, .. }] if route.node_mac == [2, 0, 0, 0, 0, 0x99]),
        "{ops:?}"
    );
}

/// Where the kernel would route part of a remote CIDR otherwise (a more specific route inside
/// it, of anyone), its trie entry asks the FIB; a less specific route (the default) does not
/// matter, and the flag goes with the route.
#[test]
fn other_routes_inside_a_remote_cidr_make_its_entry_ask_the_fib() {
    let d = desired(&[
        ("10.1.27.0/24", "172.20.11.42"),
        ("10.1.28.0/24", "172.20.11.44"),
    ]);
    let mut a = converged(&d);
    a.other_routes = vec![
        kroute("10.1.27.5/32", "172.20.11.45", UPLINK.index),
        kroute("0.0.0.0/0", "172.20.11.1", UPLINK.index),
    ];
    let mut flagged = trie_entry("172.20.11.42", Some(42));
    flagged.flags |= ROUTE_F_FIB;
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![Op::PutTrie {
            cidr: net("10.1.27.0/24"),
            route: flagged
        }]
    );
    a.trie.insert(net("10.1.27.0/24"), flagged);
    assert_eq!(network_via(&d, &a, &UPLINK), vec![]);
    a.other_routes.remove(0);
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![Op::PutTrie {
            cidr: net("10.1.27.0/24"),
            route: trie_entry("172.20.11.42", Some(42))
        }]
    );
}

/// A route of someone else's for exactly a remote pod CIDR (an admin's `proto static`) is
/// left alone: ours is not installed over it (a replace would overwrite it), ours is deleted
/// if it is there, and the CIDR leaves the trie; once the other route is gone, ours and the
/// trie entry come back.
#[test]
fn a_foreign_route_for_a_pod_cidr_is_left_alone() {
    let d = desired(&[
        ("10.1.27.0/24", "172.20.11.42"),
        ("10.1.28.0/24", "172.20.11.44"),
    ]);
    let mut a = converged(&d);
    let ours = a
        .routes
        .iter()
        .find(|r| r.cidr == net("10.1.27.0/24"))
        .cloned()
        .unwrap();
    let theirs = kroute("10.1.27.0/24", "172.20.11.99", UPLINK.index);
    a.other_routes = vec![theirs.clone()];
    assert_eq!(
        conflicts(&d, &a),
        BTreeMap::from([(net("10.1.27.0/24"), theirs)])
    );
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![
            Op::DeleteTrie {
                cidr: net("10.1.27.0/24")
            },
            Op::DeleteRoute { route: ours }
        ]
    );
    // The kernel as it is afterwards: only theirs, no trie entry. Nothing more to do.
    a.routes.retain(|r| r.cidr != net("10.1.27.0/24"));
    a.trie.remove(&net("10.1.27.0/24"));
    assert_eq!(network_via(&d, &a, &UPLINK), vec![]);
    // Theirs goes: ours comes back.
    a.other_routes.clear();
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![
            Op::ReplaceRoute {
                cidr: net("10.1.27.0/24"),
                via: ip("172.20.11.42"),
                oif: UPLINK.index
            },
            Op::PutTrie {
                cidr: net("10.1.27.0/24"),
                route: trie_entry("172.20.11.42", Some(42))
            }
        ]
    );
}

/// An MTU an operator sets on our route reaches its trie entry, as the kernel honours it.
#[test]
fn an_mtu_on_our_route_reaches_the_trie() {
    let d = desired(&[("10.1.27.0/24", "172.20.11.42")]);
    let mut a = converged(&d);
    a.routes[0].mtu = Some(1400);
    let mut entry = trie_entry("172.20.11.42", Some(42));
    entry.mtu = 1400;
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![Op::PutTrie {
            cidr: net("10.1.27.0/24"),
            route: entry
        }]
    );
    // Above the uplink's MTU it changes nothing.
    a.routes[0].mtu = Some(9000);
    assert_eq!(network_via(&d, &a, &UPLINK), vec![]);
}

/// Policy routing rules and xfrm policies send routed traffic to the stack: the node state
/// says so.
#[test]
fn policy_rules_and_xfrm_policies_reach_the_node_state() {
    let mut a = converged(&Desired::default());
    assert_eq!(
        node_state(&a, false).flags & (STATE_F_POLICY | STATE_F_XFRM),
        0
    );
    a.extra_rules = vec!["V4 100: table 100".to_owned()];
    assert_eq!(node_state(&a, false).flags & STATE_F_POLICY, STATE_F_POLICY);
    a.xfrm_policies = 1;
    assert_eq!(node_state(&a, false).flags & STATE_F_XFRM, STATE_F_XFRM);
}

#[test]
fn unresolved_neighbours_are_requested_once_unless_managed() {
    let d = desired(&[("10.1.27.0/24", "172.20.11.42")]);
    let mut a = converged(&d);
    a.neighbours = vec![neigh("172.20.11.42", None, NeighState::Unresolved, false)];
    a.trie
        .insert(net("10.1.27.0/24"), trie_entry("172.20.11.42", None));
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![Op::ResolveNeighbour {
            ip: ip("172.20.11.42"),
            ifindex: 2
        }]
    );
    a.neighbours[0].managed = true;
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![],
        "the kernel retries managed entries itself"
    );
}

#[test]
fn removed_nodes_lose_trie_entry_then_route_then_our_neighbour() {
    let before = desired(&[
        ("10.1.27.0/24", "172.20.11.42"),
        ("10.1.28.0/24", "172.20.11.44"),
    ]);
    let a = converged(&before);
    let after = desired(&[("10.1.27.0/24", "172.20.11.42")]);
    let ops = network_via(&after, &a, &UPLINK);
    assert_eq!(
        ops,
        vec![
            Op::DeleteTrie {
                cidr: net("10.1.28.0/24")
            },
            Op::DeleteRoute {
                route: kroute("10.1.28.0/24", "172.20.11.44", 2)
            },
            Op::DeleteNeighbour {
                neighbour: neigh("172.20.11.44", Some(44), NeighState::Valid, true)
            },
        ]
    );
}

#[test]
fn foreign_neighbours_are_never_deleted() {
    let d = desired(&[]);
    let mut a = Observed::default();
    a.neighbours
        .push(neigh("172.20.11.1", Some(1), NeighState::Valid, false));
    assert_eq!(network_via(&d, &a, &UPLINK), vec![]);
}

#[test]
fn wrong_or_duplicate_routes_are_replaced_and_removed() {
    let d = desired(&[("10.1.27.0/24", "172.20.11.42")]);
    let mut a = converged(&d);
    // Our route points at a stale next hop; and one on another interface.
    a.routes = vec![
        kroute("10.1.27.0/24", "172.20.11.99", 2),
        kroute("10.1.27.0/24", "172.20.11.42", 7),
    ];
    let ops = network_via(&d, &a, &UPLINK);
    assert_eq!(
        ops,
        vec![
            Op::ReplaceRoute {
                cidr: net("10.1.27.0/24"),
                via: ip("172.20.11.42"),
                oif: 2
            },
            Op::DeleteRoute {
                route: kroute("10.1.27.0/24", "172.20.11.99", 2)
            },
            Op::DeleteRoute {
                route: kroute("10.1.27.0/24", "172.20.11.42", 7)
            },
        ]
    );
    // Two identical correct copies: one is kept.
    a.routes = vec![
        kroute("10.1.27.0/24", "172.20.11.42", 2),
        kroute("10.1.27.0/24", "172.20.11.42", 2),
    ];
    let ops = network_via(&d, &a, &UPLINK);
    assert_eq!(
        ops,
        vec![Op::DeleteRoute {
            route: kroute("10.1.27.0/24", "172.20.11.42", 2)
        }]
    );
}

#[test]
fn stale_state_from_an_earlier_run_is_removed() {
    let d = desired(&[]);
    let mut a = converged(&desired(&[("10.1.50.0/24", "172.20.11.50")]));
    a.endpoints.insert(
        ip("10.1.79.3"),
        Endpoint {
            ifindex: 9,
            mac: [2; 6],
            pad: [0; 2],
        },
    );
    let ops = network_via(&d, &a, &UPLINK);
    assert_eq!(ops.len(), 4, "{ops:?}");
    assert!(matches!(ops[0], Op::DeleteTrie { .. }));
    assert!(
        matches!(ops[1], Op::DeleteEndpoint { .. }),
        "its port is gone"
    );
    assert!(matches!(ops[2], Op::DeleteRoute { .. }));
    assert!(matches!(ops[3], Op::DeleteNeighbour { .. }));
}

fn bridge_actual() -> Observed {
    Observed {
        bridge_nets: vec![net("10.1.79.0/24")],
        ports: vec![port(10), port(11)],
        fdb: BTreeMap::from([([2, 0, 0, 0, 0, 3], 10), ([2, 0, 0, 0, 0, 4], 11)]),
        ..Observed::default()
    }
}

fn bneigh(addr: &str, mac: Option<u8>, state: NeighState) -> Neighbour {
    Neighbour {
        ip: ip(addr),
        ifindex: 5,
        mac: mac.map(|m| [2, 0, 0, 0, 0, m]),
        state,
        ours: false,
        managed: false,
    }
}

fn ep(port: u32, mac: u8) -> Endpoint {
    Endpoint {
        ifindex: port,
        mac: [2, 0, 0, 0, 0, mac],
        pad: [0; 2],
    }
}

#[test]
fn endpoints_come_from_bridge_neighbours_and_the_fdb() {
    let mut a = bridge_actual();
    a.bridge_neighbours = vec![
        bneigh("10.1.79.3", Some(3), NeighState::Valid),
        bneigh("10.1.79.4", Some(4), NeighState::Valid),
        bneigh("10.1.79.5", Some(5), NeighState::Valid), // MAC not in the FDB
        bneigh("10.1.79.6", None, NeighState::Unresolved),
        bneigh("192.168.1.1", Some(3), NeighState::Valid), // not a pod address
    ];
    let ops = network_via(&Desired::default(), &a, &UPLINK);
    assert_eq!(
        ops,
        vec![
            Op::PutEndpoint {
                ip: ip("10.1.79.3"),
                endpoint: ep(10, 3)
            },
            Op::PutEndpoint {
                ip: ip("10.1.79.4"),
                endpoint: ep(11, 4)
            },
        ]
    );
}

/// `bpf_redirect_peer` only delivers into a veth: a pod behind a tap or a physical port is the
/// bridge's to deliver, and a remembered entry for it goes.
#[test]
fn endpoints_are_only_behind_veth_ports() {
    let mut a = bridge_actual();
    a.ports[1].is_veth = false;
    a.bridge_neighbours = vec![
        bneigh("10.1.79.3", Some(3), NeighState::Valid),
        bneigh("10.1.79.4", Some(4), NeighState::Valid),
    ];
    a.endpoints = BTreeMap::from([(ip("10.1.79.9"), ep(11, 9))]);
    let ops = network_via(&Desired::default(), &a, &UPLINK);
    assert_eq!(
        ops,
        vec![
            Op::PutEndpoint {
                ip: ip("10.1.79.3"),
                endpoint: ep(10, 3)
            },
            Op::DeleteEndpoint {
                ip: ip("10.1.79.9")
            },
        ]
    );
}

/// Other tc users: a shared ingress on the uplink, a port with its own egress (a shaper), and
/// ingress filters on a port; the flags follow as they come and go.
#[test]
fn hooks_with_other_tc_users_are_flagged() {
    let mut a = bridge_actual();
    a.uplink = Link {
        index: 2,
        ..port(2)
    };
    let users = |ingress: &[&str], egress: &[&str]| TcUsers {
        ingress: ingress.iter().map(|s| (*s).to_owned()).collect(),
        egress: egress.iter().map(|s| (*s).to_owned()).collect(),
    };
    a.tc_users = BTreeMap::from([
        (2, users(&["flower filter, pref 49152"], &[])),
        (10, users(&[], &["root qdisc tbf"])),
        (11, users(&["u32 filter, pref 49152"], &["root qdisc tbf"])),
        // Not a hooked interface.
        (99, users(&["flower filter, pref 1"], &[])),
    ]);
    a.hooks = BTreeMap::from([(10, HOOK_F_PORT_EGRESS), (12, HOOK_F_SHARED_INGRESS)]);
    let ops = hooks(&a);
    assert_eq!(
        ops,
        vec![
            Op::DeleteHook { ifindex: 12 },
            Op::SetHook {
                ifindex: 2,
                flags: HOOK_F_SHARED_INGRESS,
                users: a.tc_users[&2].clone()
            },
            Op::SetHook {
                ifindex: 11,
                flags: HOOK_F_SHARED_INGRESS | HOOK_F_PORT_EGRESS,
                users: a.tc_users[&11].clone()
            },
        ]
    );
    // The uplink's egress is no port's: it does not flag it.
    a.tc_users.insert(2, users(&[], &["root qdisc mq"]));
    a.hooks = BTreeMap::from([(2, HOOK_F_SHARED_INGRESS)]);
    assert!(
        hooks(&a).contains(&Op::DeleteHook { ifindex: 2 }),
        "{:?}",
        hooks(&a)
    );
}

#[test]
fn endpoints_outlive_aged_out_entries_but_not_their_port() {
    let mut a = bridge_actual();
    a.fdb.clear();
    a.endpoints = BTreeMap::from([(ip("10.1.79.3"), ep(10, 3)), (ip("10.1.79.4"), ep(11, 4))]);
    assert_eq!(
        network_via(&Desired::default(), &a, &UPLINK),
        vec![],
        "aged-out entries keep endpoints"
    );
    a.ports.retain(|p| p.index != 11);
    assert_eq!(
        network_via(&Desired::default(), &a, &UPLINK),
        vec![Op::DeleteEndpoint {
            ip: ip("10.1.79.4")
        }]
    );
}

#[test]
fn failed_or_moved_pods_are_dropped_or_updated() {
    let mut a = bridge_actual();
    a.endpoints = BTreeMap::from([(ip("10.1.79.3"), ep(10, 3)), (ip("10.1.79.4"), ep(11, 4))]);
    a.bridge_neighbours = vec![
        bneigh("10.1.79.3", None, NeighState::Unresolved),
        // The address now belongs to the pod with MAC ..:03 on port 10.
        bneigh("10.1.79.4", Some(3), NeighState::Valid),
    ];
    let ops = network_via(&Desired::default(), &a, &UPLINK);
    assert_eq!(
        ops,
        vec![
            Op::PutEndpoint {
                ip: ip("10.1.79.4"),
                endpoint: ep(10, 3)
            },
            Op::DeleteEndpoint {
                ip: ip("10.1.79.3")
            },
        ]
    );
}

#[test]
fn dual_stack_routes_are_planned_per_family_in_one_pass() {
    let d = desired(&[
        ("10.1.27.0/24", "172.20.11.42"),
        ("fd00:10:27::/64", "fd00:20::42"),
    ]);
    let ops = network_via(&d, &Observed::default(), &UPLINK);
    assert_eq!(
        ops,
        vec![
            Op::ResolveNeighbour {
                ip: ip("172.20.11.42"),
                ifindex: 2
            },
            Op::ResolveNeighbour {
                ip: ip("fd00:20::42"),
                ifindex: 2
            },
            Op::ReplaceRoute {
                cidr: net("10.1.27.0/24"),
                via: ip("172.20.11.42"),
                oif: 2
            },
            Op::ReplaceRoute {
                cidr: net("fd00:10:27::/64"),
                via: ip("fd00:20::42"),
                oif: 2
            },
            Op::PutTrie {
                cidr: net("10.1.27.0/24"),
                route: trie_entry("172.20.11.42", None)
            },
            Op::PutTrie {
                cidr: net("fd00:10:27::/64"),
                route: trie_entry("fd00:20::42", None)
            },
        ]
    );
    assert_eq!(network_via(&d, &converged(&d), &UPLINK), vec![]);
}

#[test]
fn a_reachable_ndp_entry_resolves_the_ipv6_trie_entry() {
    let d = desired(&[("fd00:10:27::/64", "fd00:20::42")]);
    let mut a = converged(&d);
    a.trie
        .insert(net("fd00:10:27::/64"), trie_entry("fd00:20::42", None));
    let ops = network_via(&d, &a, &UPLINK);
    let [Op::PutTrie { cidr, route }] = &ops[..] else {
        panic!("{ops:?}");
    };
    assert_eq!(*cidr, net("fd00:10:27::/64"));
    assert_eq!(route.flags, ROUTE_F_RESOLVED);
    assert_eq!(route.node_mac, [2, 0, 0, 0, 0, 0x42]);
    assert_eq!(route.node_ip, ip("fd00:20::42"));
    assert_eq!((route.mtu, route.uplink_mac), (UPLINK.mtu, UPLINK.mac));
    // An NDP entry that failed leaves it unresolved and asks again (unmanaged).
    a.neighbours = vec![neigh("fd00:20::42", None, NeighState::Unresolved, false)];
    a.trie
        .insert(net("fd00:10:27::/64"), trie_entry("fd00:20::42", None));
    assert_eq!(
        network_via(&d, &a, &UPLINK),
        vec![Op::ResolveNeighbour {
            ip: ip("fd00:20::42"),
            ifindex: 2
        }]
    );
}

#[test]
fn stale_ipv6_state_is_removed_and_ipv4_kept() {
    let both = desired(&[
        ("10.1.27.0/24", "172.20.11.42"),
        ("fd00:10:27::/64", "fd00:20::42"),
    ]);
    let mut a = converged(&both);
    a.ports = vec![port(10)];
    a.bridge_nets = vec![net("fd00:10:79::1/64")];
    a.endpoints.insert(ip("fd00:10:79::3"), ep(10, 3));
    a.bridge_neighbours = vec![bneigh("fd00:10:79::3", None, NeighState::Unresolved)];
    let v4_only = desired(&[("10.1.27.0/24", "172.20.11.42")]);
    assert_eq!(
        network_via(&v4_only, &a, &UPLINK),
        vec![
            Op::DeleteTrie {
                cidr: net("fd00:10:27::/64")
            },
            Op::DeleteEndpoint {
                ip: ip("fd00:10:79::3")
            },
            Op::DeleteRoute {
                route: kroute("fd00:10:27::/64", "fd00:20::42", 2)
            },
            Op::DeleteNeighbour {
                neighbour: neigh("fd00:20::42", Some(0x42), NeighState::Valid, true)
            },
        ]
    );
}

#[test]
fn ipv6_endpoints_skip_link_local_and_multicast() {
    let mut a = bridge_actual();
    a.bridge_nets
        .extend([net("fd00:10:79::1/64"), net("fe80::1/64")]);
    a.bridge_neighbours = vec![
        bneigh("10.1.79.3", Some(3), NeighState::Valid),
        bneigh("fd00:10:79::3", Some(3), NeighState::Valid),
        bneigh("fe80::3", Some(3), NeighState::Valid), // link-local
        bneigh("ff02::1", Some(4), NeighState::Valid), // multicast
        bneigh("fd00:99::4", Some(4), NeighState::Valid), // not a pod network
        bneigh("fd00:10:79::5", Some(5), NeighState::Valid), // MAC not in the FDB
    ];
    // A remembered link-local endpoint (from a broken earlier run) goes too.
    a.endpoints.insert(ip("fe80::4"), ep(11, 4));
    assert_eq!(
        network_via(&Desired::default(), &a, &UPLINK),
        vec![
            Op::PutEndpoint {
                ip: ip("10.1.79.3"),
                endpoint: ep(10, 3)
            },
            Op::PutEndpoint {
                ip: ip("fd00:10:79::3"),
                endpoint: ep(10, 3)
            },
            Op::DeleteEndpoint { ip: ip("fe80::4") },
        ]
    );
}

#[test]
fn ipv6_forwarding_protects_router_advertisements_first() {
    let f = |all: Option<&str>, ra: Option<&str>| Forwarding {
        v6_all: all.map(str::to_owned),
        uplink_accept_ra: ra.map(str::to_owned),
        ..Forwarding::default()
    };
    let keys = |ops: Vec<Op>| -> Vec<(String, String, &'static str)> {
        ops.into_iter()
            .map(|op| match op {
                Op::WriteSysctl { key, from, to } => (key, from, to),
                other => panic!("not a sysctl write: {other:?}"),
            })
            .collect()
    };
    assert_eq!(
        keys(ipv6_forwarding(&f(Some("1"), Some("1")), "eth0")),
        vec![]
    );
    assert_eq!(
        keys(ipv6_forwarding(&f(None, Some("1")), "eth0")),
        vec![],
        "unreadable"
    );
    assert_eq!(
        keys(ipv6_forwarding(&f(Some("0"), Some("1")), "eth0")),
        vec![
            ("net/ipv6/conf/eth0/accept_ra".into(), "1".into(), "2"),
            ("net/ipv6/conf/all/forwarding".into(), "0".into(), "1"),
        ]
    );
    // accept_ra 0 (no RAs wanted) or 2 (already accepted while forwarding) stays.
    for ra in [Some("0"), Some("2"), None] {
        assert_eq!(
            keys(ipv6_forwarding(&f(Some("0"), ra), "eth0")),
            vec![("net/ipv6/conf/all/forwarding".into(), "0".into(), "1")],
            "{ra:?}"
        );
    }
}
