//! Route trie entries of either family.

use std::net::IpAddr;

use hostgw_common::{RouteV4, RouteV6};

/// A route trie entry of either family: [`RouteV4`] or [`RouteV6`] with the next hop as an
/// [`IpAddr`], so that planning is the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrieRoute {
    /// The remote node's address, the next hop.
    pub node_ip: IpAddr,
    /// Interface to send on (the uplink).
    pub ifindex: u32,
    /// MTU of that interface.
    pub mtu: u32,
    /// `ROUTE_F_*` bits.
    pub flags: u32,
    /// The next hop's MAC address (valid with `ROUTE_F_RESOLVED`).
    pub node_mac: [u8; 6],
    /// The uplink's MAC address.
    pub uplink_mac: [u8; 6],
}

impl From<RouteV4> for TrieRoute {
    fn from(r: RouteV4) -> Self {
        Self {
            node_ip: IpAddr::from(r.node_ip),
            ifindex: r.ifindex,
            mtu: r.mtu,
            flags: r.flags,
            node_mac: r.node_mac,
            uplink_mac: r.uplink_mac,
        }
    }
}

impl From<RouteV6> for TrieRoute {
    fn from(r: RouteV6) -> Self {
        Self {
            node_ip: IpAddr::from(r.node_ip),
            ifindex: r.ifindex,
            mtu: r.mtu,
            flags: r.flags,
            node_mac: r.node_mac,
            uplink_mac: r.uplink_mac,
        }
    }
}

impl TrieRoute {
    /// The `ROUTES_V4` value, when the next hop is IPv4.
    pub fn to_v4(&self) -> Option<RouteV4> {
        let IpAddr::V4(ip) = self.node_ip else {
            return None;
        };
        Some(RouteV4 {
            node_ip: ip.octets(),
            ifindex: self.ifindex,
            mtu: self.mtu,
            flags: self.flags,
            node_mac: self.node_mac,
            uplink_mac: self.uplink_mac,
        })
    }

    /// The `ROUTES_V6` value, when the next hop is IPv6.
    pub fn to_v6(&self) -> Option<RouteV6> {
        let IpAddr::V6(ip) = self.node_ip else {
            return None;
        };
        Some(RouteV6 {
            node_ip: ip.octets(),
            ifindex: self.ifindex,
            mtu: self.mtu,
            flags: self.flags,
            node_mac: self.node_mac,
            uplink_mac: self.uplink_mac,
        })
    }
}
