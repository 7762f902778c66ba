//! The two ends of a round that touch the kernel, behind the [`Host`] trait: `observe` reads
//! everything the plan looks at into plain data ([`Observed`]), `apply` carries out one
//! [`Op`]. [`Kernel`] does both over rtnetlink, sysctl files, netfilter and the loaded
//! dataplane; the round's unit tests use a fake. Neither decides anything.

use std::collections::BTreeMap;

use rtnetlink::Handle;

use super::{
    ReconcileError,
    plan::{Observed, Op},
};
use crate::{
    dataplane::Dataplane,
    host::{conntrack, iface, netfilter, netlink, sysctl, tc, xfrm},
    model::{Link, TcUsers},
};

/// The other tc users of the hooked interfaces, those that have some. An interface whose
/// filters cannot be listed is taken as shared (the safe side), and said so.
fn tc_users(uplink: &Link, bridge: &Link, ports: &[Link]) -> BTreeMap<u32, TcUsers> {
    let qdiscs = tc::qdiscs().unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot list the qdiscs");
        BTreeMap::new()
    });
    let mut out = BTreeMap::new();
    let links = [(uplink, false), (bridge, false)]
        .into_iter()
        .chain(ports.iter().map(|p| (p, true)));
    for (link, egress) in links {
        let users = tc::users(link, egress, &qdiscs).unwrap_or_else(|error| {
            tracing::warn!(iface = link.name, %error, "cannot list the tc filters");
            TcUsers {
                ingress: vec![format!("unknown: cannot list the filters ({error})")],
                egress: Vec::new(),
            }
        });
        if !users.is_empty() {
            out.insert(link.index, users);
        }
    }
    out
}

/// What a round reads from and writes to.
pub trait Host {
    /// Reads the state of the uplink and the bridge called so, their routes, neighbours and
    /// FDB, the main table's other routes, the policy rules and xfrm policies, the forwarding
    /// and conntrack timeout sysctls, the other tc users, the maps and the port hooks; what of netfilter acts on
    /// forwarded traffic too when `netfilter` is set.
    async fn observe(
        &mut self,
        uplink: &str,
        bridge: &str,
        netfilter: bool,
    ) -> Result<Observed, ReconcileError>;

    /// Carries out one operation.
    async fn apply(&mut self, op: &Op) -> Result<(), ReconcileError>;
}

/// The node's kernel and the loaded dataplane.
pub struct Kernel<'a> {
    handle: Handle,
    dp: &'a mut Dataplane,
    /// The kernel's tick rate.
    hz: u32,
}

impl<'a> Kernel<'a> {
    pub fn new(handle: Handle, dp: &'a mut Dataplane, hz: u32) -> Self {
        Self { handle, dp, hz }
    }
}

impl Host for Kernel<'_> {
    async fn observe(
        &mut self,
        uplink: &str,
        bridge: &str,
        netfilter: bool,
    ) -> Result<Observed, ReconcileError> {
        let h = &self.handle;
        let uplink = iface::by_name(h, uplink).await?;
        let bridge = iface::by_name(h, bridge).await?;
        let ports = iface::ports_of(h, bridge.index).await?;
        let tc_users = tc_users(&uplink, &bridge, &ports);
        let (routes, other_routes) = netlink::main_routes(h).await?;
        Ok(Observed {
            tc_users,
            hooks: self.dp.hooks()?,
            ports,
            uplink_addrs: netlink::addresses(h, uplink.index).await?,
            routes,
            other_routes,
            extra_rules: netlink::extra_rules(h).await?,
            xfrm_policies: xfrm::policies().map_err(ReconcileError::Xfrm)?,
            neighbours: netlink::neighbours(h, uplink.index).await?,
            bridge_nets: netlink::addresses(h, bridge.index).await?,
            bridge_neighbours: netlink::neighbours(h, bridge.index).await?,
            fdb: netlink::fdb(h, bridge.index).await?,
            forwarding: sysctl::read_forwarding(&bridge.name, &uplink.name),
            ct_timeouts: conntrack::read_timeouts(self.hz),
            netfilter: netfilter.then(|| netfilter::detect().map_err(|e| e.to_string())),
            trie: self.dp.trie()?,
            endpoints: self.dp.endpoints()?,
            state: self.dp.state()?,
            port_hooks: self.dp.port_hooks(),
            uplink,
            bridge,
        })
    }

    async fn apply(&mut self, op: &Op) -> Result<(), ReconcileError> {
        let h = &self.handle;
        match op {
            Op::AttachPort { name, ifindex } => self.dp.attach_port(name, *ifindex)?,
            Op::DetachPort { name } => self.dp.detach_port(name)?,
            Op::WriteSysctl { key, to, .. } => sysctl::write(key, to)?,
            Op::SetState { state } => self.dp.set_state(*state)?,
            Op::SetHook { ifindex, flags, .. } => self.dp.set_hook(*ifindex, *flags)?,
            Op::DeleteHook { ifindex } => self.dp.delete_hook(*ifindex)?,
            Op::ResolveNeighbour { ip, ifindex } => {
                netlink::resolve_neighbour(h, *ip, *ifindex).await?;
            }
            Op::ReplaceRoute { cidr, via, oif } => {
                netlink::replace_route(h, *cidr, *via, *oif).await?;
            }
            Op::PutTrie { cidr, route } => self.dp.put_trie(*cidr, *route)?,
            Op::PutEndpoint { ip, endpoint } => self.dp.put_endpoint(*ip, *endpoint)?,
            Op::DeleteTrie { cidr } => self.dp.delete_trie(*cidr)?,
            Op::DeleteEndpoint { ip } => self.dp.delete_endpoint(*ip)?,
            Op::DeleteRoute { route } => netlink::delete_route(h, route).await?,
            Op::DeleteNeighbour { neighbour } => netlink::delete_neighbour(h, neighbour).await?,
        }
        Ok(())
    }
}
