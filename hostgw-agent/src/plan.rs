//! Planning: the operations that take the kernel and the maps from what they are ([`Actual`])
//! to what they should be ([`Desired`]). A pure function, tested exhaustively; `apply` carries
//! the operations out.
//!
//! - Routes: one `podCIDR via nodeIP dev uplink proto 203` per remote CIDR; any other route
//!   of ours is deleted.
//! - Next hops: a neighbour entry for every node address, created (managed, tagged as ours)
//!   when missing or failed; ours for addresses no longer used are deleted.
//! - Route trie: one entry per remote CIDR with the next hop's MAC when the kernel has
//!   resolved it (without, the programs hand the packet to `bpf_redirect_neigh`).
//! - Endpoints: pods on the bridge, from the bridge's neighbour entries joined with its
//!   forwarding database. An endpoint stays while its port exists and nothing contradicts it:
//!   with the fast path the kernel no longer sees a pod's traffic, so its neighbour and FDB
//!   entries age out while the pod is alive.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use hostgw_common::{Endpoint, ROUTE_F_RESOLVED, RouteV4};
use ipnet::Ipv4Net;

use crate::{
    desired::Desired,
    kernel::{KernelRoute, NeighState, Neighbour},
};

/// The interface facts the plan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    pub index: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
}

/// What the kernel and the maps have now.
#[derive(Debug, Clone, Default)]
pub struct Actual {
    /// Our routes in the main table.
    pub routes: Vec<KernelRoute>,
    /// Neighbour entries on the uplink.
    pub neighbours: Vec<Neighbour>,
    /// The route trie.
    pub trie: BTreeMap<Ipv4Net, RouteV4>,
    /// The bridge's IPv4 networks: where pods live.
    pub bridge_nets: Vec<Ipv4Net>,
    /// Neighbour entries on the bridge.
    pub bridge_neighbours: Vec<Neighbour>,
    /// The bridge's learned MAC → port.
    pub fdb: BTreeMap<[u8; 6], u32>,
    /// The bridge's current ports.
    pub ports: BTreeSet<u32>,
    /// The endpoint table.
    pub endpoints: BTreeMap<Ipv4Addr, Endpoint>,
}

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    ResolveNeighbour { ip: Ipv4Addr },
    ReplaceRoute { cidr: Ipv4Net, via: Ipv4Addr },
    PutTrie { cidr: Ipv4Net, route: RouteV4 },
    PutEndpoint { ip: Ipv4Addr, endpoint: Endpoint },
    DeleteTrie { cidr: Ipv4Net },
    DeleteEndpoint { ip: Ipv4Addr },
    DeleteRoute { route: KernelRoute },
    DeleteNeighbour { neighbour: Neighbour },
}

/// The operations, in a safe order: next hops and routes before the trie entries that use
/// them, trie entries removed before their routes.
pub fn plan(desired: &Desired, actual: &Actual, uplink: &Uplink) -> Vec<Op> {
    let mut ops = Vec::new();
    let by_ip: BTreeMap<Ipv4Addr, &Neighbour> =
        actual.neighbours.iter().map(|n| (n.ip, n)).collect();
    let next_hops: BTreeSet<Ipv4Addr> = desired.routes.values().map(|r| r.via).collect();

    for ip in &next_hops {
        let needs = match by_ip.get(ip) {
            None => true,
            Some(n) => n.state == NeighState::Unresolved && !n.managed,
        };
        if needs {
            ops.push(Op::ResolveNeighbour { ip: *ip });
        }
    }

    let mut kept = BTreeSet::new();
    for (cidr, remote) in &desired.routes {
        let present = actual
            .routes
            .iter()
            .any(|r| r.cidr == *cidr && r.via == Some(remote.via) && r.oif == Some(uplink.index));
        if present {
            kept.insert(*cidr);
        } else {
            ops.push(Op::ReplaceRoute {
                cidr: *cidr,
                via: remote.via,
            });
        }
    }

    for (cidr, remote) in &desired.routes {
        let mac = by_ip
            .get(&remote.via)
            .filter(|n| n.state == NeighState::Valid)
            .and_then(|n| n.mac);
        let route = RouteV4 {
            node_ip: remote.via.octets(),
            ifindex: uplink.index,
            mtu: uplink.mtu,
            flags: if mac.is_some() { ROUTE_F_RESOLVED } else { 0 },
            node_mac: mac.unwrap_or_default(),
            uplink_mac: uplink.mac,
        };
        if actual.trie.get(cidr) != Some(&route) {
            ops.push(Op::PutTrie { cidr: *cidr, route });
        }
    }

    let endpoints = desired_endpoints(actual);
    for (ip, endpoint) in &endpoints {
        if actual.endpoints.get(ip) != Some(endpoint) {
            ops.push(Op::PutEndpoint {
                ip: *ip,
                endpoint: *endpoint,
            });
        }
    }

    for cidr in actual.trie.keys() {
        if !desired.routes.contains_key(cidr) {
            ops.push(Op::DeleteTrie { cidr: *cidr });
        }
    }
    for ip in actual.endpoints.keys() {
        if !endpoints.contains_key(ip) {
            ops.push(Op::DeleteEndpoint { ip: *ip });
        }
    }
    // Our routes that are not wanted, including extra copies of a wanted one.
    let mut matched = BTreeSet::new();
    for r in &actual.routes {
        let wanted = desired
            .routes
            .get(&r.cidr)
            .is_some_and(|remote| r.via == Some(remote.via) && r.oif == Some(uplink.index));
        if !(wanted && kept.contains(&r.cidr) && matched.insert(r.cidr)) {
            ops.push(Op::DeleteRoute { route: r.clone() });
        }
    }
    for n in &actual.neighbours {
        if n.ours && !next_hops.contains(&n.ip) {
            ops.push(Op::DeleteNeighbour {
                neighbour: n.clone(),
            });
        }
    }
    ops
}

/// The endpoint table as it should be.
fn desired_endpoints(actual: &Actual) -> BTreeMap<Ipv4Addr, Endpoint> {
    let is_pod = |ip: &Ipv4Addr| actual.bridge_nets.iter().any(|n| n.contains(ip));
    let mut out = BTreeMap::new();
    let mut failed = BTreeSet::new();
    for n in &actual.bridge_neighbours {
        if !is_pod(&n.ip) {
            continue;
        }
        match (n.state, n.mac) {
            (NeighState::Valid, Some(mac)) => {
                if let Some(port) = actual.fdb.get(&mac).filter(|p| actual.ports.contains(p)) {
                    out.insert(
                        n.ip,
                        Endpoint {
                            ifindex: *port,
                            mac,
                            pad: [0; 2],
                        },
                    );
                }
            }
            (NeighState::Unresolved, _) => {
                failed.insert(n.ip);
            }
            (NeighState::Valid, None) => {}
        }
    }
    for (ip, ep) in &actual.endpoints {
        let still = actual.ports.contains(&ep.ifindex) && is_pod(ip) && !failed.contains(ip);
        if still && !out.contains_key(ip) {
            // A neighbour entry that moved to another MAC wins over the remembered one.
            let contradicted = actual
                .bridge_neighbours
                .iter()
                .any(|n| n.ip == *ip && n.mac.is_some_and(|m| m != ep.mac));
            if !contradicted {
                out.insert(*ip, *ep);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Remote;

    const UPLINK: Uplink = Uplink {
        index: 2,
        mac: [2, 0, 0, 0, 0, 0x43],
        mtu: 1500,
    };

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
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

    fn kroute(cidr: &str, via: &str, oif: u32) -> KernelRoute {
        KernelRoute {
            cidr: net(cidr),
            via: Some(ip(via)),
            oif: Some(oif),
            message: rtnetlink::packet_route::route::RouteMessage::default(),
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

    fn trie_entry(via: &str, mac: Option<u8>) -> RouteV4 {
        RouteV4 {
            node_ip: ip(via).octets(),
            ifindex: UPLINK.index,
            mtu: 1500,
            flags: if mac.is_some() { ROUTE_F_RESOLVED } else { 0 },
            node_mac: mac.map_or([0; 6], |m| [2, 0, 0, 0, 0, m]),
            uplink_mac: UPLINK.mac,
        }
    }

    /// The actual state that the plan for `d` leads to, with every next hop resolved.
    fn converged(d: &Desired) -> Actual {
        Actual {
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
                        Some(r.via.octets()[3]),
                        NeighState::Valid,
                        true,
                    )
                })
                .collect(),
            trie: d
                .routes
                .iter()
                .map(|(c, r)| (*c, trie_entry(&r.via.to_string(), Some(r.via.octets()[3]))))
                .collect(),
            ..Actual::default()
        }
    }

    #[test]
    fn from_nothing_everything_is_added_in_order() {
        let d = desired(&[("10.1.27.0/24", "172.20.11.42")]);
        let ops = plan(&d, &Actual::default(), &UPLINK);
        assert_eq!(
            ops,
            vec![
                Op::ResolveNeighbour {
                    ip: ip("172.20.11.42")
                },
                Op::ReplaceRoute {
                    cidr: net("10.1.27.0/24"),
                    via: ip("172.20.11.42")
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
        assert_eq!(plan(&d, &converged(&d), &UPLINK), vec![]);
    }

    #[test]
    fn a_resolved_neighbour_fills_the_mac_in() {
        let d = desired(&[("10.1.27.0/24", "172.20.11.42")]);
        let mut a = converged(&d);
        a.trie
            .insert(net("10.1.27.0/24"), trie_entry("172.20.11.42", None));
        assert_eq!(
            plan(&d, &a, &UPLINK),
            vec![Op::PutTrie {
                cidr: net("10.1.27.0/24"),
                route: trie_entry("172.20.11.42", Some(42))
            }]
        );
        // A changed MAC is written again.
        a.neighbours[0].mac = Some([2, 0, 0, 0, 0, 0x99]);
        let ops = plan(&d, &a, &UPLINK);
        assert!(
            matches!(&ops[..], [Op::PutTrie { route, .. }] if route.node_mac == [2, 0, 0, 0, 0, 0x99]),
            "{ops:?}"
        );
    }

    #[test]
    fn unresolved_neighbours_are_requested_once_unless_managed() {
        let d = desired(&[("10.1.27.0/24", "172.20.11.42")]);
        let mut a = converged(&d);
        a.neighbours = vec![neigh("172.20.11.42", None, NeighState::Unresolved, false)];
        a.trie
            .insert(net("10.1.27.0/24"), trie_entry("172.20.11.42", None));
        assert_eq!(
            plan(&d, &a, &UPLINK),
            vec![Op::ResolveNeighbour {
                ip: ip("172.20.11.42")
            }]
        );
        a.neighbours[0].managed = true;
        assert_eq!(
            plan(&d, &a, &UPLINK),
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
        let ops = plan(&after, &a, &UPLINK);
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
        let mut a = Actual::default();
        a.neighbours
            .push(neigh("172.20.11.1", Some(1), NeighState::Valid, false));
        assert_eq!(plan(&d, &a, &UPLINK), vec![]);
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
        let ops = plan(&d, &a, &UPLINK);
        assert_eq!(
            ops,
            vec![
                Op::ReplaceRoute {
                    cidr: net("10.1.27.0/24"),
                    via: ip("172.20.11.42")
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
        let ops = plan(&d, &a, &UPLINK);
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
        let ops = plan(&d, &a, &UPLINK);
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert!(matches!(ops[0], Op::DeleteTrie { .. }));
        assert!(
            matches!(ops[1], Op::DeleteEndpoint { .. }),
            "its port is gone"
        );
        assert!(matches!(ops[2], Op::DeleteRoute { .. }));
        assert!(matches!(ops[3], Op::DeleteNeighbour { .. }));
    }

    fn bridge_actual() -> Actual {
        Actual {
            bridge_nets: vec![net("10.1.79.0/24")],
            ports: BTreeSet::from([10, 11]),
            fdb: BTreeMap::from([([2, 0, 0, 0, 0, 3], 10), ([2, 0, 0, 0, 0, 4], 11)]),
            ..Actual::default()
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
        let ops = plan(&Desired::default(), &a, &UPLINK);
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

    #[test]
    fn endpoints_outlive_aged_out_entries_but_not_their_port() {
        let mut a = bridge_actual();
        a.fdb.clear();
        a.endpoints = BTreeMap::from([(ip("10.1.79.3"), ep(10, 3)), (ip("10.1.79.4"), ep(11, 4))]);
        assert_eq!(
            plan(&Desired::default(), &a, &UPLINK),
            vec![],
            "aged-out entries keep endpoints"
        );
        a.ports.remove(&11);
        assert_eq!(
            plan(&Desired::default(), &a, &UPLINK),
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
        let ops = plan(&Desired::default(), &a, &UPLINK);
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
}
