//! The desired state: a pure function of the node list and the local interfaces.
//!
//! This node's (`--node-name`) IPv4 pod CIDRs are local; every other node with an IPv4 pod
//! CIDR and an on-link IPv4 `InternalIP` is a remote route `podCIDR via nodeIP`. A node that
//! cannot be honoured is skipped with a [`SkipReason`], and every other node keeps working.
//! No I/O here.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use ipnet::{IpNet, Ipv4Net};

use crate::nodes::{Item, NodeInfo};

/// What this node knows about itself.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// `--node-name`.
    pub node_name: String,
    /// The IPv4 addresses on the uplink, with their prefix (what "on-link" is checked against).
    pub uplink_addrs: Vec<Ipv4Net>,
}

/// A route to another node's pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub node: String,
    pub via: Ipv4Addr,
}

/// Why a node is not routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The list item is not a valid `Node` object.
    MalformedObject(String),
    /// Two or more items carry this name; none of them is used.
    DuplicateName,
    /// No IPv4 pod CIDR (none assigned yet, or IPv6 only).
    NoPodCidr,
    /// A pod CIDR that does not parse, or has host bits set.
    MalformedCidr(String),
    /// No IPv4 `InternalIP` address.
    NoInternalIp,
    /// An `InternalIP` that does not parse.
    MalformedAddress(String),
    /// The address is not in any subnet of the uplink: host-gw needs one L2 segment.
    NotOnLink(Ipv4Addr),
    /// The address is one of this node's own.
    AddressIsOurs(Ipv4Addr),
    /// A pod CIDR overlaps this node's or an earlier (by name) node's pod CIDR.
    Overlap { cidr: Ipv4Net, with: String },
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
            Self::NoPodCidr => f.write_str("no IPv4 pod CIDR (spec.podCIDRs / spec.podCIDR)"),
            Self::MalformedCidr(c) => write!(f, "pod CIDR {c:?} is not a valid network"),
            Self::NoInternalIp => f.write_str("no IPv4 InternalIP in status.addresses"),
            Self::MalformedAddress(a) => write!(f, "InternalIP {a:?} is not an IP address"),
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

/// A node that is not routed to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub node: String,
    pub reason: SkipReason,
}

/// The state the kernel and the maps should be in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// This node's pod CIDRs (empty when the list does not have this node yet).
    pub local_cidrs: Vec<Ipv4Net>,
    /// Remote pod CIDR → next hop.
    pub routes: BTreeMap<Ipv4Net, Remote>,
    /// Nodes not routed to.
    pub skipped: Vec<Skip>,
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
                reason: SkipReason::MalformedObject(error.clone()),
            }),
            Item::Node(n) if seen[n.name.as_str()] > 1 => out.skipped.push(Skip {
                node: n.name.clone(),
                reason: SkipReason::DuplicateName,
            }),
            Item::Node(n) => nodes.push(n),
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));

    // This node first: its CIDRs take precedence over everyone else's.
    if let Some(me) = nodes.iter().find(|n| n.name == local.node_name) {
        match pod_cidrs(me) {
            Ok(cidrs) => out.local_cidrs = cidrs,
            Err(reason) => out.skipped.push(Skip {
                node: me.name.clone(),
                reason,
            }),
        }
    }
    let ours: BTreeSet<Ipv4Addr> = local.uplink_addrs.iter().map(Ipv4Net::addr).collect();
    let mut taken: Vec<(Ipv4Net, String)> = out
        .local_cidrs
        .iter()
        .map(|c| (*c, local.node_name.clone()))
        .collect();

    for node in nodes.iter().filter(|n| n.name != local.node_name) {
        let remote = pod_cidrs(node).and_then(|cidrs| {
            let via = next_hop(node, local, &ours)?;
            for cidr in &cidrs {
                if let Some((_, with)) = taken.iter().find(|(t, _)| overlaps(*t, *cidr)) {
                    return Err(SkipReason::Overlap {
                        cidr: *cidr,
                        with: with.clone(),
                    });
                }
            }
            Ok((cidrs, via))
        });
        match remote {
            Ok((cidrs, via)) => {
                for cidr in cidrs {
                    taken.push((cidr, node.name.clone()));
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
                reason,
            }),
        }
    }
    out
}

/// A node's IPv4 pod CIDRs; IPv6 ones are left for the IPv6 path.
fn pod_cidrs(node: &NodeInfo) -> Result<Vec<Ipv4Net>, SkipReason> {
    let mut v4 = Vec::new();
    for text in &node.pod_cidrs {
        let net: IpNet = text
            .parse()
            .map_err(|_| SkipReason::MalformedCidr(text.clone()))?;
        if net.trunc() != net {
            return Err(SkipReason::MalformedCidr(text.clone()));
        }
        if let IpNet::V4(n) = net {
            v4.push(n);
        }
    }
    if v4.is_empty() {
        return Err(SkipReason::NoPodCidr);
    }
    Ok(v4)
}

/// The node's first IPv4 `InternalIP`, if it is a usable host-gw next hop.
fn next_hop(
    node: &NodeInfo,
    local: &Local,
    ours: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, SkipReason> {
    let mut v4 = None;
    for text in &node.internal_ips {
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => {
                v4.get_or_insert(a);
            }
            Ok(IpAddr::V6(_)) => {}
            Err(_) => return Err(SkipReason::MalformedAddress(text.clone())),
        }
    }
    let addr = v4.ok_or(SkipReason::NoInternalIp)?;
    if ours.contains(&addr) {
        return Err(SkipReason::AddressIsOurs(addr));
    }
    if !local.uplink_addrs.iter().any(|net| net.contains(&addr)) {
        return Err(SkipReason::NotOnLink(addr));
    }
    Ok(addr)
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
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

    fn net(s: &str) -> Ipv4Net {
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

    #[test]
    fn own_cidr_is_local_others_are_routes() {
        let d = desired(
            &[
                node("me", &["10.1.79.0/24"], &["172.20.11.43"]),
                node("b", &["10.1.27.0/24"], &["172.20.11.42"]),
                node(
                    "c",
                    &["10.1.28.0/24", "fd00::/64"],
                    &["fd00::1", "172.20.11.44"],
                ),
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
                node("v6only", &["fd00:1::/64"], &["172.20.11.51"]),
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
        let mut got = reasons(&d);
        got.sort();
        let mut want: Vec<(String, &str)> = [
            ("nocidr", "no_pod_cidr"),
            ("v6only", "no_pod_cidr"),
            ("badcidr", "malformed_cidr"),
            ("hostbits", "malformed_cidr"),
            ("noip", "no_internal_ip"),
            ("badip", "malformed_address"),
            ("offlink", "not_on_link"),
            ("mine", "address_is_ours"),
            ("overlapsme", "overlap"),
            ("overlapsgood", "overlap"),
            ("dup", "duplicate_name"),
            ("dup", "duplicate_name"),
            ("broken", "malformed_object"),
        ]
        .iter()
        .map(|(n, r)| ((*n).to_owned(), *r))
        .collect();
        want.sort();
        assert_eq!(got, want);
        let overlap = d.skipped.iter().find(|s| s.node == "overlapsgood").unwrap();
        assert_eq!(
            overlap.reason.to_string(),
            "pod CIDR 10.1.27.128/25 overlaps node good's"
        );
    }

    #[test]
    fn overlap_winner_does_not_depend_on_file_order() {
        let a = node("a", &["10.1.27.0/24"], &["172.20.11.42"]);
        let b = node("b", &["10.1.27.0/25"], &["172.20.11.44"]);
        let d1 = desired(&[a.clone(), b.clone()], &local());
        let d2 = desired(&[b, a], &local());
        assert_eq!(d1, d2);
        assert_eq!(d1.routes.values().next().unwrap().node, "a");
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
}
