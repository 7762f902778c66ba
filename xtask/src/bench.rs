//! `cargo xtask bench`: installs what is missing (the eBPF toolchain, the Debian packages the
//! labs and the benchmark call, a font for the chart), builds the agent and the benchmark
//! binary — release builds, or debug builds with `--quick` — and runs `hostgw-bench` as root.
//! It writes `results.md` and `results.png` into `target/bench` (or `--out`) and prints the
//! table; `--quick` is the short smoke run CI uses so the benchmark never rots. Numbers are
//! reported, never asserted.

use std::{path::PathBuf, process::Command};

use crate::{
    packages, toolchain,
    util::{self, is_root, say, target_dir, workspace_root},
};

/// Debian packages the benchmark needs on top of the tests' (`fonts-dejavu-core`: the
/// chart's text).
const BENCH_PACKAGES: &[&str] = &["fonts-dejavu-core"];

#[derive(Debug, clap::Args)]
pub struct Options {
    /// A short smoke run: debug builds, every figure once with short durations, through the
    /// same code (about two minutes). Its numbers are not representative.
    #[arg(long)]
    pub quick: bool,
    /// Where to write results.md and results.png (default: target/bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Further arguments for `hostgw-bench` (`--runs N`, `--only forwarding,tcp,rr,control`).
    #[arg(last = true)]
    pub bench_args: Vec<String>,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let path = toolchain::ensure()?;
    packages::ensure(packages::TEST_PACKAGES)?;
    packages::ensure(BENCH_PACKAGES)?;
    let root = workspace_root();
    let profile = if opts.quick { "debug" } else { "release" };

    say(format!(
        "building hostgw-agent and the benchmark binary hostgw-bench ({profile})"
    ));
    let mut build = Command::new("cargo");
    build
        .args([
            "build",
            "--package",
            "hostgw-agent",
            "--bin",
            "hostgw-agent",
            "--package",
            "hostgw-bench",
            "--bin",
            "hostgw-bench",
        ])
        .current_dir(&root)
        .env("PATH", &path);
    if !opts.quick {
        build.arg("--release");
    }
    util::run(&mut build)?;
    let bin = target_dir().join(profile);
    let agent = bin.join("hostgw-agent");
    let bench = bin.join("hostgw-bench");
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("bench"));

    let mut cmd = if is_root() {
        Command::new(&bench)
    } else {
        say("not root: running the benchmark through `sudo -E`");
        let mut c = Command::new("sudo");
        c.arg("-E").arg(&bench);
        c
    };
    cmd.args(["--build", profile])
        .arg("--out")
        .arg(&out)
        .args(&opts.bench_args)
        .env("HOSTGW_AGENT_BIN", &agent)
        .env("PATH", &path);
    if opts.quick {
        cmd.arg("--quick");
    }
    say(format!(
        "running {}: three 2-node labs and a control-plane node in network namespaces, torn \
         down at the end",
        if opts.quick {
            "the quick smoke benchmark"
        } else {
            "the full benchmark (about 20 minutes; keep the machine otherwise idle)"
        }
    ));
    // Ctrl-C reaches the benchmark too, which tears its labs down and exits.
    util::run_in_foreground(&mut cmd)
}
