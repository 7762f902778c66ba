//! Whether the node has xfrm (`IPsec`) policies: the kernel applies them to forwarded packets
//! (the `fwd` policies on the way in, the `out` policies on the way out), which the FIB lookup
//! the programs can make does not. Read-only, from the current network namespace.

use std::io;

use rtnetlink::sys::{Socket, SocketAddr};

const NETLINK_XFRM: isize = 6;
const XFRM_MSG_NEWPOLICY: u16 = 0x13;
const XFRM_MSG_GETPOLICY: u16 = 0x15;
/// `XFRMNLGRP_POLICY`: policies added, changed and deleted.
const XFRMNLGRP_POLICY: u32 = 4;
/// `struct xfrm_userpolicy_id`, all zero: the body `ip xfrm policy list` sends.
const POLICY_ID_LEN: usize = 64;

/// The number of xfrm policies (both families, every direction).
pub fn policies() -> io::Result<usize> {
    let mut count = 0;
    match super::dump::dump(
        NETLINK_XFRM,
        XFRM_MSG_GETPOLICY,
        &[0; POLICY_ID_LEN],
        |kind, _| {
            if kind == XFRM_MSG_NEWPOLICY {
                count += 1;
            }
        },
    ) {
        // A kernel without xfrm_user has no policies either that anyone could have set.
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => Ok(0),
        other => other.map(|()| count),
    }
}

/// Calls `changed` after every xfrm policy change in the current network namespace, from a
/// thread of its own, for as long as the process runs; nothing on a kernel without xfrm.
pub fn watch(changed: impl Fn() + Send + 'static) -> io::Result<()> {
    let mut socket = match Socket::new(NETLINK_XFRM) {
        Err(e) if e.raw_os_error() == Some(libc::EPROTONOSUPPORT) => return Ok(()),
        other => other?,
    };
    socket.bind(&SocketAddr::new(0, 0))?;
    socket.add_membership(XFRMNLGRP_POLICY)?;
    std::thread::Builder::new()
        .name("xfrm-watch".into())
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match socket.recv(&mut &mut buf[..], 0) {
                    Ok(_) => changed(),
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed(),
                    Err(error) => {
                        tracing::warn!(%error, "xfrm notifications stopped");
                        return;
                    }
                }
            }
        })?;
    Ok(())
}
