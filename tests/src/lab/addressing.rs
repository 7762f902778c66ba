//! Addressing: the lab's deterministic names, addresses and MACs of node `i` and pod `j`, and
//! the nodes file the agents read (a `NodeEntry` per node, written as the YAML of
//! `kubectl get nodes -o yaml`). Pure functions of the indexes; nothing here touches the
//! kernel.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
};

/// One `Node` of the nodes file. Fields are kept as text so malformed entries can be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// `metadata.name`.
    pub name: String,
    /// `spec.podCIDR` and the first element of `spec.podCIDRs`.
    pub pod_cidr: String,
    /// The `InternalIP` of `status.addresses`; `None` leaves it out (only a `Hostname`).
    pub internal_ip: Option<String>,
    /// The second element of `spec.podCIDRs` (the IPv6 one of a dual-stack node).
    pub pod_cidr_v6: Option<String>,
    /// A second `InternalIP` (the IPv6 one of a dual-stack node).
    pub internal_ip_v6: Option<String>,
}

impl NodeEntry {
    /// The correct dual-stack entry of lab node `i`: `n<i>`, `10.1.i.0/24` and
    /// `fd00:10:1:i::/64`, `172.20.11.(10+i)` and `fd00:20:11::(10+i)`.
    pub fn of(i: usize) -> Self {
        Self {
            pod_cidr_v6: Some(format!("{}/64", pod_network6(i))),
            internal_ip_v6: Some(uplink_ip6(i).to_string()),
            ..Self::of_v4(i)
        }
    }

    /// The correct IPv4-only entry of lab node `i`.
    pub fn of_v4(i: usize) -> Self {
        Self {
            name: node_name(i),
            pod_cidr: format!("{}/24", pod_network(i)),
            internal_ip: Some(uplink_ip(i).to_string()),
            pod_cidr_v6: None,
            internal_ip_v6: None,
        }
    }

    /// `(network, prefix length, node IP)` of the IPv6 side when it is well-formed: the
    /// second pod CIDR and `InternalIP`, or the only ones of an IPv6-only node.
    pub fn parsed_v6(&self) -> Option<(Ipv6Addr, u8, Ipv6Addr)> {
        let (cidr, ip) = match &self.pod_cidr_v6 {
            Some(cidr) => (cidr, &self.internal_ip_v6),
            None => (&self.pod_cidr, &self.internal_ip),
        };
        let net: ipnet::Ipv6Net = cidr.parse().ok()?;
        if net.network() != net.addr() {
            return None;
        }
        let ip = ip.as_deref()?.parse().ok()?;
        Some((net.addr(), net.prefix_len(), ip))
    }

    /// `(network, prefix length, node IP)` when the entry is well-formed: an IPv4 CIDR whose
    /// address is its network address, and an IPv4 `InternalIP`; and the agents accept it as
    /// a pod network (not link-local, loopback, multicast or `0.0.0.0/8` addresses).
    pub fn parsed(&self) -> Option<(Ipv4Addr, u8, Ipv4Addr)> {
        let (addr, len) = self.pod_cidr.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let len: u8 = len.parse().ok()?;
        if len > 32
            || addr.is_link_local()
            || addr.is_loopback()
            || addr.is_multicast()
            || addr.octets()[0] == 0
        {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return None;
        }
        let ip = self.internal_ip.as_deref()?.parse().ok()?;
        Some((addr, len, ip))
    }
}

/// A v1 `NodeList` in YAML, as `kubectl get nodes -o yaml` prints it (keys sorted, `kind:
/// List`), holding only what the agent reads.
pub fn node_list_yaml(entries: &[NodeEntry]) -> String {
    let mut y = String::from("apiVersion: v1\nitems:\n");
    for e in entries {
        let _ = write!(
            y,
            "- apiVersion: v1\n  kind: Node\n  metadata:\n    name: {name}\n  spec:\n    \
             podCIDR: {cidr}\n    podCIDRs:\n    - {cidr}\n",
            name = e.name,
            cidr = e.pod_cidr
        );
        if let Some(cidr) = &e.pod_cidr_v6 {
            let _ = writeln!(y, "    - {cidr}");
        }
        y.push_str("  status:\n    addresses:\n");
        for ip in [&e.internal_ip, &e.internal_ip_v6].into_iter().flatten() {
            let _ = write!(y, "    - address: {ip}\n      type: InternalIP\n");
        }
        let _ = write!(
            y,
            "    - address: {name}\n      type: Hostname\n",
            name = e.name
        );
    }
    y.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    y
}

/// `n<i>`: the Kubernetes name of lab node `i`.
pub fn node_name(i: usize) -> String {
    format!("n{i}")
}

fn octet(i: usize, what: &str) -> u8 {
    u8::try_from(i).unwrap_or_else(|_| panic!("{what} {i} does not fit the lab's addressing"))
}

/// Node `i`'s uplink address, `172.20.11.(10+i)`.
pub fn uplink_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 20, 11, octet(10 + i, "node"))
}

/// Node `i`'s uplink MAC, `02:00:ac:14:0b:(10+i)` (the address's last three octets).
pub fn uplink_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0xac, 0x14, 0x0b, octet(10 + i, "node")]
}

/// Node `i`'s pod network address, `10.1.i.0` (a /24).
pub fn pod_network(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, octet(i, "node"), 0)
}

/// Node `i`'s gateway (its `cni0` address), `10.1.i.1`.
pub fn gateway(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, octet(i, "node"), 1)
}

/// Node `i`'s bridge MAC, `02:00:0a:01:i:01`.
pub fn bridge_mac(i: usize) -> [u8; 6] {
    [0x02, 0, 0x0a, 0x01, octet(i, "node"), 0x01]
}

/// Pod `j` of node `i`: `10.1.i.(j+1)`.
pub fn pod_ip(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, octet(i, "node"), octet(j + 1, "pod"))
}

/// Pod `j` of node `i`'s MAC, `02:00:0a:01:i:(j+1)`.
pub fn pod_mac(i: usize, j: usize) -> [u8; 6] {
    [0x02, 0, 0x0a, 0x01, octet(i, "node"), octet(j + 1, "pod")]
}

/// Node `i`'s IPv6 uplink address, `fd00:20:11::(10+i)` (a /64).
pub fn uplink_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x20,
        0x11,
        0,
        0,
        0,
        0,
        u16::from(octet(10 + i, "node")),
    )
}

/// Node `i`'s IPv6 pod network, `fd00:10:1:i::` (a /64).
pub fn pod_network6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 1, u16::from(octet(i, "node")), 0, 0, 0, 0)
}

/// Node `i`'s IPv6 gateway (its `cni0` address), `fd00:10:1:i::1`.
pub fn gateway6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 1, u16::from(octet(i, "node")), 0, 0, 0, 1)
}

/// Pod `j` of node `i`'s IPv6 address: `fd00:10:1:i::(j+1)`.
pub fn pod_ip6(i: usize, j: usize) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfd00,
        0x10,
        1,
        u16::from(octet(i, "node")),
        0,
        0,
        0,
        u16::from(octet(j + 1, "pod")),
    )
}

/// `aa:bb:…` form of a MAC address.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_list_is_kubectl_shaped() {
        let y = node_list_yaml(&[NodeEntry::of(1)]);
        assert_eq!(
            y,
            "apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: n1\n  \
             spec:\n    podCIDR: 10.1.1.0/24\n    podCIDRs:\n    - 10.1.1.0/24\n    - \
             fd00:10:1:1::/64\n  status:\n    addresses:\n    - address: 172.20.11.11\n      \
             type: InternalIP\n    - address: fd00:20:11::b\n      type: InternalIP\n    - \
             address: n1\n      type: Hostname\nkind: List\nmetadata:\n  resourceVersion: \"\"\n"
        );
        let y = node_list_yaml(&[NodeEntry::of_v4(1)]);
        assert_eq!(
            y,
            "apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Node\n  metadata:\n    name: n1\n  \
             spec:\n    podCIDR: 10.1.1.0/24\n    podCIDRs:\n    - 10.1.1.0/24\n  status:\n    \
             addresses:\n    - address: 172.20.11.11\n      type: InternalIP\n    - address: \
             n1\n      type: Hostname\nkind: List\nmetadata:\n  resourceVersion: \"\"\n"
        );
    }

    #[test]
    fn entries_parse_only_when_well_formed() {
        assert_eq!(
            NodeEntry::of(2).parsed(),
            Some((
                Ipv4Addr::new(10, 1, 2, 0),
                24,
                Ipv4Addr::new(172, 20, 11, 12)
            ))
        );
        for (cidr, ip) in [
            ("10.1.3.0/33", Some("172.20.11.13")),
            ("10.1.3.1/24", Some("172.20.11.13")),
            ("10.1.300.0/24", Some("172.20.11.13")),
            ("10.1.3.0", Some("172.20.11.13")),
            ("10.1.3.0/24", None),
            ("10.1.3.0/24", Some("n3")),
        ] {
            let e = NodeEntry {
                name: "n3".into(),
                pod_cidr: cidr.into(),
                internal_ip: ip.map(Into::into),
                pod_cidr_v6: None,
                internal_ip_v6: None,
            };
            assert_eq!(e.parsed(), None, "{e:?} parsed");
        }
        assert_eq!(
            NodeEntry::of(2).parsed_v6(),
            Some((
                "fd00:10:1:2::".parse().unwrap(),
                64,
                "fd00:20:11::c".parse().unwrap()
            ))
        );
        assert_eq!(NodeEntry::of_v4(2).parsed_v6(), None);
        let v6_only = NodeEntry {
            pod_cidr: "fd00:10:1:2::/64".into(),
            internal_ip: Some("fd00:20:11::c".into()),
            ..NodeEntry::of_v4(2)
        };
        assert_eq!(v6_only.parsed(), None);
        assert_eq!(v6_only.parsed_v6(), NodeEntry::of(2).parsed_v6());
        for (cidr, ip) in [
            ("fd00:10:1:3::1/64", Some("fd00:20:11::d")),
            ("fd00:10:1:3::/129", Some("fd00:20:11::d")),
            ("10.1.3.0/24", Some("fd00:20:11::d")),
            ("fd00:10:1:3::/64", None),
            ("fd00:10:1:3::/64", Some("n3")),
        ] {
            let e = NodeEntry {
                pod_cidr_v6: Some(cidr.into()),
                internal_ip_v6: ip.map(Into::into),
                ..NodeEntry::of(3)
            };
            assert_eq!(e.parsed_v6(), None, "{e:?} parsed");
        }
    }

    #[test]
    fn addressing_is_deterministic() {
        assert_eq!(mac_string(uplink_mac(3)), "02:00:ac:14:0b:0d");
        assert_eq!(uplink_ip(3), Ipv4Addr::new(172, 20, 11, 13));
        assert_eq!(pod_ip(3, 2), Ipv4Addr::new(10, 1, 3, 3));
        assert_eq!(mac_string(bridge_mac(3)), "02:00:0a:01:03:01");
        assert_eq!(uplink_ip6(3).to_string(), "fd00:20:11::d");
        assert_eq!(pod_network6(3).to_string(), "fd00:10:1:3::");
        assert_eq!(gateway6(3).to_string(), "fd00:10:1:3::1");
        assert_eq!(pod_ip6(3, 2).to_string(), "fd00:10:1:3::3");
    }
}
