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
//! Writes: `net.ipv4.ip_forward` at start-up, and `net.ipv6.conf.all.forwarding` once this
//! node has an IPv6 pod CIDR. With forwarding on, the kernel ignores Router Advertisements on
//! interfaces whose `accept_ra` is 1, so before switching IPv6 forwarding on, an uplink with
//! `accept_ra = 1` is set to 2 (accept them anyway) to keep a SLAAC default route. Each change
//! is logged. Nothing else is written.

use std::{
    io,
    path::{Path, PathBuf},
};

use hostgw_common::{STATE_F_CT_GATE, STATE_F_FORWARD_V4, STATE_F_FORWARD_V6, State};

use crate::model::Link;

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

/// What the agent read, and the interface addresses the programs match frames against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub forwarding_v4: bool,
    pub forwarding_v6: bool,
    /// The conntrack gate is on.
    pub ct_gate: bool,
    pub bridge_mac: [u8; 6],
    pub uplink_mac: [u8; 6],
}

impl NodeState {
    /// Reads the state of the current network namespace. An unreadable setting counts as off.
    pub fn read(bridge: &Link, uplink: &Link) -> Self {
        Self::read_from(Path::new(PROC_SYS), bridge, uplink)
    }

    fn read_from(root: &Path, bridge_link: &Link, uplink_link: &Link) -> Self {
        let on = |key: &str| match read(root, key) {
            Ok(v) => v == "1",
            Err(error) => {
                tracing::warn!(%error, "treating it as off");
                false
            }
        };
        let (bridge, uplink) = (&bridge_link.name, &uplink_link.name);
        // force_forwarding is absent before 6.17: off, without a warning.
        let forced = |dev: &str| {
            read(root, &format!("net/ipv6/conf/{dev}/force_forwarding")).is_ok_and(|v| v == "1")
        };
        Self {
            forwarding_v4: on(&format!("net/ipv4/conf/{bridge}/forwarding"))
                && on(&format!("net/ipv4/conf/{uplink}/forwarding")),
            forwarding_v6: on("net/ipv6/conf/all/forwarding") || (forced(bridge) && forced(uplink)),
            ct_gate: false,
            bridge_mac: bridge_link.mac,
            uplink_mac: uplink_link.mac,
        }
    }

    /// The value of the programs' state map.
    pub fn to_map(self) -> State {
        let mut flags = 0;
        if self.forwarding_v4 {
            flags |= STATE_F_FORWARD_V4;
        }
        if self.forwarding_v6 {
            flags |= STATE_F_FORWARD_V6;
        }
        if self.ct_gate {
            flags |= STATE_F_CT_GATE;
        }
        State {
            flags,
            bridge_mac: self.bridge_mac,
            uplink_mac: self.uplink_mac,
        }
    }
}

/// One sysctl change: `key` (relative to `/proc/sys`, with slashes) from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub from: String,
    pub to: &'static str,
}

/// The changes that switch IPv6 forwarding on, given `all.forwarding` and the uplink's
/// `accept_ra` (`None` when it cannot be read): none while forwarding is on; otherwise
/// `accept_ra` 1 → 2 on the uplink first, then `all.forwarding` → 1.
pub fn ipv6_forwarding_changes(
    all_forwarding: &str,
    uplink: &str,
    uplink_accept_ra: Option<&str>,
) -> Vec<Change> {
    if all_forwarding == "1" {
        return Vec::new();
    }
    let mut out = Vec::new();
    if uplink_accept_ra == Some("1") {
        out.push(Change {
            key: format!("net/ipv6/conf/{uplink}/accept_ra"),
            from: "1".to_owned(),
            to: "2",
        });
    }
    out.push(Change {
        key: "net/ipv6/conf/all/forwarding".to_owned(),
        from: all_forwarding.to_owned(),
        to: "1",
    });
    out
}

/// Switches IPv6 forwarding on (see the module documentation) if it is off; returns the
/// changes made, each logged at INFO.
pub fn enable_ipv6_forwarding(uplink: &str) -> Result<Vec<Change>, SysctlError> {
    enable_ipv6_forwarding_in(Path::new(PROC_SYS), uplink)
}

fn enable_ipv6_forwarding_in(root: &Path, uplink: &str) -> Result<Vec<Change>, SysctlError> {
    let all = read(root, "net/ipv6/conf/all/forwarding")?;
    if all == "1" {
        return Ok(Vec::new());
    }
    let accept_ra = read(root, &format!("net/ipv6/conf/{uplink}/accept_ra")).ok();
    let changes = ipv6_forwarding_changes(&all, uplink, accept_ra.as_deref());
    for c in &changes {
        write(root, &c.key, c.to)?;
        tracing::info!(
            sysctl = c.key.replace('/', "."),
            from = c.from,
            to = c.to,
            "changed a sysctl: this node has an IPv6 pod CIDR"
        );
    }
    Ok(changes)
}

/// Turns `net.ipv4.ip_forward` on if it is off, and says so: a host-gw node routes.
pub fn enable_ipv4_forwarding() -> Result<(), SysctlError> {
    let root = Path::new(PROC_SYS);
    let now = read(root, "net/ipv4/ip_forward")?;
    if now != "1" {
        write(root, "net/ipv4/ip_forward", "1")?;
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

fn write(root: &Path, key: &str, value: &'static str) -> Result<(), SysctlError> {
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

    /// The bridge and the uplink.
    fn ifaces() -> (Link, Link) {
        let link = |index, name: &str| Link {
            index,
            name: name.to_owned(),
            mac: [2, 0, 0, 0, 0, index as u8],
            mtu: 1500,
            controller: None,
            is_veth: false,
        };
        (link(5, "cni0"), link(2, "eth0"))
    }

    #[test]
    fn ipv6_forwarding_changes_protect_router_advertisements() {
        assert_eq!(ipv6_forwarding_changes("1", "eth0", Some("1")), vec![]);
        let c = ipv6_forwarding_changes("0", "eth0", Some("1"));
        let keys: Vec<(&str, &str, &str)> = c
            .iter()
            .map(|c| (c.key.as_str(), c.from.as_str(), c.to))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("net/ipv6/conf/eth0/accept_ra", "1", "2"),
                ("net/ipv6/conf/all/forwarding", "0", "1"),
            ]
        );
        // accept_ra 0 (no RAs wanted) or 2 (already accepted while forwarding) stays.
        for ra in [Some("0"), Some("2"), None] {
            let c = ipv6_forwarding_changes("0", "eth0", ra);
            assert_eq!(c.len(), 1, "{ra:?}: {c:?}");
            assert_eq!(c[0].key, "net/ipv6/conf/all/forwarding");
        }
    }

    #[test]
    fn enabling_ipv6_forwarding_writes_the_files() {
        let proc = FakeProc::new(
            "enable",
            &[
                ("net/ipv6/conf/all/forwarding", "0"),
                ("net/ipv6/conf/eth0/accept_ra", "1"),
            ],
        );
        let changes = enable_ipv6_forwarding_in(&proc.0, "eth0").expect("writes");
        assert_eq!(changes.len(), 2);
        assert_eq!(proc.get("net/ipv6/conf/all/forwarding"), "1");
        assert_eq!(proc.get("net/ipv6/conf/eth0/accept_ra"), "2");
        // Already on: nothing to do.
        assert_eq!(enable_ipv6_forwarding_in(&proc.0, "eth0").unwrap(), vec![]);
    }

    #[test]
    fn a_missing_sysctl_is_an_error_naming_its_path() {
        let proc = FakeProc::new("missing", &[]);
        let e = enable_ipv6_forwarding_in(&proc.0, "eth0").unwrap_err();
        assert!(
            e.to_string().ends_with("net/ipv6/conf/all/forwarding"),
            "{e}"
        );
    }

    #[test]
    fn node_state_reads_both_families() {
        let base = [
            ("net/ipv4/conf/cni0/forwarding", "1"),
            ("net/ipv4/conf/eth0/forwarding", "1"),
        ];
        let proc = FakeProc::new(
            "state-on",
            &[base[0], base[1], ("net/ipv6/conf/all/forwarding", "1")],
        );
        let s = {
            let (bridge, uplink) = ifaces();
            NodeState::read_from(&proc.0, &bridge, &uplink)
        };
        assert!(s.forwarding_v4 && s.forwarding_v6, "{s:?}");
        assert_eq!(s.to_map().flags, STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6);

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
            ],
        );
        let s = {
            let (bridge, uplink) = ifaces();
            NodeState::read_from(&proc.0, &bridge, &uplink)
        };
        assert!(!s.forwarding_v4 && !s.forwarding_v6, "{s:?}");
        std::fs::create_dir_all(proc.0.join("net/ipv6/conf/cni0")).unwrap();
        std::fs::write(proc.0.join("net/ipv6/conf/cni0/force_forwarding"), "1\n").unwrap();
        let s = {
            let (bridge, uplink) = ifaces();
            NodeState::read_from(&proc.0, &bridge, &uplink)
        };
        assert!(s.forwarding_v6, "{s:?}");
        assert_eq!(s.to_map().flags, STATE_F_FORWARD_V6);
    }
}
