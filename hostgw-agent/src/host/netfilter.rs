//! What of netfilter can act on forwarded traffic: the question `--conntrack-gate auto` asks.
//!
//! Netfilter acts on forwarded traffic when an nftables chain of type `nat` exists (nftables
//! rulesets, and iptables-nft, which kube-proxy and CNI masquerade rules use), when an
//! nftables base chain sits on a hook forwarded packets pass (`prerouting`, `forward`,
//! `postrouting`, `ingress`; every `netdev` and `bridge` chain), or when a legacy iptables or
//! ip6tables table is loaded (its rules are not read). All of it is read from the current
//! network namespace, read-only; [`watch`] reports nftables changes as they are committed.

use std::io;

use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::model::Netfilter;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
/// `NFNLGRP_NFTABLES`: every committed nftables change.
const NFNLGRP_NFTABLES: u32 = 7;

/// nftables families (`nfgenmsg.nfgen_family`).
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_NETDEV: u8 = 5;
const NFPROTO_BRIDGE: u8 = 7;
const NFPROTO_IPV6: u8 = 10;
/// `NF_INET_*` hooks forwarded packets pass: prerouting, forward, postrouting, ingress.
const FORWARD_PATH_HOOKS: [u32; 4] = [0, 2, 4, 5];

/// The legacy tables' lists: any table in them is loaded.
const LEGACY_TABLES: [&str; 2] = ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"];

/// Looks at the current network namespace.
pub fn detect() -> io::Result<Netfilter> {
    let mut legacy_tables = false;
    for path in LEGACY_TABLES {
        match std::fs::read_to_string(path) {
            Ok(names) => legacy_tables |= names.lines().any(|l| !l.trim().is_empty()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let (nat_chains, forward_chains) = nft_chains()?;
    Ok(Netfilter {
        nat_chains,
        forward_chains,
        legacy_tables,
    })
}

/// A chain, as far as the gate cares.
#[derive(Debug, PartialEq, Eq)]
enum Chain {
    Nat,
    ForwardPath,
    Other,
}

/// What a chain of `family` with these attributes is.
fn classify(family: u8, attrs: &[u8]) -> Chain {
    if attr(attrs, NFTA_CHAIN_TYPE).map(|t| t.strip_suffix(&[0]).unwrap_or(t)) == Some(b"nat") {
        return Chain::Nat;
    }
    // A regular chain (no hook) only runs when a base chain jumps to it.
    let Some(hook) = attr(attrs, NFTA_CHAIN_HOOK) else {
        return Chain::Other;
    };
    let hooknum = attr(hook, NFTA_HOOK_HOOKNUM)
        .and_then(|v| v.get(0..4))
        .map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
    match (family, hooknum) {
        (NFPROTO_NETDEV | NFPROTO_BRIDGE, _) => Chain::ForwardPath,
        (NFPROTO_INET | NFPROTO_IPV4 | NFPROTO_IPV6, Some(h))
            if FORWARD_PATH_HOOKS.contains(&h) =>
        {
            Chain::ForwardPath
        }
        _ => Chain::Other,
    }
}

/// The numbers of nftables chains of type `nat` and of other base chains on the forward
/// path, from a netlink dump of every chain.
fn nft_chains() -> io::Result<(usize, usize)> {
    let (mut nat, mut forward) = (0, 0);
    // nfgenmsg: any family, version 0, res_id 0.
    super::dump::dump(
        NETLINK_NETFILTER,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN,
        &[0; 4],
        |kind, msg| {
            // Attributes follow the 4-byte nfgenmsg, whose first byte is the family.
            if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN && msg.len() >= 20 {
                match classify(msg[16], &msg[20..]) {
                    Chain::Nat => nat += 1,
                    Chain::ForwardPath => forward += 1,
                    Chain::Other => {}
                }
            }
        },
    )?;
    Ok((nat, forward))
}

/// Calls `changed` after every committed nftables change in the current network namespace,
/// from a thread of its own, for as long as the process runs. Legacy iptables sends no such
/// notification: the lists of its tables are polled every `poll` instead.
pub fn watch(changed: impl Fn() + Send + 'static, poll: std::time::Duration) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind(&SocketAddr::new(0, 0))?;
    socket.add_membership(NFNLGRP_NFTABLES)?;
    set_receive_timeout(&socket, poll)?;
    std::thread::Builder::new()
        .name("nftables-watch".into())
        .spawn(move || {
            let legacy = || LEGACY_TABLES.map(|p| std::fs::read_to_string(p).unwrap_or_default());
            let mut tables = legacy();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match socket.recv(&mut &mut buf[..], 0) {
                    Ok(_) => changed(),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    // Missed notifications (ENOBUFS): something changed.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => changed(),
                    Err(error) => {
                        tracing::warn!(%error, "nftables notifications stopped");
                        return;
                    }
                }
                let now = legacy();
                if now != tables {
                    tables = now;
                    changed();
                }
            }
        })?;
    Ok(())
}

/// `SO_RCVTIMEO`: a receive returns `WouldBlock` after `timeout` without a message.
fn set_receive_timeout(socket: &Socket, timeout: std::time::Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_usec: timeout.subsec_micros().into(),
    };
    // SAFETY: the fd is the socket's own, open while it lives; `tv` is a valid timeval of the
    // size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The value of the first attribute of `kind` (nested attributes are themselves a list).
fn attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let k = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if k == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    /// A base chain's attributes: its type and its hook number (big-endian, as nftables
    /// sends it, inside a nested `NFTA_CHAIN_HOOK`).
    fn chain(kind: &[u8], hook: Option<u32>) -> Vec<u8> {
        let mut attrs = nla(1, b"kube-proxy\0");
        attrs.extend(nla(3, b"some-chain\0"));
        if let Some(h) = hook {
            let mut nested = nla(NFTA_HOOK_HOOKNUM, &h.to_be_bytes());
            nested.extend(nla(2, &0u32.to_be_bytes()));
            attrs.extend(nla(NFTA_CHAIN_HOOK | 0x8000, &nested));
        }
        attrs.extend(nla(NFTA_CHAIN_TYPE, kind));
        attrs
    }

    #[test]
    fn chains_are_told_apart_by_type_family_and_hook() {
        assert_eq!(
            classify(NFPROTO_IPV4, &chain(b"nat\0", Some(0))),
            Chain::Nat
        );
        assert_eq!(
            classify(NFPROTO_INET, &chain(b"nat\0", Some(3))),
            Chain::Nat
        );
        for hook in [0, 2, 4] {
            assert_eq!(
                classify(NFPROTO_INET, &chain(b"filter\0", Some(hook))),
                Chain::ForwardPath,
                "hook {hook}"
            );
        }
        // input and output see only the node's own traffic.
        assert_eq!(
            classify(NFPROTO_IPV4, &chain(b"filter\0", Some(1))),
            Chain::Other
        );
        assert_eq!(
            classify(NFPROTO_IPV6, &chain(b"filter\0", Some(3))),
            Chain::Other
        );
        // A regular chain runs only when a base chain jumps to it.
        assert_eq!(
            classify(NFPROTO_IPV4, &chain(b"filter\0", None)),
            Chain::Other
        );
        assert_eq!(
            classify(NFPROTO_NETDEV, &chain(b"filter\0", Some(0))),
            Chain::ForwardPath
        );
        assert_eq!(
            classify(NFPROTO_BRIDGE, &chain(b"filter\0", Some(1))),
            Chain::ForwardPath
        );
        assert_eq!(
            attr(&[8, 0, 7, 0, b'n'], NFTA_CHAIN_TYPE),
            None,
            "truncated attribute"
        );
    }

    #[test]
    fn netfilter_acts_with_any_kind() {
        assert!(!Netfilter::default().acts());
        for n in [
            Netfilter {
                nat_chains: 1,
                ..Netfilter::default()
            },
            Netfilter {
                forward_chains: 1,
                ..Netfilter::default()
            },
            Netfilter {
                legacy_tables: true,
                ..Netfilter::default()
            },
        ] {
            assert!(n.acts(), "{n:?}");
        }
    }
}
