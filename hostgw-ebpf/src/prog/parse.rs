//! Bounds-checked access to a frame's headers, shared by the TC and XDP programs.
//!
//! [`Hook`] is what a program's context offers (packet bounds, lengths, helpers that differ
//! between skb and XDP); [`family`] tells which path a frame takes, and [`ipv4`] and [`ipv6`]
//! read and check the headers the forwarding decision needs.

use core::mem::size_of;

use hostgw_common::counters::{family, reason};

/// Ethernet header length.
pub const ETH_LEN: usize = 14;
/// IPv4 header length without options.
pub const IPV4_LEN: usize = 20;
/// IPv6 header length (the fixed header; extension headers follow it).
pub const IPV6_LEN: usize = 40;
/// `EtherType` of IPv4 in network byte order, as read from the frame on a little-endian target.
pub const ETH_P_IP: [u8; 2] = [0x08, 0x00];
/// `EtherType` of IPv6 in network byte order.
pub const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
/// IPv6 next header values the fast path parses fully: TCP, UDP, `ICMPv6`.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
/// The IPv6 fragment header.
const IPPROTO_FRAGMENT: u8 = 44;

/// What differs between a TC (skb) and an XDP context.
pub trait Hook {
    /// Start of the linear packet data.
    fn data(&self) -> usize;
    /// End of the linear packet data.
    fn data_end(&self) -> usize;
    /// Length of the packet on the wire as the kernel accounts it (skb->len, which for GSO
    /// packets is the length of the whole super-packet).
    fn len(&self) -> u32;
    /// The interface the packet arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// Whether the VLAN tag was taken out of the frame into metadata.
    fn vlan_present(&self) -> bool;
    /// The payload size of each segment of a GSO super-packet, or 0 when the packet is not
    /// one (a GSO packet's length is not its segments' wire size).
    fn gso_size(&self) -> u32;
    /// Whether an IP packet of `l3_len` bytes fits the MTU of `ifindex`, as the kernel would
    /// find on transmit.
    fn fits_mtu(&self, ifindex: u32, l3_len: u32) -> bool;
    /// Tells the packet's checksum state that the 32-bit word `from` (at an even offset of
    /// the network header) is now `to`: an skb with `CHECKSUM_COMPLETE` carries the sum of
    /// its bytes, which must follow what the program wrote, as the kernel's `ip6_forward`
    /// keeps it with `skb_postpull_rcsum`. Nothing for a raw frame.
    fn csum_changed(&self, from: [u8; 4], to: [u8; 4]);

    /// A pointer to a `T` at `offset`, when all of it lies inside the linear data.
    #[inline(always)]
    fn ptr_at<T>(&self, offset: usize) -> Option<*mut T> {
        let start = self.data();
        if start + offset + size_of::<T>() > self.data_end() {
            return None;
        }
        Some((start + offset) as *mut T)
    }
}

/// The fields of an Ethernet + IPv4 header that the forwarding decision reads.
#[derive(Clone, Copy)]
pub struct Ipv4 {
    pub tos: u8,
    pub ttl: u8,
    pub proto: u8,
    /// Total length from the header.
    pub tot_len: u16,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

/// The fields of an Ethernet + IPv6 header that the forwarding decision reads.
#[derive(Clone, Copy)]
pub struct Ipv6 {
    /// Traffic class and flow label as stored (the first 32-bit word without the version), in
    /// network byte order: what `bpf_fib_lookup` wants as `flowinfo`.
    pub flowinfo: [u8; 4],
    /// Payload length from the header (everything after the 40-byte header).
    pub payload_len: u16,
    /// Next header: TCP, UDP or `ICMPv6` here, the others never get this far.
    pub next: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

/// Why a frame is not a plain unicast packet the fast path may forward. Each maps to one
/// `PASS_*` reason.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    Malformed,
    NotIp,
    Multicast,
    NotRouted,
    Options,
    Fragment,
    /// Traffic the kernel never forwards: IPv6 neighbour discovery, and packets from or to a
    /// link-local, unspecified or loopback address or from a multicast one.
    NotForwarded,
}

impl Unfit {
    /// The pass reason counted for it.
    #[inline(always)]
    pub fn reason(self) -> u32 {
        match self {
            Self::Malformed => reason::PASS_MALFORMED,
            Self::NotIp => reason::PASS_NOT_IP,
            Self::Multicast => reason::PASS_MULTICAST,
            Self::NotRouted => reason::PASS_NOT_ROUTED,
            Self::Options => reason::PASS_IP_OPTIONS,
            Self::Fragment => reason::PASS_FRAGMENT,
            Self::NotForwarded => reason::PASS_NOT_FWDED,
        }
    }
}

/// Which counter family, and so which path, a frame belongs to: by its `EtherType`, with
/// VLAN-tagged frames and frames shorter than an Ethernet header under `OTHER`.
#[inline(always)]
pub fn family<H: Hook>(h: &H) -> u32 {
    let Some(ethertype) = h.ptr_at::<[u8; 2]>(12) else {
        return family::OTHER;
    };
    if h.vlan_present() {
        return family::OTHER;
    }
    // SAFETY: `ptr_at` checked both bytes lie inside the packet.
    match unsafe { *ethertype } {
        ETH_P_IP => family::IPV4,
        ETH_P_IPV6 => family::IPV6,
        _ => family::OTHER,
    }
}

/// The pass reason of a frame of family `OTHER`: the Ethernet checks' answer, else not IP.
#[inline(always)]
pub fn other<H: Hook>(h: &H, router_mac: &[u8; 6]) -> u32 {
    match ethernet(h, router_mac) {
        Ok(_) => reason::PASS_NOT_IP,
        Err(u) => u.reason(),
    }
}

/// Checks the Ethernet header of a frame that must be addressed to `router_mac` and returns
/// its `EtherType`.
#[inline(always)]
fn ethernet<H: Hook>(h: &H, router_mac: &[u8; 6]) -> Result<[u8; 2], Unfit> {
    let eth: *const [u8; ETH_LEN] = h.ptr_at(0).ok_or(Unfit::Malformed)?;
    // SAFETY: `ptr_at` checked that the whole header lies inside the packet.
    let eth = unsafe { *eth };
    if h.vlan_present() {
        return Err(Unfit::NotIp);
    }
    if eth[0] & 1 != 0 {
        return Err(Unfit::Multicast);
    }
    if eth[0..6] != router_mac[..] {
        return Err(Unfit::NotRouted);
    }
    Ok([eth[12], eth[13]])
}

/// Refuses an IP frame with a multicast or all-zero source MAC: the bridge drops such a frame,
/// so the stack decides.
#[inline(always)]
fn valid_source<H: Hook>(h: &H) -> Result<(), Unfit> {
    let smac: *const [u8; 6] = h.ptr_at(6).ok_or(Unfit::Malformed)?;
    // SAFETY: `ptr_at` checked the six bytes lie inside the packet.
    let smac = unsafe { *smac };
    if smac[0] & 1 != 0 || smac == [0; 6] {
        return Err(Unfit::Malformed);
    }
    Ok(())
}

/// The length of the L3 packets that will leave: `len` (the packet's own), or for a GSO packet
/// that of each segment (`l3_hdr` + L4 header at `l4_off` + `gso_size`). `None` for a GSO
/// packet whose L4 header this does not read (neither TCP nor UDP).
#[inline(always)]
fn leaving_len<H: Hook>(h: &H, len: u32, proto: u8, l4_off: usize, l3_hdr: u32) -> Option<u32> {
    let gso = h.gso_size();
    if gso == 0 {
        return Some(len);
    }
    let l4 = match proto {
        // TCP: the data offset, in 32-bit words, is the high nibble of byte 12.
        IPPROTO_TCP => {
            let off: *const u8 = h.ptr_at(l4_off + 12)?;
            // SAFETY: `ptr_at` checked the byte lies inside the packet.
            u32::from(unsafe { *off } >> 4) * 4
        }
        IPPROTO_UDP => 8,
        _ => return None,
    };
    Some(l3_hdr + l4 + gso)
}

/// The IPv4 length of the packets that will leave: the packet's own, or for a GSO packet that
/// of each segment (IP header + L4 header + `gso_size`). `None` for a GSO packet whose L4
/// header this does not read (neither TCP nor UDP).
#[inline(always)]
pub fn segment_len<H: Hook>(h: &H, ip: &Ipv4) -> Option<u32> {
    leaving_len(
        h,
        u32::from(ip.tot_len),
        ip.proto,
        ETH_LEN + IPV4_LEN,
        IPV4_LEN as u32,
    )
}

/// [`segment_len`] for IPv6: 40 + payload length, or per GSO segment 40 + L4 header +
/// `gso_size`.
#[inline(always)]
pub fn segment_len_v6<H: Hook>(h: &H, ip: &Ipv6) -> Option<u32> {
    leaving_len(
        h,
        IPV6_LEN as u32 + u32::from(ip.payload_len),
        ip.next,
        ETH_LEN + IPV6_LEN,
        IPV6_LEN as u32,
    )
}

/// Reads and checks the Ethernet and IPv4 headers of a frame that must be addressed to
/// `router_mac`. Nothing is written.
#[inline(always)]
pub fn ipv4<H: Hook>(h: &H, router_mac: &[u8; 6]) -> Result<Ipv4, Unfit> {
    if ethernet(h, router_mac)? != ETH_P_IP {
        return Err(Unfit::NotIp);
    }
    valid_source(h)?;

    let ip: *const [u8; IPV4_LEN] = h.ptr_at(ETH_LEN).ok_or(Unfit::Malformed)?;
    // SAFETY: as above.
    let ip = unsafe { *ip };
    let version = ip[0] >> 4;
    let ihl = ip[0] & 0x0f;
    if version != 4 || ihl < 5 {
        return Err(Unfit::Malformed);
    }
    if ihl > 5 {
        return Err(Unfit::Options);
    }
    let tot_len = u16::from_be_bytes([ip[2], ip[3]]);
    if usize::from(tot_len) < IPV4_LEN || ETH_LEN as u32 + u32::from(tot_len) > h.len() {
        return Err(Unfit::Malformed);
    }
    if checksum_fold(&ip) != 0xffff {
        return Err(Unfit::Malformed);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    // More-fragments flag or a fragment offset.
    if frag & 0x3fff != 0 {
        return Err(Unfit::Fragment);
    }
    // Multicast, reserved and the limited broadcast address: 224.0.0.0 and up.
    if ip[16] >= 224 {
        return Err(Unfit::Multicast);
    }
    Ok(Ipv4 {
        tos: ip[1],
        ttl: ip[8],
        proto: ip[9],
        tot_len,
        src: [ip[12], ip[13], ip[14], ip[15]],
        dst: [ip[16], ip[17], ip[18], ip[19]],
    })
}

/// Reads and checks the Ethernet and IPv6 headers of a frame that must be addressed to
/// `router_mac`, in the order the kernel's `ipv6_rcv` and routing do. Only packets whose next
/// header is TCP, UDP or `ICMPv6` (other than neighbour discovery) between unicast addresses of
/// global scope get through; every extension header is left to the stack. Nothing is written.
#[inline(always)]
pub fn ipv6<H: Hook>(h: &H, router_mac: &[u8; 6]) -> Result<Ipv6, Unfit> {
    if ethernet(h, router_mac)? != ETH_P_IPV6 {
        return Err(Unfit::NotIp);
    }
    valid_source(h)?;
    let ip: *const [u8; IPV6_LEN] = h.ptr_at(ETH_LEN).ok_or(Unfit::Malformed)?;
    // SAFETY: `ptr_at` checked that the whole header lies inside the packet. Read in place:
    // a copy would cost stack the IPv6 path does not have to spare.
    let ip = unsafe { &*ip };
    if ip[0] >> 4 != 6 {
        return Err(Unfit::Malformed);
    }
    let payload_len = u16::from_be_bytes([ip[4], ip[5]]);
    // What follows the payload is link padding, as for IPv4; a jumbogram (payload length 0)
    // carries a hop-by-hop header and is passed below.
    if (ETH_LEN + IPV6_LEN) as u32 + u32::from(payload_len) > h.len() {
        return Err(Unfit::Malformed);
    }
    let src: [u8; 16] = ip[8..24].try_into().map_err(|_| Unfit::Malformed)?;
    let dst: [u8; 16] = ip[24..40].try_into().map_err(|_| Unfit::Malformed)?;
    if dst[0] == 0xff {
        return Err(Unfit::Multicast);
    }
    if !global_unicast(&src) || !global_unicast(&dst) {
        return Err(Unfit::NotForwarded);
    }
    let next = ip[6];
    match next {
        IPPROTO_TCP | IPPROTO_UDP => {}
        IPPROTO_ICMPV6 => {
            let ty: *const u8 = h.ptr_at(ETH_LEN + IPV6_LEN).ok_or(Unfit::Malformed)?;
            // SAFETY: `ptr_at` checked the byte lies inside the packet.
            let ty = unsafe { *ty };
            // Router and neighbour solicitations and advertisements, redirects: link-local
            // business of the stack, never forwarded whatever their addresses.
            if (133..=137).contains(&ty) {
                return Err(Unfit::NotForwarded);
            }
        }
        IPPROTO_FRAGMENT => return Err(Unfit::Fragment),
        _ => return Err(Unfit::Options),
    }
    Ok(Ipv6 {
        flowinfo: [ip[0] & 0x0f, ip[1], ip[2], ip[3]],
        payload_len,
        next,
        hop_limit: ip[7],
        src,
        dst,
    })
}

/// Whether `a` is neither unspecified (`::`), loopback (`::1`), link-local (`fe80::/10`) nor
/// multicast (`ff00::/8`): an address the kernel may forward from or to.
#[inline(always)]
fn global_unicast(a: &[u8; 16]) -> bool {
    if a[0] == 0xff || (a[0] == 0xfe && a[1] & 0xc0 == 0x80) {
        return false;
    }
    let mut high = 0u8;
    let mut i = 0;
    while i < 15 {
        high |= a[i];
        i += 1;
    }
    // `::` and `::1`.
    !(high == 0 && a[15] <= 1)
}

/// The ones' complement sum of an IPv4 header, folded to 16 bits; `0xffff` when the checksum
/// is right.
#[inline(always)]
fn checksum_fold(ip: &[u8; IPV4_LEN]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < IPV4_LEN {
        sum += u32::from(u16::from_be_bytes([ip[i], ip[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Rewrites a checked IPv4 frame for the next hop: new MAC addresses (unless `macs` is `None`,
/// when the kernel fills them in), TTL − 1 and the header checksum updated incrementally as
/// the kernel's `ip_decrease_ttl` does. Returns `false`, having written nothing, if the headers
/// are no longer inside the packet.
#[inline(always)]
pub fn rewrite_v4<H: Hook>(h: &H, macs: Option<(&[u8; 6], &[u8; 6])>) -> bool {
    let Some(eth) = h.ptr_at::<[u8; ETH_LEN]>(0) else {
        return false;
    };
    let Some(ip) = h.ptr_at::<[u8; IPV4_LEN]>(ETH_LEN) else {
        return false;
    };
    // SAFETY: both pointers were bounds-checked against the packet just above, they do not
    // overlap, and the hook allows writing packet data.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    if let Some((dst, src)) = macs {
        eth[0..6].copy_from_slice(dst);
        eth[6..12].copy_from_slice(src);
    }
    {
        // TTL is the high byte of the 16-bit word it shares with the protocol: adding
        // htons(0x0100) to the stored checksum, with the end-around carry, makes up for
        // subtracting 1 from the TTL. Same arithmetic, same bytes as the kernel's.
        let check = u32::from(u16::from_ne_bytes([ip[10], ip[11]])) + u32::from(0x0100_u16.to_be());
        let check = (check + u32::from(check >= 0xffff)) as u16;
        ip[10..12].copy_from_slice(&check.to_ne_bytes());
        ip[8] -= 1;
    }
    true
}

/// Rewrites a checked IPv6 frame for the next hop: new MAC addresses (unless `macs` is `None`,
/// when the kernel fills them in) and hop limit − 1. IPv6 has no header checksum and the L4
/// checksums do not cover the hop limit, but an skb's `CHECKSUM_COMPLETE` sum (from NICs
/// such as mlx5) does, and is updated with it. Returns `false`, having written nothing, if
/// the headers are no longer inside the packet.
#[inline(always)]
pub fn rewrite_v6<H: Hook>(h: &H, macs: Option<(&[u8; 6], &[u8; 6])>) -> bool {
    let Some(eth) = h.ptr_at::<[u8; ETH_LEN]>(0) else {
        return false;
    };
    let Some(ip) = h.ptr_at::<[u8; IPV6_LEN]>(ETH_LEN) else {
        return false;
    };
    // SAFETY: both pointers were bounds-checked against the packet just above, they do not
    // overlap, and the hook allows writing packet data.
    let (eth, ip) = unsafe { (&mut *eth, &mut *ip) };
    if let Some((dst, src)) = macs {
        eth[0..6].copy_from_slice(dst);
        eth[6..12].copy_from_slice(src);
    }
    // The hop limit ends the 32-bit word at offset 4 (payload length, next header).
    let from = [ip[4], ip[5], ip[6], ip[7]];
    ip[7] -= 1;
    h.csum_changed(from, [ip[4], ip[5], ip[6], ip[7]]);
    true
}
