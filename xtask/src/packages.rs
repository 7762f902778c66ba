//! Installs the Debian packages the tests, the lab and the benchmarks use, when missing.

use std::process::Command;

use anyhow::bail;

use crate::util::{is_root, output, run, say};

/// Debian packages the root tests and the lab call: `ip`, `bpftool`, `ping`, `traceroute`,
/// `iperf3`, `ethtool`, `conntrack` (conntrack entries for the gate's program tests) and `nft`
/// (kube-proxy-like NAT rules in the lab).
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "iputils-ping",
    "traceroute",
    "iperf3",
    "ethtool",
    "conntrack",
    "nftables",
];

/// Installs every package of `packages` that is not installed yet, saying which.
pub fn ensure(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    say(format!("installing Debian packages: {}", missing.join(" ")));
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut cmd = if sudo {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        } else {
            Command::new("apt-get")
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if sudo && Command::new("sudo").arg("-V").output().is_err() {
        bail!(
            "packages {} are missing and this is not root, and there is no sudo to install \
             them: install them, or run as root",
            missing.join(" ")
        );
    }
    run(&mut apt(&["update", "-qq"]))?;
    let mut install = apt(&["install", "-y", "-qq", "--no-install-recommends"]);
    install.args(&missing);
    run(&mut install)?;
    let still: Vec<&str> = missing.into_iter().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!(
            "apt-get ran but {} are still not installed",
            still.join(" ")
        );
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|s| s.trim_end().ends_with("install ok installed"))
}
