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
        .map(|n| Family::ALL.map(|f| pod_cidrs(n, f)))
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
/// family it looks like, so a broken IPv6 CIDR leaves the IPv4 side intact.
fn pod_cidrs(node: &NodeInfo, family: Family) -> Result<Vec<IpNet>, SkipReason> {
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
        out.push(net);
    }
    Ok(out)
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
mod tests {
    use super::*;

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Item {
        Item::Node(NodeInfo {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(|s| (*s).to_owned()).collect(),
            internal_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    fn local() -> Local {
        Local {
            node_name: "me".into(),
            uplink_addrs: vec!["172.20.11.43/24".parse().unwrap()],
        }
    }

    /// An uplink with both families: IPv4, a ULA /64 and the usual link-local /64.
    fn local_dual() -> Local {
        Local {
            node_name: "me".into(),
            uplink_addrs: ["172.20.11.43/24", "fd00:20::43/64", "fe80::43/64"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
        }
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn route(node: &str, via: &str) -> Remote {
        Remote {
            node: node.into(),
            via: via.parse().unwrap(),
        }
    }

    fn reasons(d: &Desired) -> Vec<(String, &'static str)> {
        d.skipped
            .iter()
            .map(|s| (s.node.clone(), s.reason.kind()))
            .collect()
    }

    fn family_reasons(d: &Desired) -> Vec<(String, Option<Family>, &'static str)> {
        let mut v: Vec<_> = d
            .skipped
            .iter()
            .map(|s| (s.node.clone(), s.family, s.reason.kind()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn own_cidr_is_local_others_are_routes() {
        let d = desired(
            &[
                node("me", &["10.1.79.0/24"], &["172.20.11.43"]),
                node("b", &["10.1.27.0/24"], &["172.20.11.42"]),
                node("c", &["10.1.28.0/24"], &["fd00::1", "172.20.11.44"]),
            ],
            &local(),
        );
        assert_eq!(d.local_cidrs, vec![net("10.1.79.0/24")]);
        assert_eq!(
            d.routes,
            BTreeMap::from([
                (net("10.1.27.0/24"), route("b", "172.20.11.42")),
                (net("10.1.28.0/24"), route("c", "172.20.11.44")),
            ])
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
        assert!(d.has_local(Family::V4) && !d.has_local(Family::V6));
    }

    #[test]
    fn pod_cidrs_fall_back_to_every_listed_network() {
        let d = desired(
            &[node(
                "b",
                &["10.1.27.0/24", "10.2.27.0/24"],
                &["172.20.11.42"],
            )],
            &local(),
        );
        assert_eq!(d.routes.len(), 2);
        assert!(d.local_cidrs.is_empty(), "this node is not in the list");
    }

    #[test]
    fn each_bad_node_is_skipped_with_its_reason() {
        let d = desired(
            &[
                node("me", &["10.1.79.0/24"], &["172.20.11.43"]),
                node("nocidr", &[], &["172.20.11.50"]),
                node("badcidr", &["10.1.300.0/24"], &["172.20.11.52"]),
                node("hostbits", &["10.1.53.7/24"], &["172.20.11.53"]),
                node("noip", &["10.1.54.0/24"], &[]),
                node("badip", &["10.1.55.0/24"], &["172.20.11.x"]),
                node("offlink", &["10.1.56.0/24"], &["192.168.7.1"]),
                node("mine", &["10.1.57.0/24"], &["172.20.11.43"]),
                node("overlapsme", &["10.1.0.0/16"], &["172.20.11.58"]),
                node("good", &["10.1.27.0/24"], &["172.20.11.42"]),
                node("overlapsgood", &["10.1.27.128/25"], &["172.20.11.59"]),
                node("dup", &["10.1.60.0/24"], &["172.20.11.60"]),
                node("dup", &["10.1.61.0/24"], &["172.20.11.61"]),
                Item::Malformed {
                    name: "broken".into(),
                    error: "`spec.podCIDRs`: invalid type".into(),
                },
            ],
            &local(),
        );
        assert_eq!(
            d.routes,
            BTreeMap::from([(net("10.1.27.0/24"), route("good", "172.20.11.42"))])
        );
        let v4 = Some(Family::V4);
        let mut want: Vec<(String, Option<Family>, &str)> = [
            ("nocidr", v4, "no_pod_cidr"),
            ("badcidr", v4, "malformed_cidr"),
            ("hostbits", v4, "malformed_cidr"),
            ("noip", v4, "no_internal_ip"),
            ("badip", v4, "malformed_address"),
            ("offlink", v4, "not_on_link"),
            ("mine", v4, "address_is_ours"),
            ("overlapsme", v4, "overlap"),
            ("overlapsgood", v4, "overlap"),
            ("dup", None, "duplicate_name"),
            ("dup", None, "duplicate_name"),
            ("broken", None, "malformed_object"),
        ]
        .iter()
        .map(|(n, f, r)| ((*n).to_owned(), *f, *r))
        .collect();
        want.sort();
        assert_eq!(
            family_reasons(&d),
            want,
            "an IPv4-only cluster has no IPv6 skips"
        );
        let overlap = d.skipped.iter().find(|s| s.node == "overlapsgood").unwrap();
        assert_eq!(
            overlap.reason.to_string(),
            "pod CIDR 10.1.27.128/25 overlaps node good's"
        );
    }

    #[test]
    fn taken_finds_every_kind_of_overlap() {
        let mut t = Taken::default();
        t.insert(net("10.1.27.0/24"), "a");
        t.insert(net("10.1.29.0/24"), "b");
        t.insert(net("fd00:10:27::/64"), "c");
        // Contained in one, containing one or several (the earliest given wins), equal.
        assert_eq!(t.overlapping(net("10.1.27.128/25")), Some("a"));
        assert_eq!(t.overlapping(net("10.1.24.0/22")), Some("a"));
        assert_eq!(t.overlapping(net("10.1.28.0/22")), Some("b"));
        assert_eq!(t.overlapping(net("10.1.29.0/24")), Some("b"));
        assert_eq!(t.overlapping(net("10.0.0.0/8")), Some("a"));
        assert_eq!(t.overlapping(net("fd00:10:27::/48")), Some("c"));
        assert_eq!(t.overlapping(net("fd00:10:27:0:8000::/65")), Some("c"));
        // Neighbours and the other family do not overlap.
        assert_eq!(t.overlapping(net("10.1.28.0/24")), None);
        assert_eq!(t.overlapping(net("10.1.26.0/24")), None);
        assert_eq!(t.overlapping(net("10.1.30.0/23")), None);
        assert_eq!(t.overlapping(net("fd00:10:28::/64")), None);
        assert_eq!(t.overlapping(net("::/0")), Some("c"));
        // A CIDR overlapping one already given out is not recorded again.
        t.insert(net("10.1.0.0/16"), "d");
        assert_eq!(t.overlapping(net("10.1.200.0/24")), None);
    }

    #[test]
    fn overlap_winner_does_not_depend_on_file_order() {
        let a = node(
            "a",
            &["10.1.27.0/24", "fd00:10:27::/64"],
            &["172.20.11.42", "fd00:20::42"],
        );
        let b = node(
            "b",
            &["10.1.27.0/25", "fd00:10:27::/80"],
            &["172.20.11.44", "fd00:20::44"],
        );
        let d1 = desired(&[a.clone(), b.clone()], &local_dual());
        let d2 = desired(&[b, a], &local_dual());
        assert_eq!(d1, d2);
        assert_eq!(d1.routes.len(), 2);
        assert!(d1.routes.values().all(|r| r.node == "a"), "{:?}", d1.routes);
        assert_eq!(
            family_reasons(&d1),
            vec![
                ("b".to_owned(), Some(Family::V4), "overlap"),
                ("b".to_owned(), Some(Family::V6), "overlap"),
            ]
        );
    }

    #[test]
    fn without_uplink_addresses_nothing_is_on_link() {
        let l = Local {
            node_name: "me".into(),
            uplink_addrs: vec![],
        };
        let d = desired(&[node("b", &["10.1.27.0/24"], &["172.20.11.42"])], &l);
        assert!(d.routes.is_empty());
        assert_eq!(reasons(&d), vec![("b".to_owned(), "not_on_link")]);
    }

    #[test]
    fn dual_stack_nodes_get_a_route_per_family() {
        let d = desired(
            &[
                node(
                    "me",
                    &["10.1.79.0/24", "fd00:10:79::/64"],
                    &["172.20.11.43", "fd00:20::43"],
                ),
                node(
                    "b",
                    &["fd00:10:27::/64", "10.1.27.0/24"],
                    &["fd00:20::42", "172.20.11.42"],
                ),
            ],
            &local_dual(),
        );
        assert_eq!(
            d.local_cidrs,
            vec![net("10.1.79.0/24"), net("fd00:10:79::/64")]
        );
        assert!(d.has_local(Family::V6));
        assert_eq!(
            d.routes,
            BTreeMap::from([
                (net("10.1.27.0/24"), route("b", "172.20.11.42")),
                (net("fd00:10:27::/64"), route("b", "fd00:20::42")),
            ])
        );
        assert_eq!((d.routes_of(Family::V4), d.routes_of(Family::V6)), (1, 1));
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    }

    #[test]
    fn a_family_a_node_lacks_is_skipped_for_that_node_only() {
        let d = desired(
            &[
                node(
                    "me",
                    &["10.1.79.0/24", "fd00:10:79::/64"],
                    &["172.20.11.43"],
                ),
                // IPv4 only in a dual-stack cluster.
                node("v4only", &["10.1.27.0/24"], &["172.20.11.42"]),
                // IPv6 only.
                node("v6only", &["fd00:10:28::/64"], &["fd00:20::44"]),
                // Both CIDRs, but only an IPv4 address.
                node(
                    "noip6",
                    &["10.1.29.0/24", "fd00:10:29::/64"],
                    &["172.20.11.45"],
                ),
            ],
            &local_dual(),
        );
        assert_eq!(
            d.routes,
            BTreeMap::from([
                (net("10.1.27.0/24"), route("v4only", "172.20.11.42")),
                (net("10.1.29.0/24"), route("noip6", "172.20.11.45")),
                (net("fd00:10:28::/64"), route("v6only", "fd00:20::44")),
            ])
        );
        let (v4, v6) = (Some(Family::V4), Some(Family::V6));
        assert_eq!(
            family_reasons(&d),
            vec![
                ("noip6".to_owned(), v6, "no_internal_ip"),
                ("v4only".to_owned(), v6, "no_pod_cidr"),
                ("v6only".to_owned(), v4, "no_pod_cidr"),
            ]
        );
        let s = d.skipped.iter().find(|s| s.node == "v4only").unwrap();
        assert_eq!(s.family_label(), "ipv6");
    }

    #[test]
    fn a_v6_only_cluster_reports_nothing_about_ipv4() {
        let d = desired(
            &[
                node("me", &["fd00:10:79::/64"], &["fd00:20::43"]),
                node("b", &["fd00:10:27::/64"], &["fd00:20::42"]),
            ],
            &local_dual(),
        );
        assert_eq!(d.local_cidrs, vec![net("fd00:10:79::/64")]);
        assert_eq!(
            d.routes,
            BTreeMap::from([(net("fd00:10:27::/64"), route("b", "fd00:20::42"))])
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    }

    #[test]
    fn a_broken_ipv6_side_leaves_ipv4_working_and_the_other_way_round() {
        let d = desired(
            &[
                node("me", &["10.1.79.0/24", "fd00:10:79::/64"], &[]),
                node(
                    "badcidr6",
                    &["10.1.27.0/24", "fd00:10:zz::/64"],
                    &["172.20.11.42", "fd00:20::42"],
                ),
                node(
                    "hostbits6",
                    &["10.1.28.0/24", "fd00:10:28::1/64"],
                    &["172.20.11.44", "fd00:20::44"],
                ),
                node(
                    "badip6",
                    &["10.1.29.0/24", "fd00:10:29::/64"],
                    &["172.20.11.45", "fd00:20::zz"],
                ),
                node(
                    "offlink6",
                    &["10.1.30.0/24", "fd00:10:30::/64"],
                    &["172.20.11.46", "fd00:99::46"],
                ),
                node(
                    "linklocal6",
                    &["10.1.31.0/24", "fd00:10:31::/64"],
                    &["172.20.11.47", "fe80::47"],
                ),
                node(
                    "mine6",
                    &["10.1.32.0/24", "fd00:10:32::/64"],
                    &["172.20.11.48", "fd00:20::43"],
                ),
                node(
                    "overlap6",
                    &["10.1.33.0/24", "fd00:10:79::/48"],
                    &["172.20.11.49", "fd00:20::49"],
                ),
                node(
                    "badcidr4",
                    &["10.1.300.0/24", "fd00:10:34::/64"],
                    &["172.20.11.50", "fd00:20::50"],
                ),
                node(
                    "offlink4",
                    &["10.1.35.0/24", "fd00:10:35::/64"],
                    &["10.99.0.1", "fd00:20::51"],
                ),
            ],
            &local_dual(),
        );
        let v4_routes: BTreeSet<String> = d
            .routes
            .iter()
            .filter(|(c, _)| Family::of_net(**c) == Family::V4)
            .map(|(_, r)| r.node.clone())
            .collect();
        let v6_routes: BTreeSet<String> = d
            .routes
            .iter()
            .filter(|(c, _)| Family::of_net(**c) == Family::V6)
            .map(|(_, r)| r.node.clone())
            .collect();
        assert_eq!(
            v4_routes,
            [
                "badcidr6",
                "hostbits6",
                "badip6",
                "offlink6",
                "linklocal6",
                "mine6",
                "overlap6"
            ]
            .map(String::from)
            .into()
        );
        assert_eq!(v6_routes, ["badcidr4", "offlink4"].map(String::from).into());
        let (v4, v6) = (Some(Family::V4), Some(Family::V6));
        assert_eq!(
            family_reasons(&d),
            vec![
                ("badcidr4".to_owned(), v4, "malformed_cidr"),
                ("badcidr6".to_owned(), v6, "malformed_cidr"),
                ("badip6".to_owned(), v6, "malformed_address"),
                ("hostbits6".to_owned(), v6, "malformed_cidr"),
                ("linklocal6".to_owned(), v6, "not_on_link"),
                ("mine6".to_owned(), v6, "address_is_ours"),
                ("offlink4".to_owned(), v4, "not_on_link"),
                ("offlink6".to_owned(), v6, "not_on_link"),
                ("overlap6".to_owned(), v6, "overlap"),
            ]
        );
        let ll = d.skipped.iter().find(|s| s.node == "linklocal6").unwrap();
        assert!(
            ll.reason.to_string().contains("link-local"),
            "{}",
            ll.reason
        );
    }

    #[test]
    fn the_uplinks_link_local_subnet_does_not_make_a_node_on_link() {
        // Only link-local IPv6 on the uplink: no IPv6 next hop is on-link.
        let l = Local {
            node_name: "me".into(),
            uplink_addrs: vec![net("172.20.11.43/24"), net("fe80::43/64")],
        };
        let d = desired(
            &[node(
                "b",
                &["10.1.27.0/24", "fd00:10:27::/64"],
                &["172.20.11.42", "fe80::42"],
            )],
            &l,
        );
        assert_eq!(d.routes.len(), 1);
        assert_eq!(
            family_reasons(&d),
            vec![("b".to_owned(), Some(Family::V6), "not_on_link")]
        );
    }

    #[test]
    fn this_node_lacking_a_family_in_use_is_reported() {
        let d = desired(
            &[
                node("me", &["10.1.79.0/24"], &["172.20.11.43"]),
                node(
                    "b",
                    &["10.1.27.0/24", "fd00:10:27::/64"],
                    &["172.20.11.42", "fd00:20::42"],
                ),
            ],
            &local_dual(),
        );
        assert_eq!(
            d.routes.len(),
            2,
            "remote routes do not depend on our CIDRs"
        );
        assert_eq!(
            family_reasons(&d),
            vec![("me".to_owned(), Some(Family::V6), "no_pod_cidr")]
        );
    }

    #[test]
    fn a_cluster_without_any_pod_cidr_reports_ipv4() {
        let d = desired(&[node("b", &[], &["172.20.11.42"])], &local());
        assert_eq!(
            family_reasons(&d),
            vec![("b".to_owned(), Some(Family::V4), "no_pod_cidr")]
        );
    }

    #[test]
    fn family_of_text_follows_the_colon() {
        assert_eq!(Family::of_text("fd00::zz"), Family::V6);
        assert_eq!(Family::of_text("10.1.300.0/24"), Family::V4);
        assert_eq!(Family::of_text("garbage"), Family::V4);
    }

    #[test]
    fn a_public_ipv6_annotation_is_the_ipv6_next_hop() {
        let text = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Node
  metadata:
    name: b
    annotations:
      flannel.alpha.coreos.com/public-ip: 172.20.11.99
      flannel.alpha.coreos.com/public-ipv6: 'fd00:20::99'
  spec: {podCIDRs: [10.1.27.0/24, 'fd00:10:27::/64']}
  status:
    addresses:
    - {type: InternalIP, address: 172.20.11.42}
    - {type: InternalIP, address: 'fd00:99::42'}
";
        let items = crate::source::nodes::parse(
            std::path::Path::new("nodes.yaml"),
            text,
            crate::source::nodes::DEFAULT_ANNOTATION_PREFIX,
        )
        .expect("parses");
        let d = desired(&items, &local_dual());
        // The off-link InternalIPs are replaced, per family, by the annotated addresses.
        assert_eq!(
            d.routes,
            BTreeMap::from([
                (net("10.1.27.0/24"), route("b", "172.20.11.99")),
                (net("fd00:10:27::/64"), route("b", "fd00:20::99")),
            ])
        );
        assert!(d.skipped.is_empty(), "{:?}", d.skipped);
    }
}
