//! A netlink dump over a raw socket, for the families rtnetlink does not speak (nftables,
//! xfrm): send one `NLM_F_DUMP` request, hand each reply to the caller, stop at `NLMSG_DONE`.

use std::io;

use rtnetlink::sys::{Socket, SocketAddr};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// Dumps message type `kind` of netlink `protocol` with `body` after the header, calling
/// `each(type, message)` for every reply (`message` starts with its header). Socket
/// errors and an `NLMSG_ERROR` reply are errors.
pub fn dump(
    protocol: isize,
    kind: u16,
    body: &[u8],
    mut each: impl FnMut(u16, &[u8]),
) -> io::Result<()> {
    let mut socket = Socket::new(protocol)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let len = HEADER_LEN + body.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    req.extend_from_slice(body);
    socket.send(&req, 0)?;

    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut msgs = &buf[..n];
        while msgs.len() >= HEADER_LEN {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if len < HEADER_LEN || len > msgs.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink message",
                ));
            }
            match kind {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(msgs[16..20].try_into().unwrap_or_default());
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                k => each(k, &msgs[..len]),
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}
