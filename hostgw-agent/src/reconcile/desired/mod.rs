//! The desired state: a pure function of the node list and the local interfaces.
//!
//! Each address family is judged on its own. This node's (`--node-name`) pod CIDRs are local;
//! for every other node and family, a pod CIDR of that family with an on-link `InternalIP` of
//! the same family is a remote route `podCIDR via nodeIP`. A node whose IPv6 side cannot be
//! honoured still gets its IPv4 route, and the other way round: the broken family is skipped
//! with a [`SkipReason`] and the family it concerns.
//!
//! A family is *in use* when some node has a valid pod CIDR of it (IPv4 when no node has any).
//! A node lacking a family in use is skipped for that family; a family nobody uses is never
//! reported, so an IPv4-only cluster has no IPv6 skips.
//!
//! IPv6 next hops: an `InternalIP` must lie in a subnet of one of the uplink's non-link-local
//! IPv6 addresses (global or unique local). A link-local (`fe80::/10`) `InternalIP` is skipped
//! as `not_on_link`: every interface has `fe80::/64`, so it says nothing about the L2 segment,
//! and a Kubernetes node address is meant to be reachable beyond one link. No I/O here.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use ipnet::IpNet;

use crate::{
    model::{Family, is_link_local},
    source::{Item, NodeInfo},
};

/// What this node knows about itself.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// `--node-name`.
    pub node_name: String,
    /// The addresses on the uplink, both families, with their prefix (what "on-link" is
    /// checked against; IPv6 link-local ones are not used for that).
    pub uplink_addrs: Vec<IpNet>,
    /// `--cluster-cidr`: where pod CIDRs may be, per family (none of a family: anywhere).
    pub cluster_cidrs: Vec<IpNet>,
    /// `--service-cidr`: where pod CIDRs must not be.
    pub service_cidrs: Vec<IpNet>,
}

/// A route to another node's pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub node: String,
    /// Of the same family as the pod CIDR.
    pub via: IpAddr,
}

/// Why a node (or one family of it) is not routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The list item is not a valid `Node` object.
    MalformedObject(String),
    /// Two or more items carry this name; none of them is used.
    DuplicateName,
    /// No pod CIDR of the family (none assigned yet, or a single-stack node).
    NoPodCidr,
    /// A pod CIDR that does not parse, or has host bits set.
    MalformedCidr(String),
    /// No `InternalIP` of the family.
    NoInternalIp,
    /// An `InternalIP` that does not parse.
    MalformedAddress(String),
    /// The address is not in any subnet of the uplink (host-gw needs one L2 segment), or is
    /// an IPv6 link-local address.
    NotOnLink(IpAddr),
    /// The address is one of this node's own.
    AddressIsOurs(IpAddr),
    /// A pod CIDR overlaps this node's or an earlier (by name) node's pod CIDR.
    Overlap { cidr: IpNet, with: String },
    /// A pod CIDR no node may have: a default route, or link-local, loopback, multicast or
    /// unspecified addresses (`what` says which).
    ReservedCidr { cidr: IpNet, what: &'static str },
    /// A pod CIDR overlapping the node network: a subnet of the uplink or an address of
    /// this node (`with`).
    NodeNetwork { cidr: IpNet, with: IpNet },
    /// A pod CIDR outside every `--cluster-cidr` of its family.
    OutsideClusterCidr(IpNet),
    /// A pod CIDR overlapping a `--service-cidr`.
    ServiceCidr { cidr: IpNet, service: IpNet },
}

impl SkipReason {
    /// A short stable name for counters and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MalformedObject(_) => "malformed_object",
            Self::DuplicateName => "duplicate_name",
            Self::NoPodCidr => "no_pod_cidr",
            Self::MalformedCidr(_) => "malformed_cidr",
            Self::NoInternalIp => "no_internal_ip",
            Self::MalformedAddress(_) => "malformed_address",
            Self::NotOnLink(_) => "not_on_link",
            Self::AddressIsOurs(_) => "address_is_ours",
            Self::Overlap { .. } => "overlap",
            Self::ReservedCidr { .. } => "reserved_cidr",
            Self::NodeNetwork { .. } => "node_network",
            Self::OutsideClusterCidr(_) => "outside_cluster_cidr",
            Self::ServiceCidr { .. } => "service_cidr",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedObject(e) => write!(f, "not a valid Node object: {e}"),
            Self::DuplicateName => f.write_str("more than one node has this name"),
            Self::NoPodCidr => {
                f.write_str("no pod CIDR of this family (spec.podCIDRs / spec.podCIDR)")
            }
            Self::MalformedCidr(c) => write!(f, "pod CIDR {c:?} is not a valid network"),
            Self::NoInternalIp => f.write_str("no InternalIP of this family in status.addresses"),
            Self::MalformedAddress(a) => write!(f, "InternalIP {a:?} is not an IP address"),
            Self::NotOnLink(IpAddr::V6(a)) if a.is_unicast_link_local() => write!(
                f,
                "InternalIP {a} is link-local: a node address must be global or unique local"
            ),
            Self::NotOnLink(a) => write!(
                f,
                "InternalIP {a} is not in a subnet of the uplink (host-gw needs all nodes on \
                 one L2 segment)"
            ),
            Self::AddressIsOurs(a) => write!(f, "InternalIP {a} is an address of this node"),
            Self::Overlap { cidr, with } => write!(f, "pod CIDR {cidr} overlaps node {with}'s"),
            Self::ReservedCidr { cidr, what } => write!(
                f,
                "pod CIDR {cidr} covers {what} addresses, which are never a pod network"
            ),
            Self::NodeNetwork { cidr, with } => write!(
                f,
                "pod CIDR {cidr} overlaps the node network ({with} on the uplink)"
            ),
            Self::OutsideClusterCidr(cidr) => write!(
                f,
                "pod CIDR {cidr} is outside every --cluster-cidr of its family"
            ),
            Self::ServiceCidr { cidr, service } => {
                write!(f, "pod CIDR {cidr} overlaps the service CIDR {service}")
            }
        }
    }
}

/// A node, or one family of it, that is not routed to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub node: String,
    /// The family skipped; `None` when the whole object is unusable (malformed, duplicate).
    pub family: Option<Family>,
    pub reason: SkipReason,
}

impl Skip {
    /// The family as a log field or metric label: `ipv4`, `ipv6`, or `any`.
    pub fn family_label(&self) -> &'static str {
        self.family.map_or("any", Family::label)
    }
}

/// The state the kernel and the maps should be in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// This node's pod CIDRs, both families (empty when the list does not have this node yet).
    pub local_cidrs: Vec<IpNet>,
    /// Remote pod CIDR → next hop, both families.
    pub routes: BTreeMap<IpNet, Remote>,
    /// Nodes, or families of nodes, not routed to.
    pub skipped: Vec<Skip>,
}

impl Desired {
    /// Whether this node has a pod CIDR of `family`.
    pub fn has_local(&self, family: Family) -> bool {
        self.local_cidrs
            .iter()
            .any(|c| Family::of_net(*c) == family)
    }

    /// The number of remote routes of `family`.
    pub fn routes_of(&self, family: Family) -> usize {
        self.routes
            .keys()
            .filter(|c| Family::of_net(**c) == family)
            .count()
    }
}

/// The desired state for `items` as seen from `local`.
pub fn desired(items: &[Item], local: &Local) -> Desired {
    let mut out = Desired::default();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for item in items {
        if let Item::Node(n) = item {
            *seen.entry(n.name.as_str()).or_default() += 1;
        }
    }
    // Valid nodes by name, so the winner of an overlap does not depend on the file's order.
    let mut nodes: Vec<&NodeInfo> = Vec::new();
    for item in items {
        match item {
            Item::Malformed { name, error } => out.skipped.push(Skip {
                node: name.clone(),
                family: None,
                reason: SkipReason::MalformedObject(error.clone()),
            }),
            Item::Node(n) if seen[n.name.as_str()] > 1 => out.skipped.push(Skip {
                node: n.name.clone(),
                family: None,
                reason: SkipReason::DuplicateName,
            }),
            Item::Node(n) => nodes.push(n),
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));

    let cidrs: Vec<[Result<Vec<IpNet>, SkipReason>; 2]> = nodes
        .iter()
        .map(|n| Family::ALL.map(|f| pod_cidrs(n, f, local)))
        .collect();
    let mut in_use: BTreeSet<Family> = Family::ALL
        .into_iter()
        .filter(|f| {
            cidrs
                .iter()
                .any(|c| c[*f as usize].as_ref().is_ok_and(|v| !v.is_empty()))
        })
        .collect();
    if in_use.is_empty() {
        in_use.insert(Family::V4);
    }
    // A family the node has no CIDR of: a skip when the family is in use, else nothing.
    let judged = |node: &NodeInfo, family: Family, c: &Result<Vec<IpNet>, SkipReason>| match c {
        Ok(v) if v.is_empty() && in_use.contains(&family) => Some(Err(Skip {
            node: node.name.clone(),
            family: Some(family),
            reason: SkipReason::NoPodCidr,
        })),
        Ok(v) if v.is_empty() => None,
        Ok(v) => Some(Ok(v.clone())),
        Err(reason) => Some(Err(Skip {
            node: node.name.clone(),
            family: Some(family),
            reason: reason.clone(),
        })),
    };

    // This node first: its CIDRs take precedence over everyone else's.
    let me = nodes.iter().position(|n| n.name == local.node_name);
    if let Some(i) = me {
        for family in Family::ALL {
            match judged(nodes[i], family, &cidrs[i][family as usize]) {
                Some(Ok(v)) => out.local_cidrs.extend(v),
                Some(Err(skip)) => out.skipped.push(skip),
                None => {}
            }
        }
    }
    let ours: BTreeSet<IpAddr> = local.uplink_addrs.iter().map(IpNet::addr).collect();
    let mut taken = Taken::default();
    for cidr in &out.local_cidrs {
        taken.insert(*cidr, &local.node_name);
    }

    for (i, node) in nodes.iter().enumerate() {
        if Some(i) == me {
            continue;
        }
        for family in Family::ALL {
            let cidrs = match judged(node, family, &cidrs[i][family as usize]) {
                None => continue,
                Some(Err(skip)) => {
                    out.skipped.push(skip);
                    continue;
                }
                Some(Ok(cidrs)) => cidrs,
            };
            let remote = next_hop(node, family, local, &ours).and_then(|via| {
                for cidr in &cidrs {
                    if let Some(with) = taken.overlapping(*cidr) {
                        return Err(SkipReason::Overlap {
                            cidr: *cidr,
                            with: with.to_owned(),
                        });
                    }
                }
                Ok(via)
            });
            match remote {
                Ok(via) => {
                    for cidr in cidrs {
                        taken.insert(cidr, &node.name);
                        out.routes.insert(
                            cidr,
                            Remote {
                                node: node.name.clone(),
                                via,
                            },
                        );
                    }
                }
                Err(reason) => out.skipped.push(Skip {
                    node: node.name.clone(),
                    family: Some(family),
                    reason,
                }),
            }
        }
    }
    out
}

/// A node's pod CIDRs of `family` (possibly none). A CIDR that does not parse counts for the
/// family it looks like, so a broken IPv6 CIDR leaves the IPv4 side intact. A CIDR that
/// parses must also be one a pod network can be ([`refused`]).
fn pod_cidrs(node: &NodeInfo, family: Family, local: &Local) -> Result<Vec<IpNet>, SkipReason> {
    let mut out = Vec::new();
    for text in node
        .pod_cidrs
        .iter()
        .filter(|t| Family::of_text(t) == family)
    {
        let net: IpNet = text
            .trim()
            .parse()
            .map_err(|_| SkipReason::MalformedCidr(text.clone()))?;
        if net.trunc() != net || Family::of_net(net) != family {
            return Err(SkipReason::MalformedCidr(text.clone()));
        }
        if let Some(reason) = refused(net, local) {
            return Err(reason);
        }
        out.push(net);
    }
    Ok(out)
}

/// Address ranges that are never a pod network, with what they are.
const RESERVED: [(&str, &str); 9] = [
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("::ffff:0:0/96", "IPv4-mapped"),
];

/// Why a Node's pod CIDR `cidr` must not be routed, whatever the Node says: it would take
/// traffic the node needs elsewhere (the default route, the metadata service's link-local
/// address, the node's own network, the Services), or lies outside the cluster's pod network.
fn refused(cidr: IpNet, local: &Local) -> Option<SkipReason> {
    let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
    if cidr.prefix_len() == 0 {
        return Some(SkipReason::ReservedCidr {
            cidr,
            what: "all (a default route)",
        });
    }
    for (range, what) in RESERVED {
        let range: IpNet = range.parse().expect("a valid range");
        if overlaps(&cidr, &range) {
            return Some(SkipReason::ReservedCidr { cidr, what });
        }
    }
    for addr in &local.uplink_addrs {
        // The uplink's subnet, and the address itself (a /32 or /128 has no subnet to speak
        // of); IPv6 link-local addresses are covered above.
        if overlaps(&cidr, &addr.trunc()) || cidr.contains(&addr.addr()) {
            return Some(SkipReason::NodeNetwork { cidr, with: *addr });
        }
    }
    if let Some(service) = local.service_cidrs.iter().find(|s| overlaps(&cidr, s)) {
        return Some(SkipReason::ServiceCidr {
            cidr,
            service: *service,
        });
    }
    let family = Family::of_net(cidr);
    let mut cluster = local
        .cluster_cidrs
        .iter()
        .filter(|c| Family::of_net(**c) == family)
        .peekable();
    if cluster.peek().is_some() && !cluster.any(|c| c.contains(&cidr)) {
        return Some(SkipReason::OutsideClusterCidr(cidr));
    }
    None
}

/// The node's first `InternalIP` of `family`, if it is a usable host-gw next hop.
fn next_hop(
    node: &NodeInfo,
    family: Family,
    local: &Local,
    ours: &BTreeSet<IpAddr>,
) -> Result<IpAddr, SkipReason> {
    let mut first = None;
    for text in node
        .internal_ips
        .iter()
        .filter(|t| Family::of_text(t) == family)
    {
        match text.trim().parse::<IpAddr>() {
            Ok(a) if Family::of(a) == family => {
                first.get_or_insert(a);
            }
            _ => return Err(SkipReason::MalformedAddress(text.clone())),
        }
    }
    let addr = first.ok_or(SkipReason::NoInternalIp)?;
    if ours.contains(&addr) {
        return Err(SkipReason::AddressIsOurs(addr));
    }
    let on_link = local
        .uplink_addrs
        .iter()
        .filter(|net| !is_link_local(net.addr()))
        .any(|net| net.contains(&addr));
    if is_link_local(addr) || !on_link {
        return Err(SkipReason::NotOnLink(addr));
    }
    Ok(addr)
}

/// The pod CIDRs given out so far, with their owners, kept disjoint and ordered by network
/// address: finding an overlap is two ordered lookups instead of a scan of every node (the
/// difference between milliseconds and a quarter of a second per round at 5,000 nodes).
#[derive(Debug, Default)]
struct Taken<'a> {
    /// Network address → (CIDR, owner, order of insertion).
    by_start: BTreeMap<IpAddr, (IpNet, &'a str, usize)>,
}

impl<'a> Taken<'a> {
    /// The owner of the earliest-given CIDR that overlaps `cidr`, if any.
    fn overlapping(&self, cidr: IpNet) -> Option<&'a str> {
        // The CIDRs are disjoint, so only the last one starting at or before `cidr` can
        // contain it; every one starting inside it is contained in it.
        let before = self
            .by_start
            .range(..=cidr.network())
            .next_back()
            .filter(|(_, (t, _, _))| t.contains(&cidr.network()));
        let inside = self.by_start.range(cidr.network()..=cidr.broadcast());
        before
            .into_iter()
            .chain(inside)
            .min_by_key(|(_, (_, _, order))| *order)
            .map(|(_, (_, owner, _))| *owner)
    }

    /// Gives out `cidr` to `owner`; a CIDR overlapping one already given out (a node listing
    /// overlapping CIDRs of its own) is not recorded twice.
    fn insert(&mut self, cidr: IpNet, owner: &'a str) {
        if self.overlapping(cidr).is_none() {
            let order = self.by_start.len();
            self.by_start.insert(cidr.network(), (cidr, owner, order));
        }
    }
}

#[cfg(test)]
mod tests;
