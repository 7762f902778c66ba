//! What the conntrack gate needs to know of the node's conntrack outside BPF: the timeout
//! sysctls of the node's namespace, and the kernel's tick rate, since `nf_conn.timeout` is
//! in jiffies.
//!
//! The tick rate is `CONFIG_HZ` from the kernel's configuration (`/proc/config.gz`, or
//! `/boot/config-<release>` as distributions install it). Where neither can be read, the
//! agent assumes 1000, the largest rate kernels are built with: the programs then refresh
//! entries earlier than needed, never later.

use std::{io::Read as _, path::Path};

use crate::model::ConntrackTimeouts;

use super::sysctl::PROC_SYS;

/// The tick rate assumed when the kernel's configuration cannot be read.
pub const FALLBACK_HZ: u32 = 1000;

/// Reads the timeouts of the current network namespace; `hz` is the kernel's tick rate.
pub fn read_timeouts(hz: u32) -> ConntrackTimeouts {
    read_timeouts_in(Path::new(PROC_SYS), hz)
}

fn read_timeouts_in(root: &Path, hz: u32) -> ConntrackTimeouts {
    let read = |name: &str| {
        std::fs::read_to_string(root.join("net/netfilter").join(name))
            .ok()
            .and_then(|v| v.trim().parse().ok())
    };
    ConntrackTimeouts {
        tcp_established: read("nf_conntrack_tcp_timeout_established"),
        tcp_time_wait: read("nf_conntrack_tcp_timeout_time_wait"),
        tcp_close: read("nf_conntrack_tcp_timeout_close"),
        udp: read("nf_conntrack_udp_timeout"),
        udp_stream: read("nf_conntrack_udp_timeout_stream"),
        hz,
    }
}

/// The kernel's tick rate, and where it was read (`None`: assumed, [`FALLBACK_HZ`]).
pub fn kernel_hz(release: &str) -> (u32, Option<String>) {
    let gz = Path::new("/proc/config.gz");
    let from_gz = std::fs::read(gz).ok().and_then(|data| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(&data[..])
            .read_to_string(&mut text)
            .ok()?;
        config_hz(&text)
    });
    if let Some(hz) = from_gz {
        return (hz, Some(gz.display().to_string()));
    }
    let boot = format!("/boot/config-{release}");
    match std::fs::read_to_string(&boot)
        .ok()
        .and_then(|t| config_hz(&t))
    {
        Some(hz) => (hz, Some(boot)),
        None => (FALLBACK_HZ, None),
    }
}

/// `CONFIG_HZ` of a kernel configuration.
fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&hz| hz > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_rate_is_config_hz() {
        let config = "# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\nCONFIG_X=y\n";
        assert_eq!(config_hz(config), Some(250));
        assert_eq!(config_hz("CONFIG_HZ_1000=y\n"), None);
    }

    #[test]
    fn this_kernels_tick_rate_is_one_kernels_are_built_with() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let (hz, from) = kernel_hz(release.trim());
        assert!([100, 250, 300, 1000].contains(&hz), "{hz} from {from:?}");
    }

    #[test]
    fn timeouts_are_read_from_the_netfilter_sysctls() {
        let root = std::env::temp_dir().join(format!("hostgw-ct-{}", std::process::id()));
        let dir = root.join("net/netfilter");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, value) in [
            ("nf_conntrack_tcp_timeout_established", "432000\n"),
            ("nf_conntrack_tcp_timeout_time_wait", "120\n"),
            ("nf_conntrack_udp_timeout", "30\n"),
            ("nf_conntrack_udp_timeout_stream", "120\n"),
        ] {
            std::fs::write(dir.join(name), value).unwrap();
        }
        let t = read_timeouts_in(&root, 250);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            t,
            ConntrackTimeouts {
                tcp_established: Some(432_000),
                tcp_time_wait: Some(120),
                tcp_close: None,
                udp: Some(30),
                udp_stream: Some(120),
                hz: 250,
            }
        );
        assert_eq!(
            t.for_programs(),
            hostgw_common::CtTimeouts {
                refresh: 15 * 250,
                tcp_established: 432_000_000,
                tcp_time_wait: 120_000,
                tcp_close: 0,
                udp: 30_000,
                udp_stream: 120_000,
            }
        );
        assert_eq!(
            ConntrackTimeouts::default().for_programs(),
            hostgw_common::CtTimeouts::default()
        );
    }
}
