//! Raw `AF_PACKET` sockets: sending a frame from a namespace, capturing what arrives.

use super::*;

/// An `AF_PACKET` socket on interface `dev` of namespace `netns`, for every protocol,
/// non-blocking.
pub(super) fn packet_socket(netns: &str, dev: &str) -> OwnedFd {
    let (netns, dev) = (netns.to_owned(), dev.to_owned());
    std::thread::spawn(move || {
        hostgw_agent::netns::enter(&netns).unwrap_or_else(|e| panic!("entering {netns}: {e}"));
        let all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(all),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket in {netns}: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(dev.clone()).unwrap();
        // SAFETY: a NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(ifindex > 0, "no {dev} in {netns}");
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = all;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "binding to {dev} in {netns}: {}",
            std::io::Error::last_os_error()
        );
        fd
    })
    .join()
    .expect("the socket thread panicked")
}

pub(super) fn send(fd: &OwnedFd, frame: &[u8], what: &str) {
    // SAFETY: `frame` is valid for its length; the socket is bound to its interface.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(
        n,
        frame.len() as isize,
        "{what}: sending {} bytes: {}",
        frame.len(),
        std::io::Error::last_os_error()
    );
}

/// Everything that arrives on the `points` for `at_least`, then until none has for [`QUIET`]
/// (at most [`AT_MOST`] more), normalised; frames a point sent itself and link-local chatter
/// are left out.
pub(super) fn drain(points: &[(String, OwnedFd)], at_least: Duration) -> Vec<(String, Vec<u8>)> {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < at_least
        || (last.elapsed() < QUIET && start.elapsed() < at_least + AT_MOST)
    {
        let mut any = false;
        for (point, fd) in points {
            loop {
                // SAFETY: an all-zero sockaddr_ll is valid for recvfrom to fill.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = size_of::<libc::sockaddr_ll>() as u32;
                // SAFETY: `buf` and `from` are valid for the sizes passed.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&raw mut from).cast(),
                        &raw mut len,
                    )
                };
                if n < 0 {
                    break;
                }
                any = true;
                let frame = &buf[..n as usize];
                if from.sll_pkttype != libc::PACKET_OUTGOING && !chatter(frame) {
                    got.push((point.clone(), normalise(frame)));
                }
            }
        }
        if any {
            last = Instant::now();
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    got
}

/// ARP, IGMP, neighbour discovery and MLD: timers', not the corpus's.
fn chatter(frame: &[u8]) -> bool {
    let ethertype = frame.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]]));
    match ethertype {
        Some(0x0806) => true,
        Some(0x0800) => frame.get(ETH_LEN + 9) == Some(&2),
        Some(0x86dd) => {
            frame.get(ETH_LEN + 6) == Some(&58)
                && frame
                    .get(ETH_LEN + IPV6_LEN)
                    .is_some_and(|t| matches!(t, 130..=137 | 143))
                || frame.get(ETH_LEN + 6) == Some(&0)
                    && frame.get(ETH_LEN + 24) == Some(&0xff)
                    && frame.get(ETH_LEN + 25) == Some(&0x02)
        }
        _ => false,
    }
}

pub(super) fn is_icmp_error(frame: &[u8]) -> bool {
    match frame.get(12..14).map(|t| u16::from_be_bytes([t[0], t[1]])) {
        Some(0x0800) => {
            frame.get(ETH_LEN + 9) == Some(&1)
                && frame
                    .get(ETH_LEN + usize::from(frame[ETH_LEN] & 0x0f) * 4)
                    .is_some_and(|t| matches!(t, 3 | 5 | 11 | 12))
        }
        Some(0x86dd) => {
            frame.get(ETH_LEN + 6) == Some(&58)
                && frame
                    .get(ETH_LEN + IPV6_LEN)
                    .is_some_and(|t| (1..=4).contains(t))
        }
        _ => false,
    }
}

/// The IPv4 identification of an ICMP message (an error, an echo reply) is the sending
/// kernel's choice, different in each lab: zeroed, with the header checksum replaced by
/// whether it was right (a forwarded packet's checksum must be right on both paths or wrong
/// on both).
fn normalise(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let icmp = f.get(12..14) == Some(&[0x08, 0x00]) && f.get(ETH_LEN + 9) == Some(&1);
    if icmp && f.len() >= ETH_LEN + 20 {
        let stored = [f[ETH_LEN + 10], f[ETH_LEN + 11]];
        let mut fixed = f.clone();
        fix_checksum(&mut fixed);
        let right = fixed[ETH_LEN + 10..ETH_LEN + 12] == stored;
        f[ETH_LEN + 4..ETH_LEN + 6].fill(0);
        f[ETH_LEN + 10] = u8::from(right);
        f[ETH_LEN + 11] = 0;
    }
    f
}
