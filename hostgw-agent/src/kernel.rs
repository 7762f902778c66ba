//! Reading and changing the kernel state the reconciler owns, over rtnetlink: our routes, the
//! neighbour entries of the next hops, the bridge's neighbours and forwarding database, and
//! interface addresses.
//!
//! Reads return everything relevant; writes only ever touch objects tagged with
//! [`ROUTE_PROTOCOL`] (routes and the neighbour entries we create), so nothing someone else
//! installed is removed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use rtnetlink::{
    Handle, IpVersion, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::AddressAttribute,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol},
    },
    packet_utils::nla::{DefaultNla, Nla as _},
};

/// The route protocol number that marks routes and neighbour entries as hostgw's
/// (`ip route show proto 203`).
pub const ROUTE_PROTOCOL: u8 = 203;

/// The main routing table.
const RT_TABLE_MAIN: u32 = 254;
/// `NDA_FLAGS_EXT` and its `NTF_EXT_MANAGED` bit: the kernel keeps a managed entry resolved.
const NDA_FLAGS_EXT: u16 = 15;
const NTF_EXT_MANAGED: u32 = 1;

/// A netlink request failed.
#[derive(Debug, thiserror::Error)]
#[error("netlink: {what}")]
pub struct KernelError {
    what: String,
    #[source]
    source: rtnetlink::Error,
}

fn err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError { what, source }
}

/// One of our routes as the kernel has it.
#[derive(Debug, Clone)]
pub struct KernelRoute {
    pub cidr: Ipv4Net,
    pub via: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    /// The message as dumped, for an exact delete.
    pub message: RouteMessage,
}

impl PartialEq for KernelRoute {
    fn eq(&self, other: &Self) -> bool {
        (self.cidr, self.via, self.oif) == (other.cidr, other.via, other.oif)
    }
}

/// Whether a neighbour entry has a usable link-layer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    /// Reachable, stale, delay, probe, permanent or noarp: the address can be used.
    Valid,
    /// Resolution failed or has not finished.
    Unresolved,
}

/// An IPv4 neighbour entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
    pub state: NeighState,
    /// Created by us (route protocol [`ROUTE_PROTOCOL`]).
    pub ours: bool,
    /// Kept resolved by the kernel.
    pub managed: bool,
}

/// Every IPv4 route in the main table with our protocol.
pub async fn our_routes(handle: &Handle) -> Result<Vec<KernelRoute>, KernelError> {
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(err("dumping routes"))? {
        if msg.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
            continue;
        }
        let mut table = u32::from(msg.header.table);
        let (mut dst, mut via, mut oif) = (None, None, None);
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = Some(*a),
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => via = Some(*a),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        if table != RT_TABLE_MAIN {
            continue;
        }
        let len = msg.header.destination_prefix_length;
        let Ok(cidr) = Ipv4Net::new(dst.unwrap_or(Ipv4Addr::UNSPECIFIED), len) else {
            continue;
        };
        out.push(KernelRoute {
            cidr,
            via,
            oif,
            message: msg,
        });
    }
    Ok(out)
}

/// Installs or replaces `cidr via via dev ifindex proto 203`.
pub async fn replace_route(
    handle: &Handle,
    cidr: Ipv4Net,
    via: Ipv4Addr,
    ifindex: u32,
) -> Result<(), KernelError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .gateway(via)
        .output_interface(ifindex)
        .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
        .build();
    handle
        .route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(err(format!("replacing route {cidr} via {via}")))
}

/// Deletes one of our routes.
pub async fn delete_route(handle: &Handle, route: &KernelRoute) -> Result<(), KernelError> {
    match handle.route().del(route.message.clone()).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        other => other.map_err(err(format!("deleting route {}", route.cidr))),
    }
}

/// Every IPv4 neighbour entry on `ifindex`.
pub async fn neighbours(handle: &Handle, ifindex: u32) -> Result<Vec<Neighbour>, KernelError> {
    let mut stream = handle
        .neighbours()
        .get()
        .set_family(IpVersion::V4)
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(err("dumping neighbours"))? {
        if msg.header.ifindex != ifindex {
            continue;
        }
        let (mut ip, mut mac, mut ours, mut managed) = (None, None, false, false);
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(*a),
                NeighbourAttribute::LinkLocalAddress(l) if l.len() == 6 => {
                    mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]]);
                }
                NeighbourAttribute::Protocol(p) => {
                    ours = *p == RouteProtocol::Other(ROUTE_PROTOCOL);
                }
                NeighbourAttribute::Other(nla) if nla.kind() == NDA_FLAGS_EXT => {
                    let mut v = [0u8; 4];
                    nla.emit_value(&mut v);
                    managed = u32::from_ne_bytes(v) & NTF_EXT_MANAGED != 0;
                }
                _ => {}
            }
        }
        let Some(ip) = ip else { continue };
        let state = match msg.header.state {
            NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
                if mac.is_some() =>
            {
                NeighState::Valid
            }
            _ => NeighState::Unresolved,
        };
        out.push(Neighbour {
            ip,
            ifindex,
            mac,
            state,
            ours,
            managed,
        });
    }
    Ok(out)
}

/// Asks the kernel to resolve `ip` on `ifindex` and keep it resolved: a managed entry tagged
/// as ours. Kernels without managed entries get a one-off resolution request instead.
pub async fn resolve_neighbour(
    handle: &Handle,
    ip: Ipv4Addr,
    ifindex: u32,
) -> Result<(), KernelError> {
    let mut req = handle
        .neighbours()
        .add(ifindex, IpAddr::V4(ip))
        .state(NeighbourState::None)
        .replace();
    let attrs = &mut req.message_mut().attributes;
    attrs.push(NeighbourAttribute::Protocol(RouteProtocol::Other(
        ROUTE_PROTOCOL,
    )));
    attrs.push(NeighbourAttribute::Other(DefaultNla::new(
        NDA_FLAGS_EXT,
        NTF_EXT_MANAGED.to_ne_bytes().to_vec(),
    )));
    match req.execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EINVAL => {
            // No managed neighbours: NTF_USE triggers one resolution.
            let mut req = handle
                .neighbours()
                .add(ifindex, IpAddr::V4(ip))
                .state(NeighbourState::None)
                .flags(rtnetlink::packet_route::neighbour::NeighbourFlags::Use)
                .replace();
            req.message_mut()
                .attributes
                .push(NeighbourAttribute::Protocol(RouteProtocol::Other(
                    ROUTE_PROTOCOL,
                )));
            req.execute()
                .await
                .map_err(err(format!("requesting resolution of {ip}")))
        }
        other => other.map_err(err(format!("adding a managed neighbour for {ip}"))),
    }
}

/// Deletes a neighbour entry we created.
pub async fn delete_neighbour(handle: &Handle, n: &Neighbour) -> Result<(), KernelError> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = n.ifindex;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            n.ip,
        )));
    match handle.neighbours().del(msg).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => Ok(()),
        other => other.map_err(err(format!("deleting neighbour {}", n.ip))),
    }
}

/// The bridge's forwarding database: learned MAC → port ifindex (the ports' own addresses and
/// static entries are left out).
pub async fn fdb(handle: &Handle, bridge: u32) -> Result<BTreeMap<[u8; 6], u32>, KernelError> {
    let mut req = handle.neighbours().get();
    req.message_mut().header.family = AddressFamily::Bridge;
    let mut stream = req.execute();
    let mut out = BTreeMap::new();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(err("dumping the bridge FDB"))?
    {
        if matches!(
            msg.header.state,
            NeighbourState::Permanent | NeighbourState::Noarp
        ) {
            continue;
        }
        let mut mac = None;
        let mut controller = None;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::LinkLocalAddress(l) if l.len() == 6 => {
                    mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]]);
                }
                NeighbourAttribute::Controller(c) => controller = Some(*c),
                _ => {}
            }
        }
        if let (Some(mac), Some(c)) = (mac, controller)
            && c == bridge
        {
            out.insert(mac, msg.header.ifindex);
        }
    }
    Ok(out)
}

/// The IPv4 addresses of `ifindex`, with their prefix.
pub async fn addresses(handle: &Handle, ifindex: u32) -> Result<Vec<Ipv4Net>, KernelError> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(ifindex)
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(err("dumping addresses"))? {
        if msg.header.index != ifindex {
            continue;
        }
        for attr in &msg.attributes {
            if let AddressAttribute::Address(IpAddr::V4(a)) = attr
                && let Ok(net) = Ipv4Net::new(*a, msg.header.prefix_len)
            {
                out.push(net);
            }
        }
    }
    Ok(out)
}
