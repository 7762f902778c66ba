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

/// What of netfilter can act on forwarded traffic: any of it makes the conntrack gate
/// necessary, so that the traffic meets it as on the kernel path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Netfilter {
    /// nftables chains of type `nat` (any family, any hook).
    pub nat_chains: usize,
    /// Other nftables base chains that see forwarded packets: the `prerouting`, `forward`,
    /// `postrouting` and `ingress` hooks of the `ip`, `ip6` and `inet` families, and every
    /// `netdev` and `bridge` chain.
    pub forward_chains: usize,
    /// A legacy iptables or ip6tables table is loaded (its rules are not read: it may act).
    pub legacy_tables: bool,
}

impl Netfilter {
    /// Whether netfilter may act on forwarded traffic.
    pub fn acts(self) -> bool {
        self.nat_chains > 0 || self.forward_chains > 0 || self.legacy_tables
    }
}

/// How long the node's conntrack keeps an entry without a packet, in the states the gate
/// deals with, in seconds as the sysctls of the node's namespace say (`None`: unreadable,
/// such as without `nf_conntrack`); and the kernel's tick rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConntrackTimeouts {
    /// `net.netfilter.nf_conntrack_tcp_timeout_established`.
    pub tcp_established: Option<u32>,
    /// `net.netfilter.nf_conntrack_tcp_timeout_time_wait`.
    pub tcp_time_wait: Option<u32>,
    /// `net.netfilter.nf_conntrack_tcp_timeout_close`.
    pub tcp_close: Option<u32>,
    /// `net.netfilter.nf_conntrack_udp_timeout`.
    pub udp: Option<u32>,
    /// `net.netfilter.nf_conntrack_udp_timeout_stream`.
    pub udp_stream: Option<u32>,
    /// Jiffies per second (`CONFIG_HZ`).
    pub hz: u32,
}

impl ConntrackTimeouts {
    /// The programs' view: the timeouts in milliseconds, and the refresh threshold in
    /// jiffies, half the shortest timeout (so that a flow with a packet at least that often
    /// has its entry refreshed before it can expire, and a closing connection's short
    /// timeout is not refreshed away); 0 where unknown.
    pub fn for_programs(&self) -> hostgw_common::CtTimeouts {
        let all = [
            self.tcp_established,
            self.tcp_time_wait,
            self.tcp_close,
            self.udp,
            self.udp_stream,
        ];
        let ms = |t: Option<u32>| t.map_or(0, |secs| secs.saturating_mul(1000));
        hostgw_common::CtTimeouts {
            refresh: all
                .into_iter()
                .flatten()
                .min()
                .map_or(0, |secs| (secs / 2).max(1).saturating_mul(self.hz)),
            tcp_established: ms(self.tcp_established),
            tcp_time_wait: ms(self.tcp_time_wait),
            tcp_close: ms(self.tcp_close),
            udp: ms(self.udp),
            udp_stream: ms(self.udp_stream),
        }
    }
}
