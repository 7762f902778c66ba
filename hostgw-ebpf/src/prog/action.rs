//! What a forwarding decision ([`super::v4`], [`super::v6`]) asks [`super::apply`] to do, the
//! same for both families.

/// The next hop of a [`Action::Neigh`], in network byte order.
#[derive(Clone, Copy)]
pub enum Nexthop {
    V4([u8; 4]),
    V6([u8; 16]),
}

/// What to do with a packet.
pub enum Action {
    /// Hand it to the stack unchanged, counted under this reason.
    Pass(u32),
    /// Rewrite MACs and TTL / hop limit, then send it out of `ifindex` (`bpf_redirect`, or
    /// `XDP_TX` from XDP when `ifindex` is the interface it came in on).
    Redirect {
        reason: u32,
        ifindex: u32,
        dmac: [u8; 6],
        smac: [u8; 6],
    },
    /// Rewrite MACs and TTL / hop limit, then deliver it into the pod behind the host-side
    /// veth `ifindex` (`bpf_redirect_peer`).
    Peer {
        ifindex: u32,
        dmac: [u8; 6],
        smac: [u8; 6],
    },
    /// Decrement the TTL / hop limit and send it out of `ifindex` to next hop `nh`, letting the
    /// kernel resolve the neighbour and fill in the MACs (`bpf_redirect_neigh`).
    Neigh { ifindex: u32, nh: Nexthop },
}

/// A forwarding decision stands only if the conntrack gate lets the flow through.
#[inline(always)]
pub fn gated(action: Action, gate: impl FnOnce() -> Result<(), u32>) -> Action {
    match action {
        Action::Pass(_) => action,
        _ => match gate() {
            Ok(()) => action,
            Err(why) => Action::Pass(why),
        },
    }
}
