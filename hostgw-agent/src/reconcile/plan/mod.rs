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
//!   (forwarding per family, from the sysctls as read; policy routing rules or xfrm policies
//!   that send routed traffic to the stack), whether the conntrack gate is on, the bridge's
//!   and the uplink's MACs, conntrack's timeouts (for the gate to keep fast-pathed flows'
//!   entries as conntrack would), and the smallest MTU of another route in the main table
//!   (the FIB fallback sends larger packets to the stack, which honours route MTUs).
//! - Routes: one `podCIDR via nodeIP dev uplink proto 203` per remote CIDR; any other route
//!   of ours is deleted. A remote CIDR the main table already has a route of someone else's
//!   for ([`conflicts`]) is left to that route: not replaced, ours for it deleted, not in the
//!   trie.
//! - Next hops: a neighbour entry for every node address, created (managed, tagged as ours)
//!   when missing or failed; ours for addresses no longer used are deleted.
//! - Route trie: one entry per remote CIDR with the next hop's MAC when the kernel has
//!   resolved it (without, the programs hand the packet to `bpf_redirect_neigh`), flagged to
//!   ask the FIB where the kernel has other routes inside the CIDR or for it.
//! - Endpoints: pods on the bridge's veth ports (other ports, a tap or a physical interface,
//!   are left to the bridge), from the bridge's neighbour entries (ARP and NDP) joined with its
//!   forwarding database. Only addresses in the bridge's networks count; IPv6
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
    Endpoint, HOOK_F_PORT_EGRESS, HOOK_F_SHARED_INGRESS, ROUTE_F_FIB, ROUTE_F_RESOLVED,
    STATE_F_CT_GATE, STATE_F_FORWARD_V4, STATE_F_FORWARD_V6, STATE_F_POLICY, STATE_F_XFRM, State,
};
use ipnet::IpNet;

use super::desired::Desired;
use crate::model::{
    ConntrackTimeouts, Family, Forwarding, Link, NeighState, Neighbour, Netfilter, Route, TcUsers,
    TrieRoute, is_link_local,
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
    /// Conntrack's timeouts and the kernel's tick rate.
    pub ct_timeouts: ConntrackTimeouts,
    /// What of netfilter acts on forwarded traffic, when it was looked at
    /// (`--conntrack-gate auto`); an error says why it
    /// could not be read.
    pub netfilter: Option<Result<Netfilter, String>>,
    /// The route tries, both families.
    pub trie: BTreeMap<IpNet, TrieRoute>,
    /// The endpoint tables, both families.
    pub endpoints: BTreeMap<IpAddr, Endpoint>,
    /// The `STATE` map's value.
    pub state: State,
    /// The egress hooks on bridge ports: port name → the ifindex the hook is on (0 for the pin
    /// of a port that went away while no agent ran).
    pub port_hooks: BTreeMap<String, u32>,
    /// Other tc users of the uplink, the bridge and the ports, by ifindex (only interfaces
    /// that have some).
    pub tc_users: BTreeMap<u32, TcUsers>,
    /// The `HOOKS` map's entries.
    pub hooks: BTreeMap<u32, u32>,
    /// The main table's routes that are not ours, both families.
    pub other_routes: Vec<Route>,
    /// Policy routing rules beyond the kernel's defaults, described.
    pub extra_rules: Vec<String>,
    /// The number of xfrm (`IPsec`) policies.
    pub xfrm_policies: usize,
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
    /// Set an interface's `HOOK_F_*` flags: the other tc users it has, which `users` names.
    SetHook {
        ifindex: u32,
        flags: u32,
        users: TcUsers,
    },
    /// Clear an interface's flags: it has no other tc users (any more), or is gone.
    DeleteHook {
        ifindex: u32,
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
    ops.extend(hooks(observed));
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

/// Whether the conntrack gate must be on with `--conntrack-gate auto`: while netfilter acts on
/// forwarded traffic (NAT, or chains on the forward path), and when that cannot be read (to be
/// safe).
pub fn auto_gate(netfilter: Option<&Result<Netfilter, String>>) -> bool {
    match netfilter {
        Some(Ok(n)) => n.acts(),
        Some(Err(_)) | None => true,
    }
}

/// The `HOOKS` flags of the hooked interfaces from their other tc users: any on the ingress
/// shares the hook; a port's own egress makes deliveries to its pod go through it.
fn hooks(o: &Observed) -> Vec<Op> {
    let mut want = BTreeMap::new();
    for link in [&o.uplink, &o.bridge].into_iter().chain(&o.ports) {
        let Some(users) = o.tc_users.get(&link.index) else {
            continue;
        };
        let mut flags = 0;
        if !users.ingress.is_empty() {
            flags |= HOOK_F_SHARED_INGRESS;
        }
        if !users.egress.is_empty() && o.ports.iter().any(|p| p.index == link.index) {
            flags |= HOOK_F_PORT_EGRESS;
        }
        if flags != 0 {
            want.insert(link.index, (flags, users));
        }
    }
    let mut ops: Vec<Op> = o
        .hooks
        .keys()
        .filter(|i| !want.contains_key(i))
        .map(|&ifindex| Op::DeleteHook { ifindex })
        .collect();
    for (ifindex, (flags, users)) in want {
        if o.hooks.get(&ifindex) != Some(&flags) {
            ops.push(Op::SetHook {
                ifindex,
                flags,
                users: users.clone(),
            });
        }
    }
    ops
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
    if !o.extra_rules.is_empty() {
        flags |= STATE_F_POLICY;
    }
    if o.xfrm_policies > 0 {
        flags |= STATE_F_XFRM;
    }
    State {
        flags,
        bridge_mac: o.bridge.mac,
        uplink_mac: o.uplink.mac,
        ct: o.ct_timeouts.for_programs(),
        fib_mtu: o
            .other_routes
            .iter()
            .filter_map(|r| r.mtu)
            .min()
            .unwrap_or(0),
        pad: 0,
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

/// Whether the kernel would route some address of `cidr` otherwise than by our route: it has
/// a more specific route inside it, or another route for it that wins over ours (metric 0).
fn defers_to_fib(cidr: &IpNet, others: &[Route]) -> bool {
    others.iter().any(|r| {
        cidr.contains(&r.cidr)
            && (r.cidr.prefix_len() > cidr.prefix_len() || r.metric.unwrap_or(0) == 0)
    })
}

/// The remote pod CIDRs the main table has a route for that is not hostgw's (exactly that
/// prefix: an admin's `proto static`, another CNI's): hostgw leaves them to it, neither
/// replacing nor deleting it, and keeps them out of the trie until it is gone.
pub fn conflicts(desired: &Desired, actual: &Observed) -> BTreeMap<IpNet, Route> {
    desired
        .routes
        .keys()
        .filter_map(|cidr| {
            actual
                .other_routes
                .iter()
                .find(|r| r.cidr == *cidr)
                .map(|r| (*cidr, r.clone()))
        })
        .collect()
}

fn network_via(desired: &Desired, actual: &Observed, uplink: &Uplink) -> Vec<Op> {
    let mut ops = Vec::new();
    let foreign = conflicts(desired, actual);
    let routed = |cidr: &IpNet| desired.routes.contains_key(cidr) && !foreign.contains_key(cidr);
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
    for (cidr, remote) in desired.routes.iter().filter(|(c, _)| routed(c)) {
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
    for (cidr, remote) in desired.routes.iter().filter(|(c, _)| routed(c)) {
        let mac = by_ip
            .get(&remote.via)
            .filter(|n| n.state == NeighState::Valid)
            .and_then(|n| n.mac);
        let mut flags = if mac.is_some() { ROUTE_F_RESOLVED } else { 0 };
        if defers_to_fib(cidr, &actual.other_routes) {
            flags |= ROUTE_F_FIB;
        }
        // An MTU set on our route (`ip route change … mtu 1400`) is honoured as the kernel does.
        let mtu = actual
            .routes
            .iter()
            .find(|r| r.cidr == *cidr && r.via == Some(remote.via))
            .and_then(|r| r.mtu)
            .map_or(uplink.mtu, |m| m.min(uplink.mtu));
        let route = TrieRoute {
            node_ip: remote.via,
            ifindex: uplink.index,
            mtu,
            flags,
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
        if !routed(cidr) {
            ops.push(Op::DeleteTrie { cidr: *cidr });
        }
    }
    delete_endpoints(&endpoints, actual, &mut ops);
    // Our routes that are not wanted, including extra copies of a wanted one.
    let mut matched = BTreeSet::new();
    for r in &actual.routes {
        let wanted = routed(&r.cidr)
            && desired
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
    // Only veth ports: `bpf_redirect_peer` delivers into a veth's peer and drops anything
    // else (a tap, a physical port), which the bridge delivers.
    let ports: BTreeSet<u32> = actual
        .ports
        .iter()
        .filter(|p| p.is_veth)
        .map(|p| p.index)
        .collect();
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
mod tests;
