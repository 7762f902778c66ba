//! Counter ids: one per address family, hook and verdict reason, summed per CPU in the
//! [`crate::names::STATS`] map at index [`index`]`(family, hook, reason)`.

/// Which traffic a packet is: IPv4, IPv6, or neither.
pub mod family {
    /// An IPv4 frame (`EtherType` 0x0800).
    pub const IPV4: u32 = 0;
    /// An IPv6 frame (`EtherType` 0x86DD).
    pub const IPV6: u32 = 1;
    /// Neither: ARP, VLAN-tagged frames, other `EtherType`s, and frames too short to tell.
    pub const OTHER: u32 = 2;
    /// Number of families.
    pub const COUNT: u32 = 3;
    /// Names, indexed by family id, as metrics and `stats` print them.
    pub const NAMES: [&str; COUNT as usize] = ["ipv4", "ipv6", "other"];
}

/// Where a program runs.
pub mod hook {
    /// TC ingress of a bridge port or of the bridge device: traffic leaving pods.
    pub const EGRESS: u32 = 0;
    /// TC ingress of the uplink: traffic from other nodes.
    pub const INGRESS_TC: u32 = 1;
    /// XDP on the uplink: traffic from other nodes.
    pub const INGRESS_XDP: u32 = 2;
    /// Number of hooks.
    pub const COUNT: u32 = 3;
    /// Names, indexed by hook id, as metrics and `stats` print them.
    pub const NAMES: [&str; COUNT as usize] = ["egress", "ingress_tc", "ingress_xdp"];
}

/// Why a program did what it did with a packet.
pub mod reason {
    /// Forwarded to a remote node from the route trie (pod → remote pod).
    pub const FAST_EGRESS: u32 = 0;
    /// Delivered to a local pod from the endpoint table (remote → local pod).
    pub const FAST_INGRESS: u32 = 1;
    /// Forwarded back out to another node from the route trie (transit).
    pub const FAST_TRANSIT: u32 = 2;
    /// Forwarded on the kernel FIB's answer after a miss.
    pub const FIB_FORWARD: u32 = 3;
    /// Redirected with `bpf_redirect_neigh`: the next hop's neighbour was unresolved.
    pub const NEIGH_REDIRECT: u32 = 4;
    /// Passed: neither an IPv4 nor an IPv6 frame (ARP, VLAN-tagged, other `EtherType`s); always
    /// counted under [`super::family::OTHER`].
    pub const PASS_NOT_IP: u32 = 5;
    /// Passed: frame not addressed to the bridge/uplink MAC (switched, not routed).
    pub const PASS_NOT_ROUTED: u32 = 6;
    /// Passed: broadcast or multicast destination.
    pub const PASS_MULTICAST: u32 = 7;
    /// Passed: truncated or malformed headers.
    pub const PASS_MALFORMED: u32 = 8;
    /// Passed: IPv4 options, or an IPv6 next header other than TCP, UDP and `ICMPv6` (every
    /// extension header but the fragment header, and upper layers the programs do not parse).
    pub const PASS_IP_OPTIONS: u32 = 9;
    /// Passed: an IPv4 fragment, or an IPv6 packet with a fragment header.
    pub const PASS_FRAGMENT: u32 = 10;
    /// Passed: TTL / hop limit ≤ 1, the stack sends time exceeded.
    pub const PASS_TTL: u32 = 11;
    /// Passed: larger than the egress MTU, the stack fragments or sends frag-needed (IPv4) or
    /// Packet Too Big (IPv6, always: IPv6 routers never fragment).
    pub const PASS_MTU: u32 = 12;
    /// Passed: forwarding is disabled on the node.
    pub const PASS_FWD_DISABLED: u32 = 13;
    /// Passed: no route or endpoint and the FIB fallback is off, or the FIB has an
    /// unreachable, blackhole or prohibit route.
    pub const PASS_NO_ROUTE: u32 = 14;
    /// Passed: the kernel FIB would not forward it (an address of the node, a broadcast
    /// address, or no route at all), or IPv6 traffic the kernel never forwards: neighbour
    /// discovery (`ICMPv6` types 133–137) and link-local, unspecified or loopback addresses or
    /// a multicast source.
    pub const PASS_NOT_FWDED: u32 = 15;
    /// Passed: reverse-path check failed; the stack applies `rp_filter`.
    pub const PASS_RPF: u32 = 16;
    /// Passed by XDP to the TC hook on the same interface, which decides (local delivery with
    /// `bpf_redirect_peer` and FIB lookups need an skb).
    pub const HANDOFF_TC: u32 = 17;
    /// Conntrack gate: passed, conntrack has no confirmed entry for the flow yet.
    pub const CT_NEW: u32 = 18;
    /// Conntrack gate: passed, the flow's entry carries NAT.
    pub const CT_NAT: u32 = 19;
    /// Conntrack gate: passed, a protocol the gate cannot look up (not TCP or UDP).
    pub const CT_PROTO: u32 = 20;
    /// Conntrack gate: an established flow without NAT; forwarded (also counted under the
    /// forwarding reason).
    pub const CT_ESTABLISHED: u32 = 21;
    /// Handed on unchanged: the hook has other tc users (`HOOK_F_SHARED_INGRESS`).
    pub const PASS_TC_SHARED: u32 = 22;
    /// Handed on: the node has policy routing rules beyond the defaults (`STATE_F_POLICY`).
    pub const PASS_POLICY: u32 = 23;
    /// Handed on: the node has xfrm (`IPsec`) policies (`STATE_F_XFRM`).
    pub const PASS_XFRM: u32 = 24;
    /// Handed on: the FIB sends it back out of the interface it came in on (a pod reaching a
    /// pod of its own node through the gateway), where the kernel also sends an ICMP redirect.
    pub const PASS_HAIRPIN: u32 = 25;
    /// Handed on: for an address of this node's pod network without a neighbour entry, the
    /// stack resolves it, and answers "host unreachable" when nothing does.
    pub const PASS_UNRESOLVED: u32 = 26;
    /// Conntrack gate: the flow's entry has not seen a reply yet (or has a helper): to the
    /// stack, where conntrack sees it, as netfilter's flowtable requires.
    pub const CT_UNREPLIED: u32 = 27;
    /// Conntrack gate: a TCP packet conntrack must see (SYN, FIN or RST), or a connection
    /// conntrack does not hold as established and assured (the handshake, the close): to the
    /// stack, as netfilter's flowtable does.
    pub const CT_TCP: u32 = 28;
    /// Conntrack gate: the flow's entry is close to timing out: this packet goes through the
    /// stack, where conntrack refreshes the entry as it does for every packet it sees.
    pub const CT_REFRESH: u32 = 29;
    /// Number of reasons.
    pub const COUNT: u32 = 30;
    /// Names, indexed by reason id, as metrics and `stats` print them.
    pub const NAMES: [&str; COUNT as usize] = [
        "fast_egress",
        "fast_ingress",
        "fast_transit",
        "fib_forward",
        "neigh_redirect",
        "pass_not_ip",
        "pass_not_routed",
        "pass_multicast",
        "pass_malformed",
        "pass_ip_options",
        "pass_fragment",
        "pass_ttl",
        "pass_mtu",
        "pass_fwd_disabled",
        "pass_no_route",
        "pass_not_fwded",
        "pass_rpf",
        "handoff_tc",
        "ct_new",
        "ct_nat",
        "ct_proto",
        "ct_established",
        "pass_tc_shared",
        "pass_policy",
        "pass_xfrm",
        "pass_hairpin",
        "pass_unresolved",
        "ct_unreplied",
        "ct_tcp",
        "ct_refresh",
    ];
}

/// Number of entries in the stats map.
pub const STATS_LEN: u32 = family::COUNT * hook::COUNT * reason::COUNT;

/// The stats map index of `(family, hook, reason)`.
#[inline(always)]
pub const fn index(family: u32, hook: u32, reason: u32) -> u32 {
    (family * hook::COUNT + hook) * reason::COUNT + reason
}

/// The `(family, hook, reason)` of a stats map index; the inverse of [`index`].
#[inline(always)]
pub const fn split(index: u32) -> (u32, u32, u32) {
    let reason = index % reason::COUNT;
    let rest = index / reason::COUNT;
    (rest / hook::COUNT, rest % hook::COUNT, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_split_are_inverse_and_dense() {
        let mut seen = [false; STATS_LEN as usize];
        for f in 0..family::COUNT {
            for h in 0..hook::COUNT {
                for r in 0..reason::COUNT {
                    let i = index(f, h, r);
                    assert!(i < STATS_LEN);
                    assert!(!seen[i as usize], "index {i} used twice");
                    seen[i as usize] = true;
                    assert_eq!(split(i), (f, h, r));
                }
            }
        }
        assert!(seen.iter().all(|s| *s));
    }
}
