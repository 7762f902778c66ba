//! hostgw-agent: keeps a node's host-gw dataplane in the kernel.
//!
//! Data flows one way:
//!
//! ```text
//!   command line ──► Config ──► run()
//!                                 ├─ bpffs:     the pin directory is on a bpf filesystem
//!                                 ├─ iface:     uplink, bridge and bridge ports (rtnetlink)
//!                                 └─ dataplane: load the embedded object, reuse pinned maps,
//!                                               attach (XDP on the uplink, TC on the uplink,
//!                                               the bridge and every bridge port), pin links
//! ```
//!
//! On shutdown the dataplane is detached and unpinned, unless `--keep-dataplane` asks to leave
//! it forwarding for the next agent to adopt.

pub mod bpffs;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod iface;
pub mod netns;
pub mod sysctl;

use std::future::Future;

pub use config::Config;
use hostgw_common::{CONFIG_F_FIB_FALLBACK, CONFIG_F_XDP_TX, names};

use crate::{dataplane::Dataplane, iface::Link};

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
}

/// The interfaces the dataplane hooks into.
#[derive(Debug, Clone)]
pub struct Interfaces {
    pub uplink: Link,
    pub bridge: Link,
    pub ports: Vec<Link>,
}

impl Interfaces {
    /// Looks the configured interfaces up in the current network namespace.
    pub async fn discover(handle: &rtnetlink::Handle, config: &Config) -> Result<Self, Error> {
        let uplink = iface::by_name(handle, &config.uplink).await?;
        let bridge = iface::by_name(handle, &config.bridge).await?;
        let ports = iface::ports_of(handle, bridge.index).await?;
        Ok(Self {
            uplink,
            bridge,
            ports,
        })
    }

    /// The programs' read-only configuration for these interfaces.
    ///
    /// `XDP_TX` is allowed unless the uplink is a veth: a veth in native XDP mode drops frames
    /// sent with `XDP_TX` when its peer has no NAPI, which is the peer namespace's choice.
    pub fn program_config(&self, config: &Config) -> hostgw_common::Config {
        let mut flags = 0;
        if config.fib_fallback {
            flags |= CONFIG_F_FIB_FALLBACK;
        }
        if !self.uplink.is_veth {
            flags |= CONFIG_F_XDP_TX;
        }
        hostgw_common::Config {
            flags,
            uplink_ifindex: self.uplink.index,
            bridge_ifindex: self.bridge.index,
            pad: 0,
            bridge_mac: self.bridge.mac,
            uplink_mac: self.uplink.mac,
        }
    }
}

/// Loads the programs and attaches them to every hook: XDP and TC on the uplink, TC on the
/// bridge and on each of its ports. On failure, whatever was attached is detached again.
pub fn attach_all(
    config: &Config,
    ifaces: &Interfaces,
) -> Result<Dataplane, dataplane::DataplaneError> {
    let mut dp = Dataplane::load(&config.pin_dir, &ifaces.program_config(config))?;
    let attached = (|| {
        dp.attach_xdp(&ifaces.uplink)?;
        dp.attach_tc(names::PROG_INGRESS, &ifaces.uplink)?;
        dp.attach_tc(names::PROG_EGRESS, &ifaces.bridge)?;
        for port in &ifaces.ports {
            dp.attach_tc(names::PROG_EGRESS, port)?;
        }
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

/// The daemon: sets the dataplane up, waits for `shutdown`, then detaches (or, with
/// `--keep-dataplane`, leaves it forwarding).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Netlink)?;
    tokio::spawn(connection);

    let ifaces = Interfaces::discover(&handle, &config).await?;
    bpffs::ensure_pin_dir(&config.pin_dir)?;
    let mut dp = attach_all(&config, &ifaces)?;
    let mut state = sysctl::NodeState::read(&ifaces);
    dp.set_state(state.to_map())?;
    tracing::info!(forwarding_v4 = state.forwarding_v4, "node state written");
    tracing::info!(
        uplink = ifaces.uplink.name,
        bridge = ifaces.bridge.name,
        ports = ifaces.ports.len(),
        pin_dir = %config.pin_dir.display(),
        "dataplane attached"
    );

    // Until netlink tells us of changes, the node state is polled.
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {
                let now = sysctl::NodeState::read(&ifaces);
                if now != state {
                    tracing::info!(forwarding_v4 = now.forwarding_v4, "node state changed");
                    dp.set_state(now.to_map())?;
                    state = now;
                }
            }
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

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
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
            uplink: "eth0".to_owned(),
            bridge: "cni0".to_owned(),
            pin_dir: PathBuf::from("/sys/fs/bpf/hostgw"),
            netns: None,
            keep_dataplane: false,
            fib_fallback,
        }
    }

    #[test]
    fn program_config_follows_flags_and_interfaces() {
        let ifaces = Interfaces {
            uplink: link(2, "eth0", false),
            bridge: link(5, "cni0", false),
            ports: vec![],
        };
        let c = ifaces.program_config(&config(true));
        assert_eq!(c.flags, CONFIG_F_FIB_FALLBACK | CONFIG_F_XDP_TX);
        assert_eq!((c.uplink_ifindex, c.bridge_ifindex), (2, 5));
        assert_eq!(c.uplink_mac, [2, 0, 0, 0, 0, 2]);
        assert_eq!(c.bridge_mac, [2, 0, 0, 0, 0, 5]);

        // --no-fib-fallback clears the FIB bit; a veth uplink may not XDP_TX.
        let veth = Interfaces {
            uplink: link(2, "eth0", true),
            ..ifaces
        };
        assert_eq!(veth.program_config(&config(false)).flags, 0);
    }
}
