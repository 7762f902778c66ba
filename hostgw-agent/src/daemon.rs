//! The daemon: finds the interfaces, loads and attaches the dataplane, then runs reconcile
//! rounds until shutdown, and detaches (or, with `--keep-dataplane`, leaves it forwarding).
//!
//! Owns the process-wide order (pin directory, IPv4 forwarding, netlink subscription, attach,
//! HTTP endpoint, node source) and what ends a round loop; a round itself is [`reconcile`]'s.

use std::{future::Future, sync::Arc, time::Duration};

use hostgw_common::{CONFIG_F_CT_TIMEOUT, CONFIG_F_FIB_FALLBACK, CONFIG_F_XDP_TX, names};

use crate::{
    cli,
    config::Config,
    dataplane::{
        self, Dataplane, TcPolicy,
        features::{ConntrackKfuncs, Features},
        kfunc,
    },
    host::{bpffs, conntrack, iface, netfilter, release, sysctl, xfrm},
    inspect::{http, metrics},
    model::Link,
    reconcile,
    source::{self, kube},
};

/// How often the legacy iptables tables, which send no notifications, are looked at.
const NETFILTER_POLL: Duration = Duration::from_millis(500);

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pin directory is unusable.
    #[error(transparent)]
    Bpffs(#[from] bpffs::BpffsError),
    /// An interface lookup failed.
    #[error(transparent)]
    Iface(#[from] iface::IfaceError),
    /// Loading, attaching or detaching failed.
    #[error(transparent)]
    Dataplane(#[from] dataplane::DataplaneError),
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Netlink(#[source] std::io::Error),
    /// The nftables change notifications could not be subscribed to.
    #[error("cannot subscribe to nftables changes")]
    Netfilter(#[source] std::io::Error),
    /// The xfrm policy notifications could not be subscribed to.
    #[error("cannot subscribe to xfrm policy changes")]
    Xfrm(#[source] std::io::Error),
    /// A reconcile round, or the netlink subscription, failed.
    #[error(transparent)]
    Reconcile(#[from] reconcile::ReconcileError),
    /// The Kubernetes client could not be set up.
    #[error(transparent)]
    Kube(#[from] kube::KubeError),
    /// The kernel is too old for the programs.
    #[error(transparent)]
    KernelTooOld(#[from] release::TooOld),
    /// The HTTP endpoint could not start.
    #[error(transparent)]
    Http(#[from] http::HttpError),
    /// Forwarding could not be read or switched on.
    #[error(transparent)]
    Sysctl(#[from] sysctl::SysctlError),
}

/// The interfaces the dataplane hooks into.
#[derive(Debug, Clone)]
pub struct Interfaces {
    pub uplink: Link,
    pub bridge: Link,
}

impl Interfaces {
    /// Looks the configured interfaces up in the current network namespace.
    pub async fn discover(handle: &rtnetlink::Handle, config: &Config) -> Result<Self, Error> {
        let uplink = iface::by_name(handle, &config.uplink).await?;
        let bridge = iface::by_name(handle, &config.bridge).await?;
        Ok(Self { uplink, bridge })
    }

    /// The programs' read-only configuration for these interfaces.
    ///
    /// `XDP_TX` is allowed unless the uplink is a veth: a veth in native XDP mode drops frames
    /// sent with `XDP_TX` when its peer has no NAPI, which is the peer namespace's choice.
    pub fn program_config(&self, config: &Config, kernel: &kfunc::Kernel) -> hostgw_common::Config {
        let mut flags = 0;
        if config.fib_fallback {
            flags |= CONFIG_F_FIB_FALLBACK;
        }
        if !self.uplink.is_veth {
            flags |= CONFIG_F_XDP_TX;
        }
        if kernel.has_change_timeout() {
            flags |= CONFIG_F_CT_TIMEOUT;
        }
        hostgw_common::Config {
            flags,
            uplink_ifindex: self.uplink.index,
            bridge_ifindex: self.bridge.index,
            ct_status_off: kernel.ct_status_off.unwrap_or(0),
            ct_opts_size: kernel.ct_opts_size.unwrap_or(0),
            ct_timeout_off: kernel.ct_timeout_off.unwrap_or(0),
            ct_tcp_state_off: kernel.ct_tcp_state_off.unwrap_or(0),
            pad: 0,
        }
    }
}

/// Loads the programs and attaches them to the uplink (XDP and TC) and the bridge (TC); the
/// bridge ports get theirs in the reconcile rounds. On failure, whatever was attached is
/// detached again.
pub fn attach_all(
    config: &Config,
    ifaces: &Interfaces,
) -> Result<Dataplane, dataplane::DataplaneError> {
    let kernel = match kfunc::read_kernel(std::path::Path::new(kfunc::VMLINUX_BTF)) {
        Ok(k) => k,
        Err(error) => {
            tracing::warn!(%error, "no kernel BTF");
            kfunc::Kernel::default()
        }
    };
    let features = Features::probe(&kernel);
    tracing::info!(
        tcx = features.tcx,
        conntrack_kfuncs = %features.conntrack_kfuncs,
        managed_neighbours = features.managed_neighbours,
        conntrack_change_timeout = kernel.has_change_timeout(),
        "kernel features"
    );
    if config.conntrack_gate != cli::GateMode::Off {
        match features.conntrack_kfuncs {
            ConntrackKfuncs::Missing => tracing::warn!(
                "this kernel has no conntrack lookup for BPF (bpf_skb_ct_lookup): while the \
                 conntrack gate is on, gated traffic always takes the kernel path"
            ),
            ConntrackKfuncs::NotLoaded => tracing::warn!(
                "the nf_conntrack module is not loaded, so its conntrack lookup for BPF \
                 (bpf_skb_ct_lookup) is not there: load it (modprobe nf_conntrack, or \
                 nf_conntrack in /etc/modules-load.d) and restart the agent; until then, while \
                 the conntrack gate is on, gated traffic takes the kernel path"
            ),
            ConntrackKfuncs::Vmlinux | ConntrackKfuncs::Modules(_) => {}
        }
    }
    let mut dp = Dataplane::load(
        &config.pin_dir,
        &ifaces.program_config(config, &kernel),
        &kernel,
    )?;
    dp.set_replace_programs(config.replace_programs);
    dp.set_tc_policy(match config.tc_attach {
        cli::TcAttach::Auto => TcPolicy {
            tcx: true,
            clsact: true,
        },
        cli::TcAttach::Tcx => TcPolicy {
            tcx: true,
            clsact: false,
        },
        cli::TcAttach::Clsact => TcPolicy {
            tcx: false,
            clsact: true,
        },
    });
    let xdp = match config.xdp {
        cli::XdpAttach::On => true,
        cli::XdpAttach::Off => false,
        cli::XdpAttach::Auto => !ifaces.uplink.is_veth,
    };
    let attached = (|| {
        if xdp {
            dp.attach_xdp(&ifaces.uplink)?;
        } else {
            tracing::info!(uplink = ifaces.uplink.name, mode = ?config.xdp, "XDP not attached: TC handles everything");
            dp.forget_xdp(&ifaces.uplink)?;
        }
        dp.attach_tc(names::PROG_INGRESS, &ifaces.uplink)?;
        dp.attach_tc(names::PROG_EGRESS, &ifaces.bridge)?;
        Ok(())
    })();
    match attached {
        Ok(()) => Ok(dp),
        Err(e) => {
            if let Err(cleanup) = dp.detach() {
                tracing::error!(error = %cleanup, "cleaning up after a failed attach");
            }
            Err(e)
        }
    }
}

/// The daemon: sets the dataplane up, reconciles until `shutdown`, then detaches (or, with
/// `--keep-dataplane`, leaves it forwarding).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let release = match release::running() {
        Ok(r) => {
            release::check(&r)?;
            r
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read the kernel release");
            String::new()
        }
    };
    let hz = match conntrack::kernel_hz(&release) {
        (hz, Some(from)) => {
            tracing::debug!(hz, from, "kernel tick rate");
            hz
        }
        (hz, None) => {
            tracing::warn!(
                hz,
                "cannot read CONFIG_HZ (no /proc/config.gz or /boot/config-<release>): \
                 assuming the largest, so conntrack entries of fast-pathed flows are refreshed \
                 earlier than needed"
            );
            hz
        }
    };
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Netlink)?;
    tokio::spawn(connection);

    let ifaces = Interfaces::discover(&handle, &config).await?;
    bpffs::ensure_pin_dir(&config.pin_dir)?;
    sysctl::enable_ipv4_forwarding()?;
    // Subscribe before the first round, so no change after it is missed.
    let wake = Arc::new(tokio::sync::Notify::new());
    reconcile::watch_netlink(Arc::clone(&wake))?;
    // Netfilter and xfrm changes wake a round at once, without the coalescing delay: a DNAT
    // rule added must have the gate on before the replies of the flows it rewrites come back.
    let at_once = Arc::new(tokio::sync::Notify::new());
    if config.conntrack_gate == cli::GateMode::Auto {
        let notify = Arc::clone(&at_once);
        netfilter::watch(move || notify.notify_one(), NETFILTER_POLL).map_err(Error::Netfilter)?;
    }
    // xfrm policies send routed traffic to the stack: as soon as one appears.
    let notify = Arc::clone(&at_once);
    xfrm::watch(move || notify.notify_one()).map_err(Error::Xfrm)?;
    let mut dp = attach_all(&config, &ifaces)?;
    if let Some(id) = dp.program_id(&format!("{}@{}", names::PROG_INGRESS, ifaces.uplink.name)) {
        dataplane::log::start(id);
    }
    tracing::info!(
        uplink = ifaces.uplink.name,
        bridge = ifaces.bridge.name,
        pin_dir = %config.pin_dir.display(),
        node = config.node_name,
        "dataplane attached"
    );

    let metrics = Arc::new(metrics::Metrics::new(config.pin_dir.clone()));
    let health = Arc::new(http::Health::with_metrics(Arc::clone(&metrics)));
    let addr = http::serve(config.metrics_addr, Arc::clone(&health)).await?;
    tracing::info!(%addr, "HTTP endpoint (/healthz, /readyz)");
    let mut nodes = node_source(&config).await?;
    let mut reconciler = reconcile::Reconciler::new(config.clone(), nodes.clone());
    let mut resync = tokio::time::interval(config.resync);
    tokio::pin!(shutdown);
    let mut first = true;
    loop {
        let result = reconciler
            .round(&mut reconcile::Kernel::new(handle.clone(), &mut dp, hz))
            .await;
        reconciler.record(&metrics, &result);
        // Ready once a round has applied a node list without errors (or, without a node
        // source, once the dataplane is set up).
        if !health.is_ready()
            && let Ok(round) = &result
            && round.errors == 0
            && (round.nodes_applied || nodes.is_none())
        {
            tracing::info!("ready: the node list is applied");
            health.set_ready();
        }
        match result {
            Ok(round) if round.ops > 0 || first => tracing::info!(
                ops = round.ops,
                errors = round.errors,
                ms = round.duration.as_secs_f64() * 1e3,
                "reconciled"
            ),
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "reconcile round failed; retrying"),
        }
        first = false;
        tokio::select! {
            () = &mut shutdown => break,
            () = at_once.notified() => {}
            () = wake.notified() => {
                // Coalesce a burst of events into one round.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            Ok(()) = changed(&mut nodes) => {}
            _ = resync.tick() => {}
        }
    }
    if config.keep_dataplane {
        tracing::info!("shutting down, leaving the dataplane attached (--keep-dataplane)");
        dp.keep();
    } else {
        tracing::info!("shutting down, detaching the dataplane");
        dp.detach()?;
    }
    Ok(())
}

/// The configured node source: `--nodes-file`, else the Kubernetes API when a kubeconfig is
/// given or the agent runs in a pod, else none (the dataplane runs without routes).
async fn node_source(config: &Config) -> Result<Option<source::Nodes>, Error> {
    let prefix = config.kube_annotation_prefix.clone();
    if let Some(path) = &config.nodes_file {
        tracing::info!(path = %path.display(), "node source: file");
        return Ok(Some(source::watch_file(path.clone(), prefix)));
    }
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    if config.kubeconfig.is_none() && !in_cluster {
        tracing::warn!(
            "no node source (--nodes-file, --kubeconfig or in-cluster): no routes will be installed"
        );
        return Ok(None);
    }
    let client = kube::client(config.kubeconfig.as_deref()).await?;
    tracing::info!("node source: the Kubernetes API");
    Ok(Some(kube::watch_nodes(client, prefix)))
}

/// Resolves when the node list changes; never when there is no node source.
async fn changed(
    nodes: &mut Option<source::Nodes>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match nodes {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// A future that resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called (inside the runtime), not when the future is first polled, so a signal that arrives
/// while the dataplane is being set up is not lost and does not kill the process.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn link(index: u32, name: &str, is_veth: bool) -> Link {
        Link {
            index,
            name: name.to_owned(),
            mac: [2, 0, 0, 0, 0, index as u8],
            mtu: 1500,
            controller: None,
            is_veth,
        }
    }

    fn config(fib_fallback: bool) -> Config {
        Config {
            node_name: "n1".to_owned(),
            nodes_file: None,
            kubeconfig: None,
            kube_annotation_prefix: source::nodes::DEFAULT_ANNOTATION_PREFIX.to_owned(),
            metrics_addr: "127.0.0.1:0".parse().unwrap(),
            replace_programs: false,
            conntrack_gate: cli::GateMode::Auto,
            xdp: cli::XdpAttach::Auto,
            tc_attach: cli::TcAttach::Auto,
            resync: Duration::from_secs(30),
            uplink: "eth0".to_owned(),
            bridge: "cni0".to_owned(),
            pin_dir: PathBuf::from("/sys/fs/bpf/hostgw"),
            netns: None,
            keep_dataplane: false,
            fib_fallback,
            cluster_cidrs: Vec::new(),
            service_cidrs: Vec::new(),
        }
    }

    #[test]
    fn program_config_follows_flags_and_interfaces() {
        let ifaces = Interfaces {
            uplink: link(2, "eth0", false),
            bridge: link(5, "cni0", false),
        };
        let kernel = kfunc::Kernel {
            ct_status_off: Some(128),
            ct_opts_size: Some(16),
            ..kfunc::Kernel::default()
        };
        let c = ifaces.program_config(&config(true), &kernel);
        assert_eq!((c.ct_status_off, c.ct_opts_size), (128, 16));
        assert_eq!(c.flags, CONFIG_F_FIB_FALLBACK | CONFIG_F_XDP_TX);
        assert_eq!((c.uplink_ifindex, c.bridge_ifindex), (2, 5));

        // --no-fib-fallback clears the FIB bit; a veth uplink may not XDP_TX.
        let veth = Interfaces {
            uplink: link(2, "eth0", true),
            ..ifaces
        };
        assert_eq!(veth.program_config(&config(false), &kernel).flags, 0);
    }
}
