//! The frames and [`Path`]s of each forwarding figure, on a 2-node lab, and the ceiling's own
//! veth pair.
//!
//! - Egress (pod → remote node, forwarded by n1): frames as pod n1p1 sends them to pod n2p1
//!   (source its MAC and address, destination the bridge's MAC), generated out of the pod's
//!   `eth0`; the forwarder receives on the host end `veth1p1` (where `hostgw_egress` runs) and
//!   sends out of n1's `eth0`; the sink is the switch's port of n1 (XDP), so nothing goes on
//!   to n2.
//! - Ingress (remote node → pod, forwarded by n2): frames as n1 sends them to n2 (source n1's
//!   uplink MAC and pod n1p1's address, destination n2's uplink MAC and pod n2p1), generated
//!   out of the switch's port of n2; the forwarder receives on n2's `eth0` (`hostgw_xdp`,
//!   `hostgw_ingress`) and delivers into pod n2p1, whose `eth0` holds the sink (tcx: a packet
//!   `bpf_redirect_peer` delivers never passes the pod's XDP hook).
//! - Ceiling: generator and sink on the two ends of one veth pair, nothing in between.

use super::{Family, bpf::SinkKind, fwd::Path};
use hostgw_tests::{
    Netns,
    frame::{Ipv4Frame, Ipv6Frame},
    lab::{self, Lab, Mode, Pod},
};

/// Which way through the forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Pod → remote node.
    Egress,
    /// Remote node → pod.
    Ingress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Egress => "egress",
            Self::Ingress => "ingress",
        }
    }
}

/// An Ethernet frame of `len` bytes (without FCS; 60 is the minimum, "64-byte" on the wire)
/// carrying UDP from `src` to `dst`, TTL 64, DF, valid IPv4 header checksum, no UDP checksum.
pub fn udp_frame(dmac: [u8; 6], smac: [u8; 6], src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    assert!(len >= 60, "frames are at least 60 bytes");
    Ipv4Frame::udp(dmac, smac, src, dst, len - 14 - 20 - 8).bytes()
}

/// [`udp_frame`] over IPv6: hop limit 64 and a valid UDP checksum (mandatory in IPv6).
pub fn udp6_frame(
    dmac: [u8; 6],
    smac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    len: usize,
) -> Vec<u8> {
    assert!(len >= 62, "IPv6 UDP frames are at least 62 bytes");
    Ipv6Frame::udp(dmac, smac, src, dst, len - 14 - 40 - 8)
        .with_udp_checksum()
        .bytes()
}

/// The path of `direction` through lab `lab` (2 nodes, at least 1 pod each), with `len`-byte
/// frames of `family`; fast-path labs toggle the forwarding node's programs.
pub fn lab_path(lab: &Lab, direction: Direction, family: Family, len: usize) -> Path {
    let (p1, p2) = (lab.pod(1, 1), lab.pod(2, 1));
    let frame = |dmac, smac, from: &Pod, to: &Pod| match family {
        Family::V4 => udp_frame(dmac, smac, from.ip().octets(), to.ip().octets(), len),
        Family::V6 => udp6_frame(dmac, smac, from.ip6().octets(), to.ip6().octets(), len),
    };
    let (forwarder, frame, source, rx, sink, sink_kind) = match direction {
        Direction::Egress => (
            lab.node(1),
            frame(lab::bridge_mac(1), p1.mac(), p1, p2),
            (p1.netns().to_owned(), "eth0".to_owned()),
            (lab.node(1).netns().to_owned(), p1.host_veth()),
            (lab.switch_netns().to_owned(), "port-n1".to_owned()),
            SinkKind::Xdp,
        ),
        Direction::Ingress => (
            lab.node(2),
            frame(lab.node(2).uplink_mac(), lab.node(1).uplink_mac(), p1, p2),
            (lab.switch_netns().to_owned(), "port-n2".to_owned()),
            (lab.node(2).netns().to_owned(), lab::UPLINK.to_owned()),
            (p2.netns().to_owned(), "eth0".to_owned()),
            SinkKind::Tc,
        ),
    };
    Path {
        label: format!(
            "{} {} {len} B on lab {}",
            direction.name(),
            family.label(),
            lab.name()
        ),
        source,
        rx,
        sink,
        sink_kind,
        toggle: (lab.mode() == Mode::FastPath)
            .then(|| forwarder.pin_dir().join(hostgw_common::names::STATE)),
        frame,
    }
}

/// Two namespaces joined by one veth pair (`gen0` ↔ `sink0`): the no-forwarding ceiling.
#[derive(Debug)]
pub struct Ceiling {
    source: Netns,
    sink: Netns,
}

impl Ceiling {
    /// Creates `hgw-<pid>-<name>-gen` and `hgw-<pid>-<name>-sink`; removed on drop.
    pub fn new(name: &str) -> Self {
        let source = Netns::new(&format!("{name}-gen"));
        let sink = Netns::new(&format!("{name}-sink"));
        source.ip(&[
            "link",
            "add",
            "gen0",
            "type",
            "veth",
            "peer",
            "name",
            "sink0",
            "netns",
            sink.name(),
        ]);
        source.ip(&["link", "set", "gen0", "up"]);
        sink.ip(&["link", "set", "sink0", "up"]);
        Self { source, sink }
    }

    /// The generator on `gen0`, the receive thread and the sink on `sink0`.
    pub fn path(&self, kind: SinkKind, len: usize) -> Path {
        let kind_name = match kind {
            SinkKind::Xdp => "XDP",
            SinkKind::Tc => "TC",
        };
        Path {
            label: format!("ceiling {len} B, {kind_name} sink"),
            source: (self.source.name().to_owned(), "gen0".to_owned()),
            rx: (self.sink.name().to_owned(), "sink0".to_owned()),
            sink: (self.sink.name().to_owned(), "sink0".to_owned()),
            sink_kind: kind,
            toggle: None,
            frame: udp_frame(
                [0x02, 0, 0, 0, 0, 0x02],
                [0x02, 0, 0, 0, 0, 0x01],
                [10, 254, 0, 1],
                [10, 254, 0, 2],
                len,
            ),
        }
    }
}
