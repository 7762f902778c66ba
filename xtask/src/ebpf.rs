//! `cargo xtask build-ebpf`: builds `hostgw-ebpf` for `bpfel-unknown-none` with BTF, the same
//! way `hostgw-agent`'s build script does, and prints where the object is.

use std::{path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::{
    toolchain,
    util::{run, say, workspace_root},
};

/// The eBPF crate's package and binary names.
const PACKAGE: &str = "hostgw-ebpf";
const BINARY: &str = "hostgw";
const TARGET: &str = "bpfel-unknown-none";

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Build without optimizations (the agent always embeds a release build).
    #[arg(long)]
    pub debug: bool,
}

/// The flags aya-build passes: the target architecture for aya-ebpf's helpers, and debug info
/// turned into BTF by bpf-linker (BTF-defined maps do not load without it).
fn rustflags() -> String {
    let arch = std::env::consts::ARCH;
    [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
    ]
    .join("\x1f")
}

/// A `cargo +nightly <subcommand>` for the eBPF crate and target, with aya-build's flags.
fn nightly_cargo(subcommand: &str, path: &std::ffi::OsStr) -> Command {
    let root = workspace_root();
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain::NIGHTLY, "cargo", subcommand])
        .args(["--package", PACKAGE, "--bins", "--target", TARGET])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(crate::util::target_dir().join("ebpf"))
        .current_dir(&root)
        .env("PATH", path)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags())
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    cmd
}

/// Runs clippy on the eBPF crate for its real target, warnings denied.
pub fn clippy(path: &std::ffi::OsStr) -> anyhow::Result<()> {
    let mut cmd = nightly_cargo("clippy", path);
    cmd.args(["--", "-D", "warnings"]);
    run(&mut cmd)
}

/// Builds the eBPF object and returns its path.
pub fn build(opts: &Options) -> anyhow::Result<PathBuf> {
    let path = toolchain::ensure()?;
    let target_dir = crate::util::target_dir().join("ebpf");
    let mut cmd = nightly_cargo("build", &path);
    if !opts.debug {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if opts.debug { "debug" } else { "release" };
    let object = target_dir.join(TARGET).join(profile).join(BINARY);
    let object = object
        .canonicalize()
        .with_context(|| format!("the build finished but {} is missing", object.display()))?;
    say(format!("eBPF object: {}", object.display()));
    println!("{}", object.display());
    Ok(object)
}
