//! The reconciler: on every trigger (a new node list, a netlink event, the periodic resync) it
//! reads the full current state, plans against it and applies the plan. It never acts on a
//! single event's content, so a missed or duplicated event cannot leave stale state.
//!
//! Owns the order of a round: interfaces and bridge ports (egress hooks), desired state, IPv6
//! forwarding (switched on once this node has an IPv6 pod CIDR), node state (forwarding of
//! both families), kernel and map state, plan, apply.

pub mod desired;
mod plan;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use rtnetlink::{
    Handle,
    constants::{
        RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
        RTMGRP_NEIGH,
    },
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::sync::Notify;

use self::{
    desired::{Desired, Local, Skip},
    plan::{Actual, Op, Uplink},
};
use crate::{
    Config,
    cli::GateMode,
    dataplane::{Dataplane, DataplaneError},
    host::{
        iface::{self, IfaceError},
        nat,
        netlink::{self as kernel, KernelError},
        sysctl::{self, NodeState},
    },
    inspect::metrics,
    model::{Family, Nat},
    source::{Nodes, nodes::Item},
};

/// Why a round (or the netlink subscription) failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The uplink, the bridge or its ports could not be looked up.
    #[error(transparent)]
    Iface(#[from] IfaceError),
    /// Reading or writing routes, neighbours or addresses failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Reading or writing a map, or attaching a port's program, failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    /// The netlink event socket could not be set up.
    #[error("cannot subscribe to netlink events")]
    Subscribe(#[source] std::io::Error),
}

/// `RTNLGRP_IPV4_NETCONF` and `RTNLGRP_IPV6_NETCONF`: forwarding changes.
const RTNLGRP_IPV4_NETCONF: u32 = 24;
const RTNLGRP_IPV6_NETCONF: u32 = 25;

/// What one round did.
#[derive(Debug, Default)]
pub struct Round {
    pub ops: usize,
    pub errors: usize,
    pub duration: Duration,
    /// Whether a node list was planned against (rather than none being available yet).
    pub nodes_applied: bool,
    /// Remote pod CIDRs in the desired state, IPv4 and IPv6.
    pub routes_v4: usize,
    pub routes_v6: usize,
}

/// The reconciler's state between rounds.
pub struct Reconciler {
    config: Config,
    handle: Handle,
    nodes: Option<Nodes>,
    /// Skipped nodes last logged, so each is reported once per change.
    reported_skips: Vec<Skip>,
    node_state: Option<NodeState>,
    /// NAT last seen by `--conntrack-gate auto`.
    nat: Option<Nat>,
    /// Skipped nodes by reason and family (`ipv4`, `ipv6` or `any`), for metrics.
    pub skipped_by_reason: BTreeMap<(&'static str, &'static str), usize>,
}

impl Reconciler {
    pub fn new(config: Config, handle: Handle, nodes: Option<Nodes>) -> Self {
        Self {
            config,
            handle,
            nodes,
            reported_skips: Vec::new(),
            node_state: None,
            nat: None,
            skipped_by_reason: BTreeMap::new(),
        }
    }

    /// The latest node list, if one has been read.
    fn items(&self) -> Option<Arc<Vec<Item>>> {
        self.nodes.as_ref().and_then(|n| n.borrow().clone())
    }

    /// One full round. Errors of single operations are logged and counted, and the round goes
    /// on; an error reading the state ends the round.
    #[tracing::instrument(skip_all)]
    pub async fn round(&mut self, dp: &mut Dataplane) -> Result<Round, ReconcileError> {
        let start = Instant::now();
        let handle = self.handle.clone();
        let h = &handle;
        let uplink = iface::by_name(h, &self.config.uplink).await?;
        let bridge = iface::by_name(h, &self.config.bridge).await?;
        let ports = iface::ports_of(h, bridge.index).await?;
        for name in dp.sync_ports(&ports)? {
            tracing::info!(port = name, "egress program attached to a new bridge port");
        }

        let items = self.items();
        let desired = match &items {
            Some(items) => {
                let local = Local {
                    node_name: self.config.node_name.clone(),
                    uplink_addrs: kernel::addresses(h, uplink.index).await?,
                };
                let d = desired::desired(items, &local);
                self.report_skips(&d);
                Some(d)
            }
            None => None,
        };

        // This node routes IPv6 once it has an IPv6 pod CIDR: forwarding must be on.
        let mut sysctl_errors = 0;
        if desired.as_ref().is_some_and(|d| d.has_local(Family::V6))
            && let Err(error) = sysctl::enable_ipv6_forwarding(&uplink.name)
        {
            tracing::warn!(%error, "cannot enable IPv6 forwarding; retried next round");
            sysctl_errors += 1;
        }

        let mut state = NodeState::read(&bridge, &uplink);
        state.ct_gate = self.gate();
        if self.node_state.is_none_or(|s| s.ct_gate != state.ct_gate) {
            tracing::info!(mode = ?self.config.conntrack_gate, on = state.ct_gate, "conntrack gate");
        }
        if self.node_state != Some(state) {
            tracing::info!(
                forwarding_v4 = state.forwarding_v4,
                forwarding_v6 = state.forwarding_v6,
                ct_gate = state.ct_gate,
                "node state"
            );
            dp.set_state(state.to_map())?;
            self.node_state = Some(state);
        }

        let actual = Actual {
            routes: kernel::our_routes(h).await?,
            neighbours: kernel::neighbours(h, uplink.index).await?,
            trie: dp.trie()?,
            bridge_nets: kernel::addresses(h, bridge.index).await?,
            bridge_neighbours: kernel::neighbours(h, bridge.index).await?,
            fdb: kernel::fdb(h, bridge.index).await?,
            ports: ports.iter().map(|p| p.index).collect(),
            endpoints: dp.endpoints()?,
        };
        let up = Uplink {
            index: uplink.index,
            mac: uplink.mac,
            mtu: uplink.mtu,
        };
        let ops = match &desired {
            Some(d) => plan::plan(d, &actual, &up),
            // No node list yet: only the endpoints, which do not depend on it.
            None => plan::plan(&Desired::default(), &actual, &up)
                .into_iter()
                .filter(|op| matches!(op, Op::PutEndpoint { .. } | Op::DeleteEndpoint { .. }))
                .collect(),
        };
        let mut round = Round {
            ops: ops.len(),
            errors: sysctl_errors,
            nodes_applied: desired.is_some(),
            routes_v4: desired.as_ref().map_or(0, |d| d.routes_of(Family::V4)),
            routes_v6: desired.as_ref().map_or(0, |d| d.routes_of(Family::V6)),
            ..Round::default()
        };
        for op in ops {
            if let Err(error) = self.apply(dp, &op, uplink.index).await {
                tracing::warn!(?op, %error, "operation failed; retried next round");
                round.errors += 1;
            } else {
                tracing::debug!(?op, "applied");
            }
        }
        round.duration = start.elapsed();
        Ok(round)
    }

    async fn apply(&self, dp: &mut Dataplane, op: &Op, uplink: u32) -> Result<(), ReconcileError> {
        let h = &self.handle;
        match op {
            Op::ResolveNeighbour { ip } => kernel::resolve_neighbour(h, *ip, uplink).await?,
            Op::ReplaceRoute { cidr, via } => {
                kernel::replace_route(h, *cidr, *via, uplink).await?;
                tracing::info!(%cidr, %via, "route installed");
            }
            Op::PutTrie { cidr, route } => dp.put_trie(*cidr, *route)?,
            Op::PutEndpoint { ip, endpoint } => {
                dp.put_endpoint(*ip, *endpoint)?;
                tracing::debug!(%ip, port = endpoint.ifindex, "endpoint");
            }
            Op::DeleteTrie { cidr } => dp.delete_trie(*cidr)?,
            Op::DeleteEndpoint { ip } => dp.delete_endpoint(*ip)?,
            Op::DeleteRoute { route } => {
                kernel::delete_route(h, route).await?;
                tracing::info!(cidr = %route.cidr, "route removed");
            }
            Op::DeleteNeighbour { neighbour } => kernel::delete_neighbour(h, neighbour).await?,
        }
        Ok(())
    }

    /// Exports a round's outcome to the metrics and `/status`.
    pub fn record(&self, m: &metrics::Metrics, result: &Result<Round, ReconcileError>) {
        m.rounds.inc();
        let gate = self.node_state.is_some_and(|s| s.ct_gate);
        let mode = format!("{:?}", self.config.conntrack_gate).to_lowercase();
        m.conntrack_gate.clear();
        m.conntrack_gate
            .get_or_create(&vec![("mode".to_owned(), mode)])
            .set(i64::from(gate));
        m.nodes_skipped.clear();
        for ((reason, family), n) in &self.skipped_by_reason {
            m.nodes_skipped
                .get_or_create(&vec![
                    ("reason".to_owned(), (*reason).to_owned()),
                    ("family".to_owned(), (*family).to_owned()),
                ])
                .set(*n as i64);
        }
        let last = match result {
            Ok(round) => {
                m.round_seconds.observe(round.duration.as_secs_f64());
                m.op_errors.inc_by(round.errors as u64);
                for (family, n) in [(Family::V4, round.routes_v4), (Family::V6, round.routes_v6)] {
                    m.nodes_programmed
                        .get_or_create(&vec![("family".to_owned(), family.label().to_owned())])
                        .set(n as i64);
                }
                metrics::LastRound {
                    at_unix: metrics::Metrics::now(),
                    ops: round.ops,
                    errors: round.errors,
                    millis: round.duration.as_secs_f64() * 1e3,
                    result: if round.errors == 0 {
                        "ok".into()
                    } else {
                        "operations failed".into()
                    },
                    routes: round.routes_v4 + round.routes_v6,
                    skipped: self.skipped_by_reason.values().sum(),
                    conntrack_gate: gate,
                }
            }
            Err(error) => {
                m.round_errors.inc();
                metrics::LastRound {
                    at_unix: metrics::Metrics::now(),
                    ops: 0,
                    errors: 1,
                    millis: 0.0,
                    result: format!("failed: {error}"),
                    routes: 0,
                    skipped: self.skipped_by_reason.values().sum(),
                    conntrack_gate: gate,
                }
            }
        };
        m.set_last(last);
    }

    /// Whether the conntrack gate should be on now.
    fn gate(&mut self) -> bool {
        match self.config.conntrack_gate {
            GateMode::On => true,
            GateMode::Off => false,
            GateMode::Auto => match nat::detect() {
                Ok(n) => {
                    if Some(n) != self.nat {
                        tracing::info!(
                            nft_nat_chains = n.nft_chains,
                            iptables_nat_table = n.legacy_table,
                            "netfilter NAT"
                        );
                        self.nat = Some(n);
                    }
                    n.present()
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot tell whether the node has NAT rules; gating to be safe");
                    true
                }
            },
        }
    }

    /// Logs each skipped node once per change of the skip set, and counts them by reason.
    fn report_skips(&mut self, d: &Desired) {
        if d.skipped == self.reported_skips {
            return;
        }
        let key = |s: &Skip| format!("{}/{}/{}", s.node, s.family_label(), s.reason);
        let before: BTreeSet<String> = self.reported_skips.iter().map(key).collect();
        for s in &d.skipped {
            if !before.contains(&key(s)) {
                tracing::warn!(
                    node = s.node,
                    family = s.family_label(),
                    reason = s.reason.kind(),
                    "skipping node: {}",
                    s.reason
                );
            }
        }
        self.skipped_by_reason.clear();
        for s in &d.skipped {
            *self
                .skipped_by_reason
                .entry((s.reason.kind(), s.family_label()))
                .or_default() += 1;
        }
        self.reported_skips.clone_from(&d.skipped);
    }
}

/// Subscribes to the netlink events that can make the kernel state differ from the desired
/// one (links, addresses, routes, neighbours, forwarding settings; IPv4 and IPv6) and wakes
/// `notify` on each.
pub fn watch_netlink(notify: Arc<Notify>) -> Result<(), ReconcileError> {
    let (mut conn, _handle, mut messages) =
        rtnetlink::new_connection().map_err(ReconcileError::Subscribe)?;
    // RTMGRP_NEIGH carries ARP and NDP alike.
    let groups = RTMGRP_LINK
        | RTMGRP_NEIGH
        | RTMGRP_IPV4_IFADDR
        | RTMGRP_IPV4_ROUTE
        | RTMGRP_IPV6_IFADDR
        | RTMGRP_IPV6_ROUTE;
    let socket = conn.socket_mut().socket_mut();
    socket
        .bind(&SocketAddr::new(0, groups))
        .map_err(ReconcileError::Subscribe)?;
    for group in [RTNLGRP_IPV4_NETCONF, RTNLGRP_IPV6_NETCONF] {
        socket
            .add_membership(group)
            .map_err(ReconcileError::Subscribe)?;
    }
    tokio::spawn(conn);
    tokio::spawn(async move {
        while messages.next().await.is_some() {
            notify.notify_one();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{
        cli::{Cli, Command},
        inspect::metrics::Metrics,
        source::NodeInfo,
    };

    fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Item {
        Item::Node(NodeInfo {
            name: name.into(),
            pod_cidrs: cidrs.iter().map(|s| (*s).to_owned()).collect(),
            internal_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    #[tokio::test]
    async fn skips_and_routes_are_exported_by_family() {
        let cli = Cli::try_parse_from([
            "hostgw-agent",
            "run",
            "--uplink",
            "eth0",
            "--node-name",
            "me",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let config = Config::try_from(args).expect("valid");
        let (_conn, handle, _) = rtnetlink::new_connection().expect("netlink socket");
        let mut r = Reconciler::new(config, handle, None);
        let items = [
            node(
                "me",
                &["10.1.79.0/24", "fd00:10:79::/64"],
                &["172.20.11.43"],
            ),
            node(
                "b",
                &["10.1.27.0/24", "fd00:10:27::/64"],
                &["172.20.11.42", "fd00:20::42"],
            ),
            node("c", &["10.1.28.0/24"], &["172.20.11.44"]),
            node("d", &["10.1.29.0/24"], &["172.20.11.45"]),
            Item::Malformed {
                name: "broken".into(),
                error: "bad".into(),
            },
        ];
        let local = Local {
            node_name: "me".into(),
            uplink_addrs: vec![
                "172.20.11.43/24".parse().unwrap(),
                "fd00:20::43/64".parse().unwrap(),
            ],
        };
        let d = desired::desired(&items, &local);
        r.report_skips(&d);
        assert_eq!(
            r.skipped_by_reason,
            BTreeMap::from([
                (("malformed_object", "any"), 1),
                (("no_pod_cidr", "ipv6"), 2),
            ])
        );
        let m = Metrics::new("/nonexistent/hostgw".into());
        let round = Round {
            routes_v4: d.routes_of(Family::V4),
            routes_v6: d.routes_of(Family::V6),
            ..Round::default()
        };
        r.record(&m, &Ok(round));
        let text = m.encode();
        for line in [
            "hostgw_nodes_skipped{reason=\"no_pod_cidr\",family=\"ipv6\"} 2",
            "hostgw_nodes_skipped{reason=\"malformed_object\",family=\"any\"} 1",
            "hostgw_nodes_programmed{family=\"ipv4\"} 3",
            "hostgw_nodes_programmed{family=\"ipv6\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(m.last().expect("recorded").routes, 4);
        assert_eq!(m.last().expect("recorded").skipped, 3);
    }
}
