//! Reading and changing the kernel state the reconciler owns, over rtnetlink: our routes, the
//! neighbour entries of the next hops (ARP and NDP alike), the bridge's neighbours and
//! forwarding database, and interface addresses. Both address families throughout: routes,
//! neighbours and addresses are read for IPv4 and IPv6 and carry `IpNet`/`IpAddr`.
//!
//! Reads return everything relevant; writes only ever touch objects tagged with
//! [`ROUTE_PROTOCOL`] (routes and the neighbour entries we create), so nothing someone else
//! installed is removed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures::TryStreamExt as _;
use ipnet::IpNet;
use rtnetlink::{
    Handle, IpVersion, RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        address::AddressAttribute,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol},
    },
    packet_utils::nla::{DefaultNla, Nla as _},
};

use crate::model::{NeighState, Neighbour, Route};

/// The route protocol number that marks routes and neighbour entries as hostgw's
/// (`ip route show proto 203`).
pub const ROUTE_PROTOCOL: u8 = 203;

/// The main routing table.
const RT_TABLE_MAIN: u32 = 254;
/// `NDA_FLAGS_EXT` and its `NTF_EXT_MANAGED` bit: the kernel keeps a managed entry resolved.
const NDA_FLAGS_EXT: u16 = 15;
const NTF_EXT_MANAGED: u32 = 1;

/// Why a kernel request failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A netlink request failed; `what` says which.
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A route whose next hop is of the other family than its CIDR.
    #[error("route {cidr} via {via}: the next hop is of the other address family")]
    MixedFamilies { cidr: IpNet, via: IpAddr },
}

fn err(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let what = what.into();
    move |source| KernelError::Netlink { what, source }
}

/// The main table's routes, both families: ours (protocol 203), and the others.
pub async fn main_routes(handle: &Handle) -> Result<(Vec<Route>, Vec<Route>), KernelError> {
    let (mut out, mut others) = (Vec::new(), Vec::new());
    for query in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let family = query.header.address_family;
        let mut stream = handle.route().get(query).execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(err(format!("dumping {family:?} routes")))?
        {
            if let Some(route) = main_route(&msg) {
                if msg.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) {
                    out.push(route);
                } else {
                    others.push(route);
                }
            }
        }
    }
    Ok((out, others))
}

/// Policy routing rules beyond the kernel's defaults (`0: lookup local`, `32766: lookup main`,
/// `32767: lookup default`), both families, described as `ip rule` would.
pub async fn extra_rules(handle: &Handle) -> Result<Vec<String>, KernelError> {
    use rtnetlink::IpVersion;
    let mut out = Vec::new();
    for version in [IpVersion::V4, IpVersion::V6] {
        let mut stream = handle.rule().get(version.clone()).execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(err(format!("dumping {version:?} rules")))?
        {
            out.extend(extra_rule(&msg).map(|r| format!("{version:?} {r}")));
        }
    }
    Ok(out)
}

/// `priority: table N` unless `msg` is one of the kernel's default rules: `from all` (no
/// selector) at 0 to `local`, 32766 to `main` or 32767 to `default`.
fn extra_rule(msg: &rtnetlink::packet_route::rule::RuleMessage) -> Option<String> {
    use rtnetlink::packet_route::rule::RuleAttribute;
    let mut table = u32::from(msg.header.table);
    let mut priority = 0;
    let mut selectors = msg.header.src_len != 0 || msg.header.dst_len != 0 || msg.header.tos != 0;
    for attr in &msg.attributes {
        match attr {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Priority(p) => priority = *p,
            // Always sent; -1 (u32::MAX) is "none".
            RuleAttribute::Protocol(_) | RuleAttribute::SuppressPrefixLen(u32::MAX) => {}
            _ => selectors = true,
        }
    }
    let default = matches!((priority, table), (0, 255) | (32766, 254) | (32767, 253));
    (!default || selectors).then(|| format!("{priority}: table {table}"))
}

/// The route in `msg` if it is in the main table.
fn main_route(msg: &RouteMessage) -> Option<Route> {
    let mut table = u32::from(msg.header.table);
    let (mut dst, mut via, mut oif, mut metric, mut mtu) = (None, None, None, None, None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(a) => dst = ip_of(a),
            RouteAttribute::Gateway(a) => via = ip_of(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            RouteAttribute::Metrics(m) => {
                mtu = m.iter().find_map(|m| match m {
                    RouteMetric::Mtu(v) => Some(*v),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return None;
    }
    let unspecified = match msg.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    let cidr = IpNet::new(
        dst.unwrap_or(unspecified),
        msg.header.destination_prefix_length,
    )
    .ok()?;
    Some(Route {
        cidr,
        via,
        oif,
        metric,
        mtu,
    })
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

/// Installs or replaces `cidr via via dev ifindex proto 203`.
pub async fn replace_route(
    handle: &Handle,
    cidr: IpNet,
    via: IpAddr,
    ifindex: u32,
) -> Result<(), KernelError> {
    let msg = match (cidr, via) {
        (IpNet::V4(c), IpAddr::V4(v)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(c.network(), c.prefix_len())
            .gateway(v)
            .output_interface(ifindex)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build(),
        (IpNet::V6(c), IpAddr::V6(v)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(c.network(), c.prefix_len())
            .gateway(v)
            .output_interface(ifindex)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build(),
        _ => return Err(KernelError::MixedFamilies { cidr, via }),
    };
    handle
        .route()
        .add(msg)
        .replace()
        .execute()
        .await
        .map_err(err(format!("replacing route {cidr} via {via}")))
}

/// Deletes one of our routes: the one in the main table with `route`'s destination, next hop,
/// interface and metric, and our protocol.
pub async fn delete_route(handle: &Handle, route: &Route) -> Result<(), KernelError> {
    let mut msg = match route.cidr {
        IpNet::V4(c) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(c.network(), c.prefix_len())
            .build(),
        IpNet::V6(c) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(c.network(), c.prefix_len())
            .build(),
    };
    msg.header.protocol = RouteProtocol::Other(ROUTE_PROTOCOL);
    msg.attributes.push(RouteAttribute::Table(RT_TABLE_MAIN));
    if let Some(via) = route.via {
        msg.attributes.push(RouteAttribute::Gateway(match via {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(metric) = route.metric {
        msg.attributes.push(RouteAttribute::Priority(metric));
    }
    match handle.route().del(msg).execute().await {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ESRCH => Ok(()),
        other => other.map_err(err(format!("deleting route {}", route.cidr))),
    }
}

/// Every neighbour entry on `ifindex`: ARP (IPv4) then NDP (IPv6).
pub async fn neighbours(handle: &Handle, ifindex: u32) -> Result<Vec<Neighbour>, KernelError> {
    let mut out = Vec::new();
    for (family, name) in [(IpVersion::V4, "ARP"), (IpVersion::V6, "NDP")] {
        let mut stream = handle.neighbours().get().set_family(family).execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(err(format!("dumping {name} neighbours")))?
        {
            if msg.header.ifindex == ifindex
                && let Some(n) = neighbour(&msg)
            {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// The entry in `msg`, if it has an IP address.
fn neighbour(msg: &NeighbourMessage) -> Option<Neighbour> {
    let ifindex = msg.header.ifindex;
    let (mut ip, mut mac, mut ours, mut managed) = (None, None, false, false);
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                ip = Some(IpAddr::V4(*a));
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a));
            }
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
    let ip = ip?;
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
    Some(Neighbour {
        ip,
        ifindex,
        mac,
        state,
        ours,
        managed,
    })
}

/// Asks the kernel to resolve `ip` on `ifindex` and keep it resolved: a managed entry tagged
/// as ours. Kernels without managed entries get a one-off resolution request instead.
pub async fn resolve_neighbour(
    handle: &Handle,
    ip: IpAddr,
    ifindex: u32,
) -> Result<(), KernelError> {
    let mut req = handle
        .neighbours()
        .add(ifindex, ip)
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
                .add(ifindex, ip)
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
    msg.header.ifindex = n.ifindex;
    let (family, destination) = match n.ip {
        IpAddr::V4(a) => (AddressFamily::Inet, NeighbourAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, NeighbourAddress::Inet6(a)),
    };
    msg.header.family = family;
    msg.attributes
        .push(NeighbourAttribute::Destination(destination));
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

/// The addresses of `ifindex`, both families, with their prefix.
pub async fn addresses(handle: &Handle, ifindex: u32) -> Result<Vec<IpNet>, KernelError> {
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
            if let AddressAttribute::Address(a) = attr
                && let Ok(net) = IpNet::new(*a, msg.header.prefix_len)
            {
                out.push(net);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod rule_tests {
    use rtnetlink::packet_route::{
        route::RouteProtocol,
        rule::{RuleAttribute, RuleMessage},
    };

    use super::extra_rule;

    fn rule(table: u8, attrs: Vec<RuleAttribute>) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.table = table;
        m.attributes = attrs;
        m
    }

    /// As the kernel dumps them: the defaults are not extra; anything else, or a default
    /// priority and table with a selector, is.
    #[test]
    fn only_the_kernels_default_rules_are_not_extra() {
        let kernel = |prio: Option<u32>, table: u8| {
            let mut a = vec![
                RuleAttribute::Table(u32::from(table)),
                RuleAttribute::SuppressPrefixLen(u32::MAX),
                RuleAttribute::Protocol(RouteProtocol::Kernel),
            ];
            a.extend(prio.map(RuleAttribute::Priority));
            rule(table, a)
        };
        assert_eq!(extra_rule(&kernel(None, 255)), None);
        assert_eq!(extra_rule(&kernel(Some(32766), 254)), None);
        assert_eq!(extra_rule(&kernel(Some(32767), 253)), None);
        assert_eq!(
            extra_rule(&kernel(Some(100), 100)).as_deref(),
            Some("100: table 100")
        );
        let mut from = kernel(Some(32766), 254);
        from.header.src_len = 24;
        assert!(extra_rule(&from).is_some(), "a `from` selector");
        let mut mark = kernel(Some(32766), 254);
        mark.attributes.push(RuleAttribute::FwMark(1));
        assert!(extra_rule(&mark).is_some(), "a fwmark selector");
    }
}
