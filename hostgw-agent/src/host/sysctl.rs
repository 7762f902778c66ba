//! Node settings the programs must follow, read from the kernel, and the only sysctls the
//! agent changes: turning forwarding on.
//!
//! IPv4: the kernel forwards a packet only if forwarding is on for the interface it arrived
//! on (`net.ipv4.conf.<dev>.forwarding`; `net.ipv4.ip_forward` sets it for every interface).
//! The fast path forwards IPv4 only while it is on for both the bridge and the uplink.
//!
//! IPv6: `ip6_forward` forwards while `net.ipv6.conf.all.forwarding` is on, or (kernels from
//! 6.17) while the arrival interface has `net.ipv6.conf.<dev>.force_forwarding`; the
//! per-interface `forwarding` only switches router behaviour (RAs, ND flags), not forwarding.
//! The fast path forwards IPv6 while `all.forwarding` is on, or `force_forwarding` is on for
//! both the bridge and the uplink.
//!
//! Writes: `net.ipv4.ip_forward` at start-up, and what the plan asks for ([`write()`]: IPv6
//! forwarding and the uplink's `accept_ra`, once this node has an IPv6 pod CIDR). Nothing
//! else is written.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::model::Forwarding;

/// Where the kernel's sysctls are.
pub const PROC_SYS: &str = "/proc/sys";

/// A sysctl that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// Reading the file failed.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the file failed.
    #[error("cannot write {value} to {path}")]
    Write {
        path: PathBuf,
        value: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Reads the forwarding settings of the current network namespace for `bridge` and `uplink`.
/// A setting that cannot be read is `None` (and counts as off); the ones that must exist are
/// logged when they cannot be read.
pub fn read_forwarding(bridge: &str, uplink: &str) -> Forwarding {
    read_forwarding_in(Path::new(PROC_SYS), bridge, uplink)
}

fn read_forwarding_in(root: &Path, bridge: &str, uplink: &str) -> Forwarding {
    let required = |key: String| match read(root, &key) {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::warn!(%error, "treating it as off");
            None
        }
    };
    // force_forwarding is absent before 6.17: off, without a warning.
    let optional = |key: String| read(root, &key).ok();
    Forwarding {
        v4_bridge: required(format!("net/ipv4/conf/{bridge}/forwarding")),
        v4_uplink: required(format!("net/ipv4/conf/{uplink}/forwarding")),
        v6_all: required("net/ipv6/conf/all/forwarding".to_owned()),
        v6_force_bridge: optional(format!("net/ipv6/conf/{bridge}/force_forwarding")),
        v6_force_uplink: optional(format!("net/ipv6/conf/{uplink}/force_forwarding")),
        uplink_accept_ra: optional(format!("net/ipv6/conf/{uplink}/accept_ra")),
    }
}

/// Writes `value` to the sysctl `key` (relative to `/proc/sys`, with slashes).
pub fn write(key: &str, value: &'static str) -> Result<(), SysctlError> {
    write_in(Path::new(PROC_SYS), key, value)
}

/// Turns `net.ipv4.ip_forward` on if it is off, and says so: a host-gw node routes.
pub fn enable_ipv4_forwarding() -> Result<(), SysctlError> {
    let root = Path::new(PROC_SYS);
    let now = read(root, "net/ipv4/ip_forward")?;
    if now != "1" {
        write_in(root, "net/ipv4/ip_forward", "1")?;
        tracing::warn!("net.ipv4.ip_forward was {now}; enabled it");
    }
    Ok(())
}

/// The trimmed value of `root/key`.
fn read(root: &Path, key: &str) -> Result<String, SysctlError> {
    let path = root.join(key);
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_owned())
        .map_err(|source| SysctlError::Read { path, source })
}

fn write_in(root: &Path, key: &str, value: &'static str) -> Result<(), SysctlError> {
    let path = root.join(key);
    std::fs::write(&path, value).map_err(|source| SysctlError::Write {
        path,
        value,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory laid out like `/proc/sys`, removed on drop.
    struct FakeProc(PathBuf);

    impl FakeProc {
        fn new(name: &str, files: &[(&str, &str)]) -> Self {
            let dir =
                std::env::temp_dir().join(format!("hostgw-sysctl-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (key, value) in files {
                let path = dir.join(key);
                std::fs::create_dir_all(path.parent().unwrap()).expect("mkdir");
                std::fs::write(&path, format!("{value}\n")).expect("write");
            }
            Self(dir)
        }

        fn get(&self, key: &str) -> String {
            read(&self.0, key).expect("readable")
        }
    }

    impl Drop for FakeProc {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_write_lands_in_the_file_and_a_missing_one_names_its_path() {
        let proc = FakeProc::new("write", &[("net/ipv6/conf/all/forwarding", "0")]);
        write_in(&proc.0, "net/ipv6/conf/all/forwarding", "1").expect("writes");
        assert_eq!(proc.get("net/ipv6/conf/all/forwarding"), "1");
        let e = write_in(&proc.0, "net/ipv6/conf/eth9/accept_ra", "2").unwrap_err();
        assert!(
            e.to_string().ends_with("net/ipv6/conf/eth9/accept_ra"),
            "{e}"
        );
    }

    #[test]
    fn forwarding_is_read_for_both_families() {
        let base = [
            ("net/ipv4/conf/cni0/forwarding", "1"),
            ("net/ipv4/conf/eth0/forwarding", "1"),
        ];
        let proc = FakeProc::new(
            "state-on",
            &[base[0], base[1], ("net/ipv6/conf/all/forwarding", "1")],
        );
        let f = read_forwarding_in(&proc.0, "cni0", "eth0");
        assert!(f.v4() && f.v6(), "{f:?}");

        // all.forwarding off: per-device forwarding does not count, force_forwarding on
        // both interfaces does.
        let proc = FakeProc::new(
            "state-forced",
            &[
                base[0],
                ("net/ipv4/conf/eth0/forwarding", "0"),
                ("net/ipv6/conf/all/forwarding", "0"),
                ("net/ipv6/conf/eth0/forwarding", "1"),
                ("net/ipv6/conf/cni0/forwarding", "1"),
                ("net/ipv6/conf/eth0/force_forwarding", "1"),
                ("net/ipv6/conf/eth0/accept_ra", "1"),
            ],
        );
        let f = read_forwarding_in(&proc.0, "cni0", "eth0");
        assert!(!f.v4() && !f.v6(), "{f:?}");
        assert_eq!(f.uplink_accept_ra.as_deref(), Some("1"));
        std::fs::create_dir_all(proc.0.join("net/ipv6/conf/cni0")).unwrap();
        std::fs::write(proc.0.join("net/ipv6/conf/cni0/force_forwarding"), "1\n").unwrap();
        let f = read_forwarding_in(&proc.0, "cni0", "eth0");
        assert!(f.v6(), "{f:?}");

        // Nothing readable: everything off.
        let proc = FakeProc::new("state-none", &[]);
        assert_eq!(
            read_forwarding_in(&proc.0, "cni0", "eth0"),
            Forwarding::default()
        );
    }
}
