//! The corpus: valid and mutated frames from a pod and from a remote node.

use super::*;

/// A change to an IPv4 frame, and to an IPv6 one.
type Mutation = Box<dyn Fn(&mut Ipv4Frame)>;
type Mutation6 = Box<dyn Fn(Ipv6Frame) -> Ipv6Frame>;

pub(super) fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: String, from: From, frame: Vec<u8>| {
        let at_least = if name.contains("nobody has") {
            UNRESOLVED
        } else {
            Duration::ZERO
        };
        cases.push(Case {
            name,
            from,
            frame,
            at_least,
        });
    };
    let (p11, p12, p21) = (
        pod_ip(1, 1).octets(),
        pod_ip(1, 2).octets(),
        pod_ip(2, 1).octets(),
    );
    let m11 = pod_mac(1, 1);
    let (b1, u1, u2) = (bridge_mac(1), uplink_mac(1), uplink_mac(2));

    // IPv4 from a pod: destinations, then mutations of a UDP packet to a remote pod.
    let v4 = |dmac, src, dst, data| Ipv4Frame::udp(dmac, m11, src, dst, data);
    let outside = Ipv4Addr::new(198, 51, 100, 7).octets();
    for (what, dst) in [
        ("a remote pod", p21),
        ("a pod of the same node", p12),
        ("the gateway", gateway(1).octets()),
        ("the node", uplink_ip(1).octets()),
        ("the remote node", uplink_ip(2).octets()),
        ("the remote gateway", gateway(2).octets()),
        ("an address outside the lab", outside),
        ("the local broadcast", [10, 1, 1, 255]),
        ("the limited broadcast", [255; 4]),
        ("a multicast group", [239, 1, 2, 3]),
        ("loopback", [127, 0, 0, 1]),
    ] {
        add(
            format!("v4 pod → {what}"),
            From::Pod(1, 1),
            v4(b1, p11, dst, 32).bytes(),
        );
    }
    let mutations: Vec<(&str, Mutation)> = vec![
        ("TTL 0", Box::new(|f| f.ttl = 0)),
        ("TTL 1", Box::new(|f| f.ttl = 1)),
        ("TTL 2", Box::new(|f| f.ttl = 2)),
        ("TTL 255", Box::new(|f| f.ttl = 255)),
        ("no DF", Box::new(|f| f.frag = 0)),
        ("TOS 0xb8", Box::new(|f| f.tos = 0xb8)),
        ("ECN CE", Box::new(|f| f.tos = 0x03)),
        ("options (NOPs)", Box::new(|f| f.options = vec![1, 1, 1, 0])),
        (
            "record route",
            Box::new(|f| f.options = vec![7, 7, 4, 0, 0, 0, 0, 0]),
        ),
        ("router alert", Box::new(|f| f.options = vec![148, 4, 0, 0])),
        ("first fragment", Box::new(|f| f.frag = 0x2000)),
        ("middle fragment", Box::new(|f| f.frag = 0x2000 | 0x64)),
        ("last fragment", Box::new(|f| f.frag = 0x64)),
        ("DF and MF", Box::new(|f| f.frag = 0x6000)),
        ("evil bit", Box::new(|f| f.frag = 0xc000)),
        ("bad header checksum", Box::new(|f| f.bad_checksum = true)),
        (
            "total length beyond the frame",
            Box::new(|f| f.tot_len = Some(200)),
        ),
        (
            "total length short of the frame (a trailer)",
            Box::new(|f| f.tot_len = Some(48)),
        ),
        (
            "total length below the header",
            Box::new(|f| f.tot_len = Some(12)),
        ),
        ("IHL 4", Box::new(|f| f.ver_ihl = Some(0x44))),
        (
            "IHL beyond the packet",
            Box::new(|f| f.ver_ihl = Some(0x4f)),
        ),
        (
            "version 6 in an IPv4 frame",
            Box::new(|f| f.ver_ihl = Some(0x65)),
        ),
        ("version 5", Box::new(|f| f.ver_ihl = Some(0x55))),
        (
            "bad UDP checksum",
            Box::new(|f| f.payload[6..8].copy_from_slice(&[0xde, 0xad])),
        ),
        (
            "UDP length beyond the packet",
            Box::new(|f| f.payload[4..6].copy_from_slice(&[4, 0])),
        ),
        (
            "TCP SYN",
            Box::new(|f| {
                f.proto = 6;
                f.payload = tcp_header(0x02);
            }),
        ),
        (
            "TCP ACK",
            Box::new(|f| {
                f.proto = 6;
                f.payload = tcp_header(0x10);
            }),
        ),
        (
            "TCP without its header",
            Box::new(|f| {
                f.proto = 6;
                f.payload.truncate(6);
            }),
        ),
        (
            "ICMP echo",
            Box::new(|f| {
                f.proto = 1;
                f.payload = icmp_echo(8);
            }),
        ),
        (
            "ICMP with a bad checksum",
            Box::new(|f| {
                f.proto = 1;
                f.payload = icmp_echo(8);
                f.payload[2] ^= 0xff;
            }),
        ),
        // Not a timestamp request: its reply carries the receiver's clock.
        (
            "ICMP information request",
            Box::new(|f| {
                f.proto = 1;
                f.payload = icmp_echo(15);
            }),
        ),
        ("GRE", Box::new(|f| f.proto = 47)),
        ("SCTP", Box::new(|f| f.proto = 132)),
        ("protocol 253", Box::new(|f| f.proto = 253)),
        ("no payload", Box::new(|f| f.payload.clear())),
        (
            "source of the remote pod (spoofed)",
            Box::new(move |f| f.src = p21),
        ),
        (
            "source outside the pod network",
            Box::new(move |f| f.src = outside),
        ),
        ("source 0.0.0.0", Box::new(|f| f.src = [0; 4])),
        ("source loopback", Box::new(|f| f.src = [127, 0, 0, 1])),
        ("source broadcast", Box::new(|f| f.src = [255; 4])),
        ("source multicast", Box::new(|f| f.src = [224, 0, 0, 5])),
        (
            "source the gateway",
            Box::new(|f| f.src = gateway(1).octets()),
        ),
        (
            "broadcast destination MAC",
            Box::new(|f| f.dmac = [0xff; 6]),
        ),
        (
            "multicast destination MAC",
            Box::new(|f| f.dmac = [0x01, 0, 0x5e, 0, 0, 1]),
        ),
        ("another pod's MAC", Box::new(|f| f.dmac = pod_mac(1, 2))),
        (
            "an unknown unicast MAC",
            Box::new(|f| f.dmac = [0x02, 0x99, 0, 0, 0, 1]),
        ),
        (
            "multicast source MAC",
            Box::new(|f| f.smac = [0x01, 0, 0x5e, 0, 0, 9]),
        ),
        ("zero source MAC", Box::new(|f| f.smac = [0; 6])),
        (
            "EtherType ARP with an IP packet",
            Box::new(|f| f.ethertype = 0x0806),
        ),
        ("EtherType 0x88b5", Box::new(|f| f.ethertype = 0x88b5)),
    ];
    for (what, change) in &mutations {
        let mut f = v4(b1, p11, p21, 32);
        change(&mut f);
        add(
            format!("v4 pod → remote pod, {what}"),
            From::Pod(1, 1),
            f.bytes(),
        );
    }
    // Sizes around the uplink's MTU (n1p1 can send up to 9000).
    for total in [576, 1280, 1499, 1500, 1501, 1600, 3000, 8000] {
        for df in [true, false] {
            let mut f = v4(b1, p11, p21, total - 28);
            f.frag = if df { 0x4000 } else { 0 };
            add(
                format!("v4 pod → remote pod, {total} bytes, DF {df}"),
                From::Pod(1, 1),
                f.bytes(),
            );
        }
    }
    // A padded minimum-size Ethernet frame, as NICs deliver small packets.
    let mut padded = v4(b1, p11, p21, 0).bytes();
    padded.resize(60, 0);
    add(
        "v4 pod → remote pod, padded to 60 bytes".into(),
        From::Pod(1, 1),
        padded,
    );
    // A VLAN tag in front of the packet.
    let mut tagged = v4(b1, p11, p21, 32).bytes();
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
    add(
        "v4 pod → remote pod, VLAN 100".into(),
        From::Pod(1, 1),
        tagged,
    );
    // Truncated frames.
    for keep in [14, 20, 33] {
        let mut f = v4(b1, p11, p21, 32).bytes();
        f.truncate(keep);
        add(
            format!("v4 pod → remote pod, cut to {keep} bytes"),
            From::Pod(1, 1),
            f,
        );
    }

    // IPv4 from the remote node, as its forwarding would send it: to n1's pods and beyond.
    let from_node = |dst, data| Ipv4Frame::udp(u1, u2, p21, dst, data);
    for (what, dst) in [
        ("a pod", p11),
        ("the other pod", p12),
        ("the gateway", gateway(1).octets()),
        ("the node", uplink_ip(1).octets()),
        ("a pod address nobody has", [10, 1, 1, 77]),
        ("the node's own pod network broadcast", [10, 1, 1, 255]),
        ("an address outside the lab", outside),
    ] {
        add(
            format!("v4 remote node → {what}"),
            From::Node(2),
            from_node(dst, 32).bytes(),
        );
    }
    for (what, change) in &mutations {
        let mut f = from_node(p11, 32);
        f.dmac = u1;
        f.smac = u2;
        change(&mut f);
        // Mutations written for a pod's frame keep their meaning, with the node's MACs.
        if f.smac == m11 {
            f.smac = u2;
        }
        if f.dmac == b1 {
            f.dmac = u1;
        }
        add(
            format!("v4 remote node → pod, {what}"),
            From::Node(2),
            f.bytes(),
        );
    }
    for total in [1499, 1500] {
        let f = from_node(p11, total - 28);
        add(
            format!("v4 remote node → pod, {total} bytes"),
            From::Node(2),
            f.bytes(),
        );
    }
    let mut padded = from_node(p11, 0).bytes();
    padded.resize(60, 0);
    add(
        "v4 remote node → pod, padded to 60 bytes".into(),
        From::Node(2),
        padded,
    );

    // IPv6 from a pod.
    let (q11, q12, q21) = (
        pod_ip6(1, 1).octets(),
        pod_ip6(1, 2).octets(),
        pod_ip6(2, 1).octets(),
    );
    let v6 = |dmac, src, dst, data| Ipv6Frame::udp(dmac, m11, src, dst, data).with_udp_checksum();
    let outside6 = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
    let ll = "fe80::99".parse::<Ipv6Addr>().unwrap().octets();
    for (what, dst) in [
        ("a remote pod", q21),
        ("a pod of the same node", q12),
        ("the gateway", gateway6(1).octets()),
        ("the node", uplink_ip6(1).octets()),
        ("the remote node", uplink_ip6(2).octets()),
        ("an address outside the lab", outside6),
        ("a link-local address", ll),
        (
            "all nodes (ff02::1)",
            "ff02::1".parse::<Ipv6Addr>().unwrap().octets(),
        ),
        (
            "a site multicast group",
            "ff05::1:3".parse::<Ipv6Addr>().unwrap().octets(),
        ),
        ("loopback", Ipv6Addr::LOCALHOST.octets()),
    ] {
        add(
            format!("v6 pod → {what}"),
            From::Pod(1, 1),
            v6(b1, q11, dst, 32).bytes(),
        );
    }
    let mutations6: Vec<(&str, Mutation6)> = vec![
        (
            "hop limit 0",
            Box::new(|mut f| {
                f.hop_limit = 0;
                f
            }),
        ),
        (
            "hop limit 1",
            Box::new(|mut f| {
                f.hop_limit = 1;
                f
            }),
        ),
        (
            "hop limit 2",
            Box::new(|mut f| {
                f.hop_limit = 2;
                f
            }),
        ),
        ("hop-by-hop options", Box::new(|f| f.with_extension(0))),
        ("routing header", Box::new(|f| f.with_extension(43))),
        ("fragment header", Box::new(|f| f.with_extension(44))),
        ("destination options", Box::new(|f| f.with_extension(60))),
        (
            "no next header",
            Box::new(|mut f| {
                f.next = 59;
                f
            }),
        ),
        (
            "payload length beyond the frame",
            Box::new(|mut f| {
                f.payload_len = Some(400);
                f
            }),
        ),
        (
            "payload length short of the frame",
            Box::new(|mut f| {
                f.payload_len = Some(20);
                f
            }),
        ),
        (
            "version 4 in an IPv6 frame",
            Box::new(|mut f| {
                f.version = 4;
                f
            }),
        ),
        (
            "bad UDP checksum",
            Box::new(|mut f| {
                f.payload[6] ^= 0xff;
                f
            }),
        ),
        (
            "zero UDP checksum",
            Box::new(|mut f| {
                f.payload[6..8].fill(0);
                f
            }),
        ),
        (
            "TCP SYN",
            Box::new(|mut f| {
                f.next = 6;
                f.payload = tcp_header(0x02);
                f
            }),
        ),
        (
            "ICMPv6 echo",
            Box::new(|mut f| {
                f.next = 58;
                f.payload = icmp_echo(128);
                f
            }),
        ),
        (
            "source of the remote pod (spoofed)",
            Box::new(move |mut f| {
                f.src = q21;
                f
            }),
        ),
        (
            "link-local source",
            Box::new(move |mut f| {
                f.src = ll;
                f
            }),
        ),
        (
            "unspecified source",
            Box::new(|mut f| {
                f.src = [0; 16];
                f
            }),
        ),
        (
            "multicast source",
            Box::new(|mut f| {
                f.src = "ff02::1".parse::<Ipv6Addr>().unwrap().octets();
                f
            }),
        ),
        (
            "broadcast destination MAC",
            Box::new(|mut f| {
                f.dmac = [0xff; 6];
                f
            }),
        ),
        (
            "multicast destination MAC",
            Box::new(|mut f| {
                f.dmac = [0x33, 0x33, 0, 0, 0, 1];
                f
            }),
        ),
        (
            "traffic class 0",
            Box::new(|mut f| {
                f.traffic_class = 0;
                f
            }),
        ),
    ];
    for (what, change) in &mutations6 {
        let f = change(v6(b1, q11, q21, 32));
        add(
            format!("v6 pod → remote pod, {what}"),
            From::Pod(1, 1),
            f.bytes(),
        );
    }
    // Neighbour discovery and router messages, which never leave the link.
    for (what, ty, dst) in [
        (
            "neighbour solicitation to the gateway",
            135,
            gateway6(1).octets(),
        ),
        ("neighbour solicitation to the remote pod", 135, q21),
        (
            "router solicitation",
            133,
            "ff02::2".parse::<Ipv6Addr>().unwrap().octets(),
        ),
        ("neighbour advertisement", 136, q21),
        ("redirect", 137, q21),
    ] {
        let mut f = Ipv6Frame::icmp(b1, m11, q11, dst, ty);
        f.hop_limit = 255;
        add(format!("v6 pod → {what}"), From::Pod(1, 1), f.bytes());
    }
    for total in [1280, 1499, 1500, 1501, 3000] {
        let f = v6(b1, q11, q21, total - IPV6_LEN - 8);
        add(
            format!("v6 pod → remote pod, {total} bytes"),
            From::Pod(1, 1),
            f.bytes(),
        );
    }
    let mut tagged = v6(b1, q11, q21, 32).bytes();
    tagged.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
    add(
        "v6 pod → remote pod, VLAN 100".into(),
        From::Pod(1, 1),
        tagged,
    );
    let mut cut = v6(b1, q11, q21, 32).bytes();
    cut.truncate(ETH_LEN + 30);
    add(
        "v6 pod → remote pod, cut inside the header".into(),
        From::Pod(1, 1),
        cut,
    );

    // IPv6 from the remote node.
    let from_node6 = |dst| Ipv6Frame::udp(u1, u2, q21, dst, 32).with_udp_checksum();
    for (what, dst) in [
        ("a pod", q11),
        ("the other pod", q12),
        ("the gateway", gateway6(1).octets()),
        (
            "a pod address nobody has",
            "fd00:10:1:1::77".parse::<Ipv6Addr>().unwrap().octets(),
        ),
    ] {
        add(
            format!("v6 remote node → {what}"),
            From::Node(2),
            from_node6(dst).bytes(),
        );
    }
    for (what, change) in &mutations6 {
        let mut f = change(from_node6(q11));
        if f.dmac == b1 {
            f.dmac = u1;
        }
        add(
            format!("v6 remote node → pod, {what}"),
            From::Node(2),
            f.bytes(),
        );
    }

    // Frames for the same node's other pod, switched by the bridge, and frames from n1's
    // second pod, which has the usual MTU.
    let mut f = v4(pod_mac(1, 2), p11, p12, 32);
    f.ttl = 1;
    add(
        "v4 pod → pod of the same node, switched, TTL 1".into(),
        From::Pod(1, 1),
        f.bytes(),
    );
    let mut f = Ipv4Frame::udp(b1, pod_mac(1, 2), p12, p21, 1472);
    f.frag = 0x4000;
    add(
        "v4 second pod → remote pod, 1500 bytes".into(),
        From::Pod(1, 2),
        f.bytes(),
    );
    cases
}

/// A 20-byte TCP header with `flags`, ports 40000 → 5201.
fn tcp_header(flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&40000u16.to_be_bytes());
    h[2..4].copy_from_slice(&5201u16.to_be_bytes());
    h[4..8].copy_from_slice(&1000u32.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h
}

/// An ICMP (or `ICMPv6`) message of `ty` with eight bytes of body and a checksum over itself
/// (right for ICMP; `ICMPv6` also sums a pseudo-header, so the receiver may drop it — as it
/// does on both paths).
fn icmp_echo(ty: u8) -> Vec<u8> {
    let mut m = vec![ty, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut sum: u32 = m
        .chunks(2)
        .map(|p| u32::from(u16::from_be_bytes([p[0], p[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    m[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    m
}
