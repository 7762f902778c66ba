//! Planning: the operations that take the kernel and the maps from what they are
//! ([`Observed`]) to what they should be ([`Desired`]). A pure function, tested exhaustively;
//! the [`Host`](super::Host) carries the operations out. Every write a round makes is an
//! [`Op`] of the plan.
//!
//! Both address families go through the same code: routes, next hops, trie entries and
//! endpoints are keyed by `IpNet`/`IpAddr`, and the apply step picks the family's map.
//!
//! - Bridge ports: the egress program on exactly the bridge's current ports; hooks (and pins)
//!   of ports that are gone are released.
//! - Forwarding: once this node has an IPv6 pod CIDR, `net.ipv6.conf.all.forwarding` is
//!   switched on; before that, an uplink with `accept_ra = 1` is set to 2 so that it keeps
//!   accepting Router Advertisements (with forwarding on, the kernel ignores them at 1).
//! - Node state: the `STATE` map holds what the kernel does with forwarded packets now
//!   (forwarding per family, from the sysctls as read), whether the conntrack gate is on, and
//!   the bridge's and the uplink's MACs.
//! - Routes: one `podCIDR via nodeIP dev uplink proto 203` per remote CIDR; any other route
//!   of ours is deleted.
//! - Next hops: a neighbour entry for every node address, created (managed, tagged as ours)
//!   when missing or failed; ours for addresses no longer used are deleted.
//! - Route trie: one entry per remote CIDR with the next hop's MAC when the kernel has
//!   resolved it (without, the programs hand the packet to `bpf_redirect_neigh`).
//! - Endpoints: pods on the bridge, from the bridge's neighbour entries (ARP and NDP) joined
//!   with its forwarding database. Only addresses in the bridge's networks count; IPv6
//!   link-local and multicast addresses never do. An endpoint stays while its port exists and
//!   nothing contradicts it: with the fast path the kernel no longer sees a pod's traffic, so
//!   its neighbour and FDB entries age out while the pod is alive.
//!
//! Without a node list (none read yet) only what does not depend on it is planned: ports,
//! node state and endpoints.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use hostgw_common::{
    Endpoint, ROUTE_F_RESOLVED, STATE_F_CT_GATE, STATE_F_FORWARD_V4, STATE_F_FORWARD_V6, State,
};
use ipnet::IpNet;

use super::desired::Desired;
use crate::model::{
    Family, Forwarding, Link, Nat, NeighState, Neighbour, Route, TrieRoute, is_link_local,
};

/// What the kernel and the maps have now, as one round observed it. Plain data.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub uplink: Link,
    pub bridge: Link,
    /// The bridge's current ports.
    pub ports: Vec<Link>,
    /// The uplink's addresses, both families.
    pub uplink_addrs: Vec<IpNet>,
    /// Our routes in the main table, both families.
    pub routes: Vec<Route>,
    /// Neighbour entries on the uplink, both families.
    pub neighbours: Vec<Neighbour>,
    /// The bridge's networks, both families: where pods live.
    pub bridge_nets: Vec<IpNet>,
    /// Neighbour entries on the bridge.
    pub bridge_neighbours: Vec<Neighbour>,
    /// The bridge's learned MAC → port.
    pub fdb: BTreeMap<[u8; 6], u32>,
    /// The forwarding sysctls of the bridge and the uplink.
    pub forwarding: Forwarding,
    /// Netfilter NAT, when it was looked at (`--conntrack-gate auto`); an error says why it
    /// could not be read.
    pub nat: Option<Result<Nat, String>>,
    /// The route tries, both families.
    pub trie: BTreeMap<IpNet, TrieRoute>,
    /// The endpoint tables, both families.
    pub endpoints: BTreeMap<IpAddr, Endpoint>,
    /// The `STATE` map's value.
    pub state: State,
    /// The egress hooks on bridge ports: port name → the ifindex the hook is on (0 for the pin
    /// of a port that went away while no agent ran).
    pub port_hooks: BTreeMap<String, u32>,
}

/// One change.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Attach the egress program to a bridge port, releasing a hook its name had on another
    /// interface.
    AttachPort {
        name: String,
        ifindex: u32,
    },
    /// Release the egress hook of a port that is gone, and its pin.
    DetachPort {
        name: String,
    },
    /// Write `to` into the sysctl `key` (relative to `/proc/sys`, with slashes), now `from`.
    WriteSysctl {
        key: String,
        from: String,
        to: &'static str,
    },
    /// Write the programs' node state.
    SetState {
        state: State,
    },
    ResolveNeighbour {
        ip: IpAddr,
        ifindex: u32,
    },
    ReplaceRoute {
        cidr: IpNet,
        via: IpAddr,
        oif: u32,
    },
    PutTrie {
        cidr: IpNet,
        route: TrieRoute,
    },
    PutEndpoint {
        ip: IpAddr,
        endpoint: Endpoint,
    },
    DeleteTrie {
        cidr: IpNet,
    },
    DeleteEndpoint {
        ip: IpAddr,
    },
    DeleteRoute {
        route: Route,
    },
    DeleteNeighbour {
        neighbour: Neighbour,
    },
}

/// The operations, in a safe order: ports, sysctls and node state first; then next hops and
/// routes before the trie entries that use them, trie entries removed before their routes.
pub fn plan(desired: Option<&Desired>, observed: &Observed, ct_gate: bool) -> Vec<Op> {
    let mut ops = ports(observed);
    if desired.is_some_and(|d| d.has_local(Family::V6)) {
        ops.extend(ipv6_forwarding(&observed.forwarding, &observed.uplink.name));
    }
    let state = node_state(observed, ct_gate);
    if state != observed.state {
        ops.push(Op::SetState { state });
    }
    match desired {
        Some(d) => ops.extend(network(d, observed)),
        None => ops.extend(endpoint_ops(observed)),
    }
    ops
}

/// Whether the conntrack gate must be on with `--conntrack-gate auto`: while the node has NAT
/// rules, and when they cannot be read (to be safe).
pub fn auto_gate(nat: Option<&Result<Nat, String>>) -> bool {
    match nat {
        Some(Ok(n)) => n.present(),
        Some(Err(_)) | None => true,
    }
}

/// The egress program on exactly the bridge's current ports.
fn ports(o: &Observed) -> Vec<Op> {
    let mut ops = Vec::new();
    for port in &o.ports {
        if o.port_hooks.get(&port.name) != Some(&port.index) {
            ops.push(Op::AttachPort {
                name: port.name.clone(),
                ifindex: port.index,
            });
        }
    }
    for name in o.port_hooks.keys() {
        if !o.ports.iter().any(|p| &p.name == name) {
            ops.push(Op::DetachPort { name: name.clone() });
        }
    }
    ops
}

/// The writes that switch IPv6 forwarding on: none while it is on (or unreadable);
/// otherwise `accept_ra` 1 → 2 on the uplink first, then `all.forwarding` → 1.
fn ipv6_forwarding(f: &Forwarding, uplink: &str) -> Vec<Op> {
    let Some(all) = f.v6_all.as_deref() else {
        return Vec::new();
    };
    if all == "1" {
        return Vec::new();
    }
    let mut ops = Vec::new();
    if f.uplink_accept_ra.as_deref() == Some("1") {
        ops.push(Op::WriteSysctl {
            key: format!("net/ipv6/conf/{uplink}/accept_ra"),
            from: "1".to_owned(),
            to: "2",
        });
    }
    ops.push(Op::WriteSysctl {
        key: "net/ipv6/conf/all/forwarding".to_owned(),
        from: all.to_owned(),
        to: "1",
    });
    ops
}

/// The value the `STATE` map should hold.
fn node_state(o: &Observed, ct_gate: bool) -> State {
    let mut flags = 0;
    if o.forwarding.v4() {
        flags |= STATE_F_FORWARD_V4;
    }
    if o.forwarding.v6() {
        flags |= STATE_F_FORWARD_V6;
    }
    if ct_gate {
        flags |= STATE_F_CT_GATE;
    }
    State {
        flags,
        bridge_mac: o.bridge.mac,
        uplink_mac: o.uplink.mac,
    }
}

/// The interface facts the route and trie plan needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Uplink {
    index: u32,
    mac: [u8; 6],
    mtu: u32,
}

/// Routes, next hops, trie entries and endpoints.
fn network(desired: &Desired, actual: &Observed) -> Vec<Op> {
    let uplink = Uplink {
        index: actual.uplink.index,
        mac: actual.uplink.mac,
        mtu: actual.uplink.mtu,
    };
    network_via(desired, actual, &uplink)
}

fn network_via(desired: &Desired, actual: &Observed, uplink: &Uplink) -> Vec<Op> {
    let mut ops = Vec::new();
    let by_ip: BTreeMap<IpAddr, &Neighbour> = actual.neighbours.iter().map(|n| (n.ip, n)).collect();
    let next_hops: BTreeSet<IpAddr> = desired.routes.values().map(|r| r.via).collect();

    for ip in &next_hops {
        let needs = match by_ip.get(ip) {
            None => true,
            Some(n) => n.state == NeighState::Unresolved && !n.managed,
        };
        if needs {
            ops.push(Op::ResolveNeighbour {
                ip: *ip,
                ifindex: uplink.index,
            });
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
                oif: uplink.index,
            });
        }
    }
    for (cidr, remote) in &desired.routes {
        let mac = by_ip
            .get(&remote.via)
            .filter(|n| n.state == NeighState::Valid)
            .and_then(|n| n.mac);
        let route = TrieRoute {
            node_ip: remote.via,
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
    put_endpoints(&endpoints, actual, &mut ops);

    for cidr in actual.trie.keys() {
        if !desired.routes.contains_key(cidr) {
            ops.push(Op::DeleteTrie { cidr: *cidr });
        }
    }
    delete_endpoints(&endpoints, actual, &mut ops);
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

/// The endpoint operations alone, for a round without a node list.
fn endpoint_ops(actual: &Observed) -> Vec<Op> {
    let endpoints = desired_endpoints(actual);
    let mut ops = Vec::new();
    put_endpoints(&endpoints, actual, &mut ops);
    delete_endpoints(&endpoints, actual, &mut ops);
    ops
}

fn put_endpoints(endpoints: &BTreeMap<IpAddr, Endpoint>, actual: &Observed, ops: &mut Vec<Op>) {
    for (ip, endpoint) in endpoints {
        if actual.endpoints.get(ip) != Some(endpoint) {
            ops.push(Op::PutEndpoint {
                ip: *ip,
                endpoint: *endpoint,
            });
        }
    }
}

fn delete_endpoints(endpoints: &BTreeMap<IpAddr, Endpoint>, actual: &Observed, ops: &mut Vec<Op>) {
    for ip in actual.endpoints.keys() {
        if !endpoints.contains_key(ip) {
            ops.push(Op::DeleteEndpoint { ip: *ip });
        }
    }
}

/// The endpoint table as it should be.
fn desired_endpoints(actual: &Observed) -> BTreeMap<IpAddr, Endpoint> {
    let is_pod = |ip: &IpAddr| {
        !ip.is_multicast()
            && !is_link_local(*ip)
            && actual
                .bridge_nets
                .iter()
                .any(|n| !is_link_local(n.addr()) && n.contains(ip))
    };
    let ports: BTreeSet<u32> = actual.ports.iter().map(|p| p.index).collect();
    let mut out = BTreeMap::new();
    let mut failed = BTreeSet::new();
    for n in &actual.bridge_neighbours {
        if !is_pod(&n.ip) {
            continue;
        }
        match (n.state, n.mac) {
            (NeighState::Valid, Some(mac)) => {
                if let Some(port) = actual.fdb.get(&mac).filter(|p| ports.contains(p)) {
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
        let still = ports.contains(&ep.ifindex) && is_pod(ip) && !failed.contains(ip);
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
}
