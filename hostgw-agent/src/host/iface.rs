//! Looking up interfaces over rtnetlink: the uplink, the bridge and the bridge's ports.
//!
//! Read-only: this module never changes an interface.

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage},
};

use crate::model::Link;

/// Why an interface lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No interface has that name in this network namespace.
    #[error("interface {0:?} does not exist in this network namespace")]
    NotFound(String),
    /// The netlink request failed.
    #[error("netlink request for interfaces failed")]
    Netlink(#[source] rtnetlink::Error),
}

impl From<&LinkMessage> for Link {
    fn from(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: [0; 6],
            mtu: 0,
            controller: None,
            is_veth: false,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Address(addr) if addr.len() == 6 => {
                    link.mac.copy_from_slice(addr);
                }
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Controller(index) => link.controller = Some(*index),
                LinkAttribute::LinkInfo(infos) => {
                    link.is_veth = infos
                        .iter()
                        .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
                }
                _ => {}
            }
        }
        link
    }
}

/// The interface called `name`.
pub async fn by_name(handle: &Handle, name: &str) -> Result<Link, IfaceError> {
    message_by_name(handle, name)
        .await
        .map(|msg| Link::from(&msg))
}

/// The raw message of the interface called `name`.
pub async fn message_by_name(handle: &Handle, name: &str) -> Result<LinkMessage, IfaceError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg),
        Ok(None) => Err(IfaceError::NotFound(name.to_owned())),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
            Err(IfaceError::NotFound(name.to_owned()))
        }
        Err(e) => Err(IfaceError::Netlink(e)),
    }
}

/// The interface with index `index`.
pub async fn by_index(handle: &Handle, index: u32) -> Result<Link, IfaceError> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Link::from(&msg)),
        Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => {
            Err(IfaceError::NotFound(format!("#{index}")))
        }
        Err(e) => Err(IfaceError::Netlink(e)),
    }
}

/// Every interface, sorted by ifindex.
pub async fn all(handle: &Handle) -> Result<Vec<Link>, IfaceError> {
    let mut links = handle.link().get().execute();
    let mut out = Vec::new();
    while let Some(msg) = links.try_next().await.map_err(IfaceError::Netlink)? {
        out.push(Link::from(&msg));
    }
    out.sort_by_key(|l| l.index);
    Ok(out)
}

/// Every interface whose controller is `bridge` (the bridge's ports), sorted by ifindex.
pub async fn ports_of(handle: &Handle, bridge: u32) -> Result<Vec<Link>, IfaceError> {
    let mut ports = all(handle).await?;
    ports.retain(|l| l.controller == Some(bridge));
    Ok(ports)
}
