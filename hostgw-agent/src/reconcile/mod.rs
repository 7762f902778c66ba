//! The reconciler: on every trigger (a new node list, a netlink event, the periodic resync) it
//! runs a round from the full current state, so a missed or duplicated event cannot leave
//! stale state. It never acts on a single event's content.
//!
//! A round is observe → desired → plan → apply and nothing else: the [`Host`] reads the kernel
//! and the maps into plain data ([`Observed`]), [`desired`] and [`plan`](plan::plan) are pure,
//! and every write is an [`Op`] the host carries out. Errors of single operations are logged
//! and counted and the round goes on (the next round retries); an error observing ends it.
//! A round that switched a sysctl on observes and plans once more, so the node state the
//! programs follow reflects the write in the same round.
//!
//! The reconciler also owns what operators see of rounds: each skipped node logged once per
//! change, NAT and gate changes, applied changes, and the metrics.

mod apply;
pub mod desired;
mod plan;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use ipnet::IpNet;
use rtnetlink::{
    constants::{
        RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE, RTMGRP_LINK,
        RTMGRP_NEIGH,
    },
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::sync::Notify;

pub use self::apply::{Host, Kernel};
use self::{
    desired::{Desired, Local, Skip},
    plan::{Observed, Op},
};
use crate::{
    cli::GateMode,
    config::Config,
    dataplane::DataplaneError,
    host::{iface::IfaceError, netlink::KernelError, sysctl::SysctlError},
    inspect::metrics,
    model::{Family, Netfilter, Route},
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
    /// A sysctl could not be written.
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    /// The xfrm policies could not be read.
    #[error("cannot read the xfrm policies")]
    Xfrm(#[source] std::io::Error),
    /// The netlink event socket could not be set up.
    #[error("cannot subscribe to netlink events")]
    Subscribe(#[source] std::io::Error),
}

/// `RTNLGRP_TC`: qdiscs and filters (other tc users) coming and going.
const RTNLGRP_TC: u32 = 4;
/// `RTNLGRP_IPV4_RULE` and `RTNLGRP_IPV6_RULE`: policy routing rules.
const RTNLGRP_IPV4_RULE: u32 = 8;
const RTNLGRP_IPV6_RULE: u32 = 19;
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
    nodes: Option<Nodes>,
    /// Skipped nodes last logged, so each is reported once per change.
    reported_skips: Vec<Skip>,
    /// Whether the conntrack gate was on in the last round.
    gate: Option<bool>,
    /// NAT last seen by `--conntrack-gate auto`.
    netfilter: Option<Netfilter>,
    /// Skipped nodes by reason and family (`ipv4`, `ipv6` or `any`), for metrics.
    pub skipped_by_reason: BTreeMap<(&'static str, &'static str), usize>,
    /// The last node list that had this node: a list without it (a file read half written,
    /// a truncated API answer) is not applied.
    trusted: Option<Arc<Vec<Item>>>,
    /// Whether the latest list's lack of this node was logged.
    lack_logged: bool,
    /// Remote pod CIDRs left to another route of the main table, as last reported.
    pub conflicts: BTreeMap<IpNet, Route>,
}

impl Reconciler {
    pub fn new(config: Config, nodes: Option<Nodes>) -> Self {
        Self {
            config,
            nodes,
            reported_skips: Vec::new(),
            gate: None,
            netfilter: None,
            skipped_by_reason: BTreeMap::new(),
            trusted: None,
            lack_logged: false,
            conflicts: BTreeMap::new(),
        }
    }

    /// The node list to apply: the latest one when it has this node (`--node-name`), else
    /// the last one that had it (or none). Every node's routes depend on the list being
    /// whole, and one without this node is not: a file read while it was being rewritten,
    /// an API answer cut short.
    fn items(&mut self) -> Option<Arc<Vec<Item>>> {
        let latest = self.nodes.as_ref().and_then(|n| n.borrow().clone())?;
        let me = self.config.node_name.as_str();
        // Present, even if malformed: that is a problem of the object, reported as such, not
        // a sign of a list cut short.
        if latest.iter().any(|i| match i {
            Item::Node(n) => n.name == me,
            Item::Malformed { name, .. } => name == me,
        }) {
            self.lack_logged = false;
            self.trusted = Some(Arc::clone(&latest));
            return Some(latest);
        }
        if !self.lack_logged {
            self.lack_logged = true;
            tracing::warn!(
                node = me,
                nodes = latest.len(),
                kept = self.trusted.is_some(),
                "the node list has no node named {me} (this node, --node-name): not applying \
                 it; {}",
                if self.trusted.is_some() {
                    "the last list that had it stays in force"
                } else {
                    "no routes until a list has it"
                }
            );
        }
        self.trusted.clone()
    }

    /// One full round against `host`.
    #[tracing::instrument(skip_all)]
    pub async fn round(&mut self, host: &mut impl Host) -> Result<Round, ReconcileError> {
        let start = Instant::now();
        let mut round = Round::default();
        // A second pass only after a sysctl write, which a plan never repeats once applied.
        for _pass in 0..2 {
            let auto = self.config.conntrack_gate == GateMode::Auto;
            let observed = host
                .observe(&self.config.uplink, &self.config.bridge, auto)
                .await?;
            let desired = self.desired(&observed);
            if let Some(d) = &desired {
                self.report_conflicts(plan::conflicts(d, &observed), d);
            }
            let gate = self.gate(&observed);
            let ops = plan::plan(desired.as_ref(), &observed, gate);
            round.ops += ops.len();
            round.nodes_applied = desired.is_some();
            round.routes_v4 = desired.as_ref().map_or(0, |d| d.routes_of(Family::V4));
            round.routes_v6 = desired.as_ref().map_or(0, |d| d.routes_of(Family::V6));
            let mut wrote_sysctl = false;
            for op in &ops {
                match host.apply(op).await {
                    Ok(()) => {
                        wrote_sysctl |= matches!(op, Op::WriteSysctl { .. });
                        log_applied(op);
                    }
                    Err(error) => {
                        tracing::warn!(?op, %error, "operation failed; retried next round");
                        round.errors += 1;
                    }
                }
            }
            if !wrote_sysctl {
                break;
            }
        }
        round.duration = start.elapsed();
        Ok(round)
    }

    /// The desired state for the latest node list, if one has been read.
    fn desired(&mut self, observed: &Observed) -> Option<Desired> {
        let items = self.items()?;
        let local = Local {
            node_name: self.config.node_name.clone(),
            uplink_addrs: observed.uplink_addrs.clone(),
            cluster_cidrs: self.config.cluster_cidrs.clone(),
            service_cidrs: self.config.service_cidrs.clone(),
        };
        let d = desired::desired(&items, &local);
        self.report_skips(&d);
        Some(d)
    }

    /// Exports a round's outcome to the metrics and `/status`.
    pub fn record(&self, m: &metrics::Metrics, result: &Result<Round, ReconcileError>) {
        m.rounds.inc();
        let gate = self.gate.unwrap_or(false);
        let mode = format!("{:?}", self.config.conntrack_gate).to_lowercase();
        m.conntrack_gate.clear();
        m.conntrack_gate
            .get_or_create(&vec![("mode".to_owned(), mode)])
            .set(i64::from(gate));
        m.route_conflicts.set(self.conflicts.len() as i64);
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
                    conflicts: self.conflicts.keys().map(ToString::to_string).collect(),
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
                    conflicts: self.conflicts.keys().map(ToString::to_string).collect(),
                }
            }
        };
        m.set_last(last);
    }

    /// Whether the conntrack gate should be on now; logs netfilter and gate changes.
    fn gate(&mut self, observed: &Observed) -> bool {
        let on = match self.config.conntrack_gate {
            GateMode::On => true,
            GateMode::Off => false,
            GateMode::Auto => {
                match &observed.netfilter {
                    Some(Ok(n)) if Some(*n) != self.netfilter => {
                        tracing::info!(
                            nft_nat_chains = n.nat_chains,
                            nft_forward_path_chains = n.forward_chains,
                            iptables_legacy_tables = n.legacy_tables,
                            acts = n.acts(),
                            "netfilter on the forward path"
                        );
                        self.netfilter = Some(*n);
                    }
                    Some(Err(error)) => tracing::warn!(
                        %error,
                        "cannot tell what netfilter does with forwarded traffic; gating to be safe"
                    ),
                    _ => {}
                }
                plan::auto_gate(observed.netfilter.as_ref())
            }
        };
        if self.gate != Some(on) {
            tracing::info!(mode = ?self.config.conntrack_gate, on, "conntrack gate");
            self.gate = Some(on);
        }
        on
    }

    /// Logs each skipped node once per change of the skip set, and counts them by reason.
    /// Logs each remote pod CIDR that another route of the main table takes, and each that
    /// is free again, once per change.
    fn report_conflicts(&mut self, now: BTreeMap<IpNet, Route>, d: &Desired) {
        if now == self.conflicts {
            return;
        }
        for (cidr, theirs) in &now {
            if self.conflicts.get(cidr) != Some(theirs) {
                tracing::warn!(
                    %cidr,
                    node = d.routes.get(cidr).map(|r| r.node.as_str()),
                    their_via = theirs.via.map(|v| v.to_string()),
                    "the main table has a route for pod CIDR {cidr} that is not hostgw's: it \
                     is left alone, and the CIDR to the kernel, until that route is gone"
                );
            }
        }
        for cidr in self.conflicts.keys() {
            if !now.contains_key(cidr) {
                tracing::info!(%cidr, "the other route for pod CIDR {cidr} is gone: routing it");
            }
        }
        self.conflicts = now;
    }

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

/// Logs an applied operation: changes operators care about at INFO, map entries at DEBUG.
fn log_applied(op: &Op) {
    match op {
        Op::AttachPort { name, .. } => {
            tracing::info!(port = name, "egress program attached to a bridge port");
        }
        Op::DetachPort { name } => tracing::info!(port = name, "released: the port is gone"),
        Op::WriteSysctl { key, from, to } => tracing::info!(
            sysctl = key.replace('/', "."),
            from,
            to,
            "changed a sysctl: this node has an IPv6 pod CIDR"
        ),
        Op::SetState { state } => tracing::info!(
            forwarding_v4 = state.flags & hostgw_common::STATE_F_FORWARD_V4 != 0,
            forwarding_v6 = state.flags & hostgw_common::STATE_F_FORWARD_V6 != 0,
            ct_gate = state.flags & hostgw_common::STATE_F_CT_GATE != 0,
            policy_rules = state.flags & hostgw_common::STATE_F_POLICY != 0,
            xfrm = state.flags & hostgw_common::STATE_F_XFRM != 0,
            "node state"
        ),
        Op::SetHook {
            ifindex,
            flags,
            users,
        } => tracing::warn!(
            ifindex,
            shared_ingress = flags & hostgw_common::HOOK_F_SHARED_INGRESS != 0,
            port_egress = flags & hostgw_common::HOOK_F_PORT_EGRESS != 0,
            ingress = ?users.ingress,
            egress = ?users.egress,
            "interface has other tc users: its traffic meets them as on the kernel path \
             (a shared ingress hook hands every packet on; a port's own egress gets its pod's \
             packets)"
        ),
        Op::DeleteHook { ifindex } => {
            tracing::info!(
                ifindex,
                "interface has no other tc users: fast path back on"
            );
        }
        Op::ReplaceRoute { cidr, via, .. } => tracing::info!(%cidr, %via, "route installed"),
        Op::DeleteRoute { route } => tracing::info!(cidr = %route.cidr, "route removed"),
        _ => tracing::debug!(?op, "applied"),
    }
}

/// Subscribes to the netlink events that can make the kernel state differ from the desired
/// one (links, addresses, routes, rules, neighbours, qdiscs and filters, forwarding settings;
/// IPv4 and IPv6) and wakes `notify` on each.
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
    for group in [
        RTNLGRP_TC,
        RTNLGRP_IPV4_RULE,
        RTNLGRP_IPV6_RULE,
        RTNLGRP_IPV4_NETCONF,
        RTNLGRP_IPV6_NETCONF,
    ] {
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
