//! `cargo xtask demo`: the README's main-job command. Installs what is missing (the eBPF
//! toolchain, the Debian packages the lab calls), builds the agent and the lab binary, and runs
//! `hostgw-lab demo` as root: a dual-stack 3-node lab with the agent on every node, walked
//! through the host-gw packet walk over IPv4 and IPv6. The lab binary tears the lab down on exit and on Ctrl-C; `--keep`
//! leaves it up and prints how to explore and remove it.

use std::{path::PathBuf, process::Command};

use crate::{
    packages, toolchain,
    util::{self, is_root, say, workspace_root},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Leave the lab up afterwards and print how to explore it (`ip netns exec …`) and how to
    /// tear it down.
    #[arg(long)]
    pub keep: bool,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: u8,
    /// Pods per node.
    #[arg(long, default_value_t = 2)]
    pub pods: u8,
    /// An IPv4-only lab (by default it is dual-stack).
    #[arg(long)]
    pub ipv4_only: bool,
    /// Further arguments for `hostgw-lab demo` (`--megabytes N`, `--name NAME`).
    #[arg(last = true)]
    pub lab_args: Vec<String>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let path = toolchain::ensure()?;
    packages::ensure(packages::TEST_PACKAGES)?;
    let root = workspace_root();

    say("building hostgw-agent (with its embedded eBPF object) and the lab binary hostgw-lab");
    util::run(
        Command::new("cargo")
            .args([
                "build",
                "--package",
                "hostgw-agent",
                "--package",
                "hostgw-tests",
                "--bins",
            ])
            .current_dir(&root)
            .env("PATH", &path),
    )?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("debug");
    let agent = target.join("hostgw-agent");
    let lab = target.join("hostgw-lab");

    let mut cmd = if is_root() {
        Command::new(&lab)
    } else {
        say("not root: running the lab through `sudo -E`");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&lab);
        c
    };
    cmd.arg("demo")
        .args(["--nodes", &opts.nodes.to_string()])
        .args(["--pods", &opts.pods.to_string()])
        .args(&opts.lab_args)
        .env("HOSTGW_AGENT_BIN", &agent)
        .env("PATH", &path);
    if opts.keep {
        cmd.arg("--keep");
    }
    if opts.ipv4_only {
        cmd.arg("--ipv4-only");
    }
    say(format!(
        "starting a {}-node × {}-pod {} lab with the agent on every node, and walking a packet \
         through it{}",
        opts.nodes,
        opts.pods,
        if opts.ipv4_only {
            "IPv4-only"
        } else {
            "dual-stack"
        },
        if opts.keep {
            " (--keep: the lab stays up)"
        } else {
            "; the lab is torn down at the end"
        }
    ));
    // Ctrl-C reaches the lab binary too, which tears the lab down and exits.
    util::run_in_foreground(&mut cmd)
}
