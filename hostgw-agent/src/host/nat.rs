//! Whether this node does NAT in netfilter: the question `--conntrack-gate auto` asks.
//!
//! A node has NAT when an nftables chain of type `nat` exists (nftables rulesets, and
//! iptables-nft, which kube-proxy and CNI masquerade rules use) or the legacy iptables `nat`
//! table is loaded. Both are read from the current network namespace. Read-only.

use std::io;

use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::model::Nat;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFTA_CHAIN_TYPE: u16 = 7;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

/// Looks at the current network namespace.
pub fn detect() -> io::Result<Nat> {
    let legacy_table = match std::fs::read_to_string("/proc/net/ip_tables_names") {
        Ok(names) => names.lines().any(|l| l.trim() == "nat"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    Ok(Nat {
        nft_chains: nft_nat_chains()?,
        legacy_table,
    })
}

/// The number of nftables chains of type `nat`, from a netlink dump of every chain.
fn nft_nat_chains() -> io::Result<usize> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut req = Vec::with_capacity(20);
    req.extend_from_slice(&20u32.to_ne_bytes());
    req.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN).to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    req.extend_from_slice(&[0, 0, 0, 0]); // nfgenmsg: any family, version 0, res_id 0
    socket.send(&req, 0)?;

    let mut count = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut buf[..], 0)?;
        let mut msgs = &buf[..n];
        while msgs.len() >= 16 {
            let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes([msgs[4], msgs[5]]);
            if len < 16 || len > msgs.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink message",
                ));
            }
            match kind {
                NLMSG_DONE => return Ok(count),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(msgs[16..20].try_into().unwrap_or_default());
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                // Attributes follow the 4-byte nfgenmsg.
                k if k == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWCHAIN
                    && chain_type(&msgs[20..len]) == Some(b"nat".as_slice()) =>
                {
                    count += 1;
                }
                _ => {}
            }
            msgs = &msgs[len.next_multiple_of(4).min(msgs.len())..];
        }
    }
}

/// The `NFTA_CHAIN_TYPE` string of a chain's attributes, without its NUL.
fn chain_type(mut attrs: &[u8]) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == NFTA_CHAIN_TYPE {
            let value = &attrs[4..len];
            return Some(value.strip_suffix(&[0]).unwrap_or(value));
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

    #[test]
    fn finds_the_chain_type_among_attributes() {
        let mut attrs = nla(1, b"kube-proxy\0");
        attrs.extend(nla(3, b"nat-prerouting\0"));
        attrs.extend(nla(NFTA_CHAIN_TYPE, b"nat\0"));
        assert_eq!(chain_type(&attrs), Some(b"nat".as_slice()));
        let filter = nla(NFTA_CHAIN_TYPE, b"filter\0");
        assert_eq!(chain_type(&filter), Some(b"filter".as_slice()));
        assert_eq!(chain_type(&nla(1, b"t\0")), None);
        assert_eq!(chain_type(&[8, 0, 7, 0, b'n']), None, "truncated attribute");
    }

    #[test]
    fn nat_is_present_with_either_kind() {
        assert!(!Nat::default().present());
        assert!(
            Nat {
                nft_chains: 1,
                legacy_table: false
            }
            .present()
        );
        assert!(
            Nat {
                nft_chains: 0,
                legacy_table: true
            }
            .present()
        );
    }
}
