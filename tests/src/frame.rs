//! Building Ethernet + IPv4 frames for program tests and traffic generators, and checking
//! IPv4 header checksums from scratch.

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
