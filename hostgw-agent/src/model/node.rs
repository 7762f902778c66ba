//! Node-wide facts the programs follow: forwarding settings and netfilter NAT.

/// The forwarding sysctls of the bridge and the uplink, as read (`None`: unreadable or
/// absent). Values are the files' trimmed contents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarding {
    /// `net.ipv4.conf.<bridge>.forwarding` and `net.ipv4.conf.<uplink>.forwarding`.
    pub v4_bridge: Option<String>,
    pub v4_uplink: Option<String>,
    /// `net.ipv6.conf.all.forwarding`.
    pub v6_all: Option<String>,
    /// `net.ipv6.conf.<dev>.force_forwarding` (kernels from 6.17) of the bridge and uplink.
    pub v6_force_bridge: Option<String>,
    pub v6_force_uplink: Option<String>,
    /// `net.ipv6.conf.<uplink>.accept_ra`.
    pub uplink_accept_ra: Option<String>,
}

impl Forwarding {
    /// The kernel forwards IPv4 between the bridge and the uplink: on for both.
    pub fn v4(&self) -> bool {
        on(self.v4_bridge.as_ref()) && on(self.v4_uplink.as_ref())
    }

    /// The kernel forwards IPv6: `all.forwarding`, or `force_forwarding` on both interfaces.
    pub fn v6(&self) -> bool {
        on(self.v6_all.as_ref())
            || (on(self.v6_force_bridge.as_ref()) && on(self.v6_force_uplink.as_ref()))
    }
}

fn on(value: Option<&String>) -> bool {
    value.is_some_and(|v| v == "1")
}

/// What NAT the node has in netfilter: any makes the conntrack gate necessary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nat {
    /// nftables chains of type `nat`.
    pub nft_chains: usize,
    /// The legacy iptables `nat` table is loaded.
    pub legacy_table: bool,
}

impl Nat {
    pub fn present(self) -> bool {
        self.nft_chains > 0 || self.legacy_table
    }
}
