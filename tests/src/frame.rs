//! Building Ethernet + IPv4 and Ethernet + IPv6 frames for program tests and traffic
//! generators, and checking IPv4 header checksums from scratch.

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// Offset of the IPv4 header in a frame.
pub const IP: usize = ETH_LEN;

/// An Ethernet frame carrying IPv4 (or, with another `ethertype`, whatever the bytes say).
/// Every field has a plain default; tests change what they need.
#[derive(Debug, Clone)]
pub struct Ipv4Frame {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub ethertype: u16,
    /// Version (high nibble) and IHL (low nibble); `None` derives `0x45` plus options.
    pub ver_ihl: Option<u8>,
    pub tos: u8,
    /// Total length; `None` derives it from the header, options and payload.
    pub tot_len: Option<u16>,
    pub id: u16,
    /// Flags and fragment offset (`0x4000` is DF).
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// IPv4 options, a multiple of 4 bytes.
    pub options: Vec<u8>,
    /// Everything after the IPv4 header (an L4 header and data).
    pub payload: Vec<u8>,
    /// Store a wrong header checksum.
    pub bad_checksum: bool,
}

impl Ipv4Frame {
    /// A UDP packet from `src` to `dst` with DF set, TTL 64 and `data` bytes of data.
    pub fn udp(dmac: [u8; 6], smac: [u8; 6], src: [u8; 4], dst: [u8; 4], data: usize) -> Self {
        let mut payload = vec![0u8; 8 + data];
        payload[0..2].copy_from_slice(&40000u16.to_be_bytes());
        payload[2..4].copy_from_slice(&5201u16.to_be_bytes());
        payload[4..6].copy_from_slice(&((8 + data) as u16).to_be_bytes());
        for (i, b) in payload[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        Self {
            dmac,
            smac,
            ethertype: 0x0800,
            ver_ihl: None,
            tos: 0,
            tot_len: None,
            id: 0x1234,
            frag: 0x4000,
            ttl: 64,
            proto: 17,
            src,
            dst,
            options: Vec::new(),
            payload,
            bad_checksum: false,
        }
    }

    /// The frame's bytes, with a correct header checksum unless `bad_checksum`.
    pub fn bytes(&self) -> Vec<u8> {
        let ihl_bytes = 20 + self.options.len();
        let mut f = Vec::with_capacity(ETH_LEN + ihl_bytes + self.payload.len());
        f.extend_from_slice(&self.dmac);
        f.extend_from_slice(&self.smac);
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        let ver_ihl = self.ver_ihl.unwrap_or(0x40 | (ihl_bytes / 4) as u8);
        let tot_len = self
            .tot_len
            .unwrap_or((ihl_bytes + self.payload.len()) as u16);
        f.push(ver_ihl);
        f.push(self.tos);
        f.extend_from_slice(&tot_len.to_be_bytes());
        f.extend_from_slice(&self.id.to_be_bytes());
        f.extend_from_slice(&self.frag.to_be_bytes());
        f.push(self.ttl);
        f.push(self.proto);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&self.src);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.options);
        let mut check = ipv4_checksum(&f[IP..IP + ihl_bytes]);
        if self.bad_checksum {
            check ^= 0x5a5a;
        }
        f[IP + 10..IP + 12].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&self.payload);
        f
    }
}

/// IPv6 header length (without extension headers).
pub const IPV6_LEN: usize = 40;

/// An Ethernet frame carrying IPv6 (or, with another `ethertype`, whatever the bytes say).
/// Every field has a plain default; tests change what they need.
#[derive(Debug, Clone)]
pub struct Ipv6Frame {
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    pub ethertype: u16,
    /// The version nibble (6).
    pub version: u8,
    pub traffic_class: u8,
    /// The flow label (20 bits).
    pub flow_label: u32,
    /// Payload length; `None` derives it from the extension headers and payload.
    pub payload_len: Option<u16>,
    /// Next header of the fixed header.
    pub next: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Extension headers between the fixed header and `payload`, as bytes.
    pub ext: Vec<u8>,
    /// The upper-layer header and data.
    pub payload: Vec<u8>,
}

impl Ipv6Frame {
    /// A UDP packet from `src` to `dst` with hop limit 64, a non-zero traffic class and flow
    /// label, and `data` bytes of data.
    pub fn udp(dmac: [u8; 6], smac: [u8; 6], src: [u8; 16], dst: [u8; 16], data: usize) -> Self {
        let mut payload = vec![0u8; 8 + data];
        payload[0..2].copy_from_slice(&40000u16.to_be_bytes());
        payload[2..4].copy_from_slice(&5201u16.to_be_bytes());
        payload[4..6].copy_from_slice(&((8 + data) as u16).to_be_bytes());
        payload[6..8].copy_from_slice(&0x5a5au16.to_be_bytes());
        for (i, b) in payload[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        Self {
            dmac,
            smac,
            ethertype: 0x86dd,
            version: 6,
            traffic_class: 0x28,
            flow_label: 0x0_beef,
            payload_len: None,
            next: 17,
            hop_limit: 64,
            src,
            dst,
            ext: Vec::new(),
            payload,
        }
    }

    /// An `ICMPv6` message of `ty` (code 0, eight bytes of body) from `src` to `dst`.
    pub fn icmp(dmac: [u8; 6], smac: [u8; 6], src: [u8; 16], dst: [u8; 16], ty: u8) -> Self {
        let mut f = Self::udp(dmac, smac, src, dst, 0);
        f.next = 58;
        f.payload = vec![ty, 0, 0x12, 0x34, 0, 1, 0, 1];
        f
    }

    /// Puts an eight-byte extension header of `kind` (hop-by-hop, routing, fragment,
    /// destination options, ...) in front of the payload, chained to the current next header.
    #[must_use]
    pub fn with_extension(mut self, kind: u8) -> Self {
        let mut header = vec![self.next, 0, 0, 0, 0, 0, 0, 0];
        if kind == 44 {
            // Fragment header: offset 0 with more fragments, an identification.
            header[3] = 1;
            header[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        } else {
            // Hdr Ext Len 0 (eight bytes), options area filled with a PadN option.
            header[2] = 1;
            header[3] = 4;
        }
        header.extend_from_slice(&self.ext);
        self.ext = header;
        self.next = kind;
        self
    }

    /// The frame with a correct UDP checksum in its payload (a UDP header right after the
    /// fixed header). IPv6 makes the UDP checksum mandatory: conntrack marks a datagram with a
    /// wrong one invalid.
    #[must_use]
    pub fn with_udp_checksum(mut self) -> Self {
        assert!(
            self.next == 17 && self.ext.is_empty() && self.payload.len() >= 8,
            "not a plain UDP packet"
        );
        self.payload[6..8].fill(0);
        let sum = ones_complement_sum(&pseudo_header_v6(&self.src, &self.dst, 17, &self.payload));
        // A computed zero is sent as all ones (RFC 8200 §8.1).
        let check = match !sum {
            0 => 0xffff,
            c => c,
        };
        self.payload[6..8].copy_from_slice(&check.to_be_bytes());
        self
    }

    /// The frame's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let len = self.ext.len() + self.payload.len();
        let mut f = Vec::with_capacity(ETH_LEN + IPV6_LEN + len);
        f.extend_from_slice(&self.dmac);
        f.extend_from_slice(&self.smac);
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        let word = (u32::from(self.version) << 28)
            | (u32::from(self.traffic_class) << 20)
            | (self.flow_label & 0x000f_ffff);
        f.extend_from_slice(&word.to_be_bytes());
        f.extend_from_slice(&self.payload_len.unwrap_or(len as u16).to_be_bytes());
        f.push(self.next);
        f.push(self.hop_limit);
        f.extend_from_slice(&self.src);
        f.extend_from_slice(&self.dst);
        f.extend_from_slice(&self.ext);
        f.extend_from_slice(&self.payload);
        f
    }
}

/// The IPv6 pseudo-header (RFC 8200 §8.1) of an upper-layer `segment`, followed by it.
fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next: u8, segment: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + segment.len());
    v.extend_from_slice(src);
    v.extend_from_slice(dst);
    v.extend_from_slice(&(segment.len() as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, next]);
    v.extend_from_slice(segment);
    v
}

/// The 16-bit ones' complement sum of `data` (RFC 1071), an odd last byte padded with zero.
fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|p| u32::from(u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum an IPv4 header must carry, computed from scratch (the checksum field itself is
/// taken as zero).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, pair) in header.chunks(2).enumerate() {
        if i == 5 {
            continue;
        }
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Rewrites the IPv4 header checksum of `frame` (with a header of `ihl` 32-bit words) to the
/// correct value, if the header is all there.
pub fn fix_checksum(frame: &mut [u8]) {
    if frame.len() < IP + 20 {
        return;
    }
    let ihl = usize::from(frame[IP] & 0x0f) * 4;
    if ihl < 20 || frame.len() < IP + ihl {
        return;
    }
    let check = ipv4_checksum(&frame[IP..IP + ihl]);
    frame[IP + 10..IP + 12].copy_from_slice(&check.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_a_known_header() {
        // The example header of RFC 1071's usual illustration (checksum 0xb861).
        let header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&header), 0xb861);
    }

    #[test]
    fn ipv6_udp_checksum_verifies() {
        let src = [0xfd, 0, 0, 0x10, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2];
        let dst = [0xfd, 0, 0, 0x10, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2];
        for data in [0, 1, 17, 1400] {
            let f = Ipv6Frame::udp([2; 6], [4; 6], src, dst, data).with_udp_checksum();
            let bytes = f.bytes();
            let segment = &bytes[ETH_LEN + IPV6_LEN..];
            assert_ne!(
                segment[6..8],
                [0, 0],
                "a zero UDP checksum is not allowed in IPv6"
            );
            // A receiver's check: the sum over pseudo-header and segment, checksum included.
            let sum = ones_complement_sum(&pseudo_header_v6(&src, &dst, 17, segment));
            assert_eq!(sum, 0xffff, "{data} bytes of data");
            // And a changed byte breaks it.
            let mut bad = segment.to_vec();
            *bad.last_mut().unwrap() ^= 0x40;
            assert_ne!(
                ones_complement_sum(&pseudo_header_v6(&src, &dst, 17, &bad)),
                0xffff
            );
        }
    }

    #[test]
    fn ipv6_frames_are_laid_out_as_the_rfc_says() {
        let src = [0xfd, 0, 0, 0x10, 0, 1, 0, 0x79, 0, 0, 0, 0, 0, 0, 0, 3];
        let dst = [0xfd, 0, 0, 0x10, 0, 1, 0, 0x27, 0, 0, 0, 0, 0, 0, 0, 4];
        let f = Ipv6Frame::udp([2; 6], [4; 6], src, dst, 10);
        let b = f.bytes();
        assert_eq!(b.len(), 14 + 40 + 8 + 10);
        assert_eq!(b[12..14], [0x86, 0xdd]);
        // Version 6, traffic class 0x28, flow label 0x0beef.
        assert_eq!(b[14..18], [0x62, 0x80, 0xbe, 0xef]);
        assert_eq!(u16::from_be_bytes([b[18], b[19]]), 18);
        assert_eq!((b[20], b[21]), (17, 64));
        assert_eq!(b[22..38], src);
        assert_eq!(b[38..54], dst);
        let e = f.with_extension(0).with_extension(44).bytes();
        assert_eq!(u16::from_be_bytes([e[18], e[19]]), 16 + 18);
        assert_eq!(e[20], 44, "outermost header first");
        assert_eq!(e[54], 0, "fragment header chains to hop-by-hop");
        assert_eq!(e[62], 17, "hop-by-hop chains to UDP");
    }

    #[test]
    fn built_frames_carry_a_valid_checksum() {
        let f = Ipv4Frame::udp([2; 6], [4; 6], [10, 1, 79, 3], [10, 1, 27, 4], 10).bytes();
        assert_eq!(f.len(), 14 + 20 + 8 + 10);
        let stored = u16::from_be_bytes([f[24], f[25]]);
        assert_eq!(stored, ipv4_checksum(&f[14..34]));
        let mut bad = Ipv4Frame::udp([2; 6], [4; 6], [10, 1, 79, 3], [10, 1, 27, 4], 10);
        bad.bad_checksum = true;
        let b = bad.bytes();
        assert_ne!(
            u16::from_be_bytes([b[24], b[25]]),
            ipv4_checksum(&b[14..34])
        );
    }
}
