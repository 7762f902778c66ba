//! Two netlink queries the benchmark makes many times a second, done in-process rather than by
//! spawning `ip`: the IPv4 routes of one protocol in a namespace (route dump), and the NAPI
//! instances of an interface with the process ids of their threads (the generic netlink
//! `netdev` family's `napi-get`).
//!
//! A socket is opened from a thread that entered the namespace; it stays bound to that
//! namespace for its life, so the queries then run from any thread.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// A failed netlink exchange.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be made or used.
    #[error("netlink socket: {what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The namespace could not be entered.
    #[error("entering network namespace {netns}")]
    Netns {
        netns: String,
        #[source]
        source: hostgw_agent::netns::NetnsError,
    },
    /// The kernel answered with an error.
    #[error("netlink request {what} failed: errno {errno}")]
    Kernel { what: &'static str, errno: i32 },
    /// The kernel has no generic netlink family of that name.
    #[error("the kernel has no generic netlink family {0:?}")]
    NoFamily(&'static str),
}

const NETLINK_ROUTE: i32 = 0;
const NETLINK_GENERIC: i32 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `NETDEV_CMD_NAPI_GET` of `include/uapi/linux/netdev.h`. The answer is checked against the
/// thread's name (`napi/<dev>-<id>`), so a different numbering fails loudly rather than
/// pinning the wrong thread.
const NETDEV_CMD_NAPI_GET: u8 = 11;
const NETDEV_A_NAPI_IFINDEX: u16 = 1;
const NETDEV_A_NAPI_ID: u16 = 2;
const NETDEV_A_NAPI_PID: u16 = 4;

/// A netlink socket bound to one network namespace.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

/// An IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub protocol: u8,
}

/// One NAPI instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Napi {
    pub id: u32,
    /// Its kernel thread, when threaded NAPI is on.
    pub pid: Option<u32>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends an attribute.
fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// `(type, payload)` of each attribute in `buf`.
fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

fn u32_of(payload: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

fn ipv4_of(payload: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = payload.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

impl Socket {
    /// A socket of `protocol` in the namespace `netns` (`None`: the caller's).
    fn open(netns: Option<&str>, protocol: i32) -> Result<Self, NetlinkError> {
        let make = move || -> Result<OwnedFd, NetlinkError> {
            // SAFETY: socket has no memory-safety preconditions.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    protocol,
                )
            };
            if fd < 0 {
                return Err(NetlinkError::Io {
                    what: "socket",
                    source: std::io::Error::last_os_error(),
                });
            }
            // SAFETY: `fd` is a new descriptor nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let fd = match netns {
            None => make()?,
            Some(ns) => {
                let ns = ns.to_owned();
                std::thread::spawn(move || {
                    hostgw_agent::netns::enter(&ns).map_err(|source| NetlinkError::Netns {
                        netns: ns.clone(),
                        source,
                    })?;
                    make()
                })
                .join()
                .expect("the netlink socket thread does not panic")?
            }
        };
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: `timeout` is a valid timeval of the size passed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Self { fd, seq: 1 })
    }

    /// A route socket in `netns`.
    pub fn route(netns: &str) -> Result<Self, NetlinkError> {
        Self::open(Some(netns), NETLINK_ROUTE)
    }

    /// A generic netlink socket in `netns`.
    pub fn generic(netns: &str) -> Result<Self, NetlinkError> {
        Self::open(Some(netns), NETLINK_GENERIC)
    }

    /// Sends one request (`kind`, `flags`, `body`) and calls `each` with `(type, payload)` of
    /// every answer until the end of the dump (or the single answer).
    fn request(
        &mut self,
        what: &'static str,
        kind: u16,
        flags: u16,
        body: &[u8],
        mut each: impl FnMut(u16, &[u8]),
    ) -> Result<(), NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: `msg` is a live buffer of the length passed.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(NetlinkError::Io {
                what: "send",
                source: std::io::Error::last_os_error(),
            });
        }
        let dump = flags & NLM_F_DUMP != 0;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            // SAFETY: `buf` is a live buffer of the length passed.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(NetlinkError::Io {
                    what: "recv",
                    source: std::io::Error::last_os_error(),
                });
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < 16 || len > rest.len() {
                    break;
                }
                let payload = &rest[16..len];
                rest = &rest[align4(len).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map_or(0, |b| i32::from_ne_bytes(b.try_into().expect("4 bytes")));
                        if errno == 0 {
                            return Ok(());
                        }
                        return Err(NetlinkError::Kernel {
                            what,
                            errno: -errno,
                        });
                    }
                    _ => {
                        each(kind, payload);
                        if !dump {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// Every IPv4 route of the main table with protocol `protocol`.
    pub fn routes(&mut self, protocol: u8) -> Result<Vec<Route>, NetlinkError> {
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let mut rtmsg = [0u8; 12];
        rtmsg[0] = libc::AF_INET as u8;
        let mut out = Vec::new();
        self.request(
            "RTM_GETROUTE",
            RTM_GETROUTE,
            NLM_F_DUMP,
            &rtmsg,
            |kind, p| {
                if kind != RTM_NEWROUTE || p.len() < 12 || p[5] != protocol {
                    return;
                }
                let mut table = u32::from(p[4]);
                let mut route = Route {
                    dst: Ipv4Addr::UNSPECIFIED,
                    dst_len: p[1],
                    gateway: None,
                    protocol: p[5],
                };
                for (a, v) in attrs(&p[12..]) {
                    match a {
                        RTA_DST => route.dst = ipv4_of(v).unwrap_or(Ipv4Addr::UNSPECIFIED),
                        RTA_GATEWAY => route.gateway = ipv4_of(v),
                        RTA_TABLE => table = u32_of(v).unwrap_or(table),
                        _ => {}
                    }
                }
                if table == RT_TABLE_MAIN {
                    out.push(route);
                }
            },
        )?;
        Ok(out)
    }

    /// The id of the generic netlink family `name`.
    fn family(&mut self, name: &'static str) -> Result<u16, NetlinkError> {
        let mut body = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        put_attr(&mut body, CTRL_ATTR_FAMILY_NAME, &cname);
        let mut id = None;
        self.request("CTRL_CMD_GETFAMILY", GENL_ID_CTRL, 0, &body, |_, p| {
            for (a, v) in attrs(p.get(4..).unwrap_or_default()) {
                if a == CTRL_ATTR_FAMILY_ID && v.len() >= 2 {
                    id = Some(u16::from_ne_bytes([v[0], v[1]]));
                }
            }
        })
        .map_err(|e| match e {
            NetlinkError::Kernel { errno, .. } if errno == libc::ENOENT => {
                NetlinkError::NoFamily(name)
            }
            e => e,
        })?;
        id.ok_or(NetlinkError::NoFamily(name))
    }

    /// The NAPI instances of interface `ifindex`.
    pub fn napis(&mut self, ifindex: u32) -> Result<Vec<Napi>, NetlinkError> {
        let family = self.family("netdev")?;
        let mut body = vec![NETDEV_CMD_NAPI_GET, 1, 0, 0];
        put_attr(&mut body, NETDEV_A_NAPI_IFINDEX, &ifindex.to_ne_bytes());
        let mut out = Vec::new();
        self.request("NETDEV_CMD_NAPI_GET", family, NLM_F_DUMP, &body, |_, p| {
            let mut napi = Napi { id: 0, pid: None };
            for (a, v) in attrs(p.get(4..).unwrap_or_default()) {
                match a {
                    NETDEV_A_NAPI_ID => napi.id = u32_of(v).unwrap_or(0),
                    NETDEV_A_NAPI_PID => napi.pid = u32_of(v).filter(|&p| p != 0),
                    _ => {}
                }
            }
            if napi.id != 0 {
                out.push(napi);
            }
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut buf = Vec::new();
        put_attr(&mut buf, 2, b"netdev\0");
        put_attr(&mut buf, 1, &7u32.to_ne_bytes());
        assert_eq!(buf.len(), 12 + 8);
        let parsed = attrs(&buf);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], (2, &b"netdev\0"[..]));
        assert_eq!(u32_of(parsed[1].1), Some(7));
    }
}
