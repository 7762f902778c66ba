//! Prometheus metrics (prefix `hostgw_`), served on `/metrics`: the datapath counters from the
//! pinned per-CPU stats map and the map fill levels, read at each scrape; the reconciler's
//! rounds, durations and errors; remote pod CIDRs programmed by family and nodes skipped by
//! reason and family; the conntrack gate.
//! Also the last round's summary that `/status` reports.

use std::{path::PathBuf, sync::Mutex, time::SystemTime};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};
use serde::Serialize;

type Labels = Vec<(String, String)>;

/// The agent's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub rounds: Counter,
    pub round_errors: Counter,
    pub op_errors: Counter,
    pub round_seconds: Histogram,
    pub nodes_programmed: Family<Labels, Gauge>,
    pub nodes_skipped: Family<Labels, Gauge>,
    pub conntrack_gate: Family<Labels, Gauge>,
    pub route_conflicts: Gauge,
    last: Mutex<Option<LastRound>>,
}

/// The last reconcile round, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct LastRound {
    pub at_unix: u64,
    pub ops: usize,
    pub errors: usize,
    pub millis: f64,
    pub result: String,
    pub routes: usize,
    pub skipped: usize,
    pub conntrack_gate: bool,
    /// Remote pod CIDRs left to another route of the main table.
    pub conflicts: Vec<String>,
}

impl Metrics {
    /// Metrics for a dataplane pinned in `pin_dir`.
    pub fn new(pin_dir: PathBuf) -> Self {
        let mut registry = Registry::with_prefix("hostgw");
        let rounds = Counter::default();
        registry.register("reconcile_rounds", "Reconcile rounds run", rounds.clone());
        let round_errors = Counter::default();
        registry.register(
            "reconcile_failures",
            "Reconcile rounds that could not read the state",
            round_errors.clone(),
        );
        let op_errors = Counter::default();
        registry.register(
            "reconcile_operation_errors",
            "Route, neighbour or map operations that failed (retried next round)",
            op_errors.clone(),
        );
        let round_seconds = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ]);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile rounds",
            round_seconds.clone(),
        );
        let nodes_programmed = Family::<Labels, Gauge>::default();
        registry.register(
            "nodes_programmed",
            "Remote pod CIDRs routed (kernel route and trie entry), by family",
            nodes_programmed.clone(),
        );
        let nodes_skipped = Family::<Labels, Gauge>::default();
        registry.register(
            "nodes_skipped",
            "Nodes not routed to, by reason and family (ipv4, ipv6, or any for the whole object)",
            nodes_skipped.clone(),
        );
        let conntrack_gate = Family::<Labels, Gauge>::default();
        registry.register(
            "conntrack_gate",
            "1 while the conntrack gate is on, labelled with the configured mode",
            conntrack_gate.clone(),
        );
        let route_conflicts = Gauge::default();
        registry.register(
            "route_conflicts",
            "Remote pod CIDRs left to a route of the main table that is not hostgw's",
            route_conflicts.clone(),
        );
        registry.register_collector(Box::new(Datapath { pin_dir }));
        Self {
            registry,
            rounds,
            round_errors,
            op_errors,
            round_seconds,
            nodes_programmed,
            nodes_skipped,
            conntrack_gate,
            route_conflicts,
            last: Mutex::new(None),
        }
    }

    /// The metrics in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "encoding metrics");
        }
        out
    }

    pub fn set_last(&self, last: LastRound) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(last);
    }

    pub fn last(&self) -> Option<LastRound> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Seconds since the epoch, for [`LastRound::at_unix`].
    pub fn now() -> u64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// Reads the pinned maps at each scrape.
#[derive(Debug)]
struct Datapath {
    pin_dir: PathBuf,
}

impl Collector for Datapath {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(rows) = super::stat_rows(&self.pin_dir, true) else {
            return Ok(());
        };
        for (name, help, bytes) in [
            (
                "datapath_packets",
                "Packets by address family, hook and verdict reason",
                false,
            ),
            (
                "datapath_bytes",
                "Bytes by address family, hook and verdict reason",
                true,
            ),
        ] {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for r in &rows {
                let labels = vec![("family", r.family), ("hook", r.hook), ("reason", r.reason)];
                let value = if bytes { r.bytes } else { r.packets };
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Ok(hooks) = super::hooks(&self.pin_dir) {
            let mut shared = encoder.encode_descriptor(
                "hook_shared",
                "Interfaces whose tc hooks have other users, by interface index and what the \
                 programs do there (shared_ingress: hand every packet on; port_egress: deliver \
                 through the port)",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (ifindex, flags) in hooks {
                let ifindex = ifindex.to_string();
                for flag in super::hook_flag_names(flags) {
                    ConstGauge::new(1).encode(
                        shared
                            .encode_family(&vec![("ifindex", ifindex.as_str()), ("flag", flag)])?,
                    )?;
                }
            }
        }
        let fills = super::map_fills(&self.pin_dir);
        let mut entries = encoder.encode_descriptor(
            "map_entries",
            "Entries in each map",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for fill in &fills {
            if let Ok(n) = fill.entries {
                ConstGauge::new(n as i64)
                    .encode(entries.encode_family(&vec![("map", fill.map)])?)?;
            }
        }
        let mut capacity = encoder.encode_descriptor(
            "map_capacity",
            "Capacity of each map",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for fill in &fills {
            if let Some(n) = fill.capacity {
                ConstGauge::new(i64::from(n))
                    .encode(capacity.encode_family(&vec![("map", fill.map)])?)?;
            }
        }
        Ok(())
    }
}
