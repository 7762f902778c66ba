//! Interfaces, routes and neighbour entries as the kernel reports them.

use std::net::IpAddr;

use ipnet::IpNet;

/// What the dataplane needs to know about an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address; all zero for interfaces without one.
    pub mac: [u8; 6],
    pub mtu: u32,
    /// The ifindex of the bridge (or other controller) this interface is a port of.
    pub controller: Option<u32>,
    /// Whether this is one end of a veth pair.
    pub is_veth: bool,
}

/// Other tc users on an interface hostgw hooks, described for the log and `status`: on its
/// ingress (filters, tcx programs) and its egress (a root qdisc other than `noqueue`,
/// filters, tcx programs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcUsers {
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

impl TcUsers {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_empty() && self.egress.is_empty()
    }
}

/// One of our routes in the main table, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub cidr: IpNet,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
    /// The route's metric (`RTA_PRIORITY`), when the kernel reports one: part of what
    /// identifies the route for a delete.
    pub metric: Option<u32>,
    /// The route's own MTU (`RTAX_MTU`), when one is set (`ip route … mtu 1400`).
    pub mtu: Option<u32>,
}

/// Whether a neighbour entry has a usable link-layer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    /// Reachable, stale, delay, probe, permanent or noarp: the address can be used.
    Valid,
    /// Resolution failed or has not finished.
    Unresolved,
}

/// A neighbour entry (ARP or NDP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    pub state: NeighState,
    /// Created by us (tagged with our route protocol number).
    pub ours: bool,
    /// Kept resolved by the kernel.
    pub managed: bool,
}
