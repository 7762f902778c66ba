//! Node state the programs must follow and the agent reads from the kernel: whether the node
//! forwards IPv4 on the interfaces the fast path uses.
//!
//! The kernel forwards a packet only if forwarding is on for the interface it arrived on
//! (`net.ipv4.conf.<dev>.forwarding`; `net.ipv4.ip_forward` sets it for every interface). The
//! fast path forwards only while it is on for both the bridge and the uplink. Read-only here.

use hostgw_common::{STATE_F_CT_GATE, STATE_F_FORWARD_V4, State};

use crate::Interfaces;

/// What the agent read, and the interface addresses the programs match frames against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub forwarding_v4: bool,
    /// The conntrack gate is on.
    pub ct_gate: bool,
    pub bridge_mac: [u8; 6],
    pub uplink_mac: [u8; 6],
}

impl NodeState {
    /// Reads the state of the current network namespace. An unreadable setting counts as off.
    pub fn read(ifaces: &Interfaces) -> Self {
        let on = |dev: &str| {
            let path = format!("/proc/sys/net/ipv4/conf/{dev}/forwarding");
            match std::fs::read_to_string(&path) {
                Ok(v) => v.trim() == "1",
                Err(error) => {
                    tracing::warn!(path, %error, "cannot read; treating forwarding as off");
                    false
                }
            }
        };
        Self {
            forwarding_v4: on(&ifaces.bridge.name) && on(&ifaces.uplink.name),
            ct_gate: false,
            bridge_mac: ifaces.bridge.mac,
            uplink_mac: ifaces.uplink.mac,
        }
    }

    /// The value of the programs' state map.
    pub fn to_map(self) -> State {
        State {
            flags: if self.forwarding_v4 {
                STATE_F_FORWARD_V4
            } else {
                0
            } | if self.ct_gate { STATE_F_CT_GATE } else { 0 },
            bridge_mac: self.bridge_mac,
            uplink_mac: self.uplink_mac,
        }
    }
}
