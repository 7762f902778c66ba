//! Builds the eBPF object with aya-build and leaves it in `OUT_DIR` for `include_bytes!`, so
//! `cargo build` yields one self-contained `hostgw-agent` binary.
//!
//! The eBPF crate needs a nightly toolchain with `rust-src` and `bpf-linker`; when either is
//! missing this fails early with a message that says how to get them, instead of with a linker
//! error from deep inside the nested build.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};
use aya_build::{Package, Toolchain};

const EBPF_PACKAGE: &str = "hostgw-ebpf";
const SETUP_HINT: &str = "run `cargo xtask build-ebpf` once: it installs rust-src and bpf-linker \
                          (built against the nightly toolchain's own LLVM) and builds the \
                          eBPF object";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    let path = path_with_cargo_bin();
    check_toolchain(&path)?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment
    // concurrently. aya-build spawns cargo, which must find the bpf-linker installed in
    // $CARGO_HOME/bin even when that directory is not on the caller's PATH.
    unsafe { env::set_var("PATH", &path) };

    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{EBPF_PACKAGE}'s manifest path has no parent"))?
        .as_str();
    aya_build::build_ebpf(
        [Package {
            name: EBPF_PACKAGE,
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .with_context(|| {
        format!("building the eBPF programs failed; if the toolchain is broken, {SETUP_HINT}")
    })
}

fn path_with_cargo_bin() -> std::ffi::OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut parts: Vec<PathBuf> = env::split_paths(&current).collect();
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(bin) = cargo_home.map(|h| h.join("bin"))
        && !parts.contains(&bin)
    {
        parts.push(bin);
    }
    env::join_paths(parts).unwrap_or(current)
}

fn check_toolchain(path: &std::ffi::OsStr) -> anyhow::Result<()> {
    if env::var_os("AYA_BUILD_SKIP").is_some() {
        return Ok(());
    }
    let linker_runs = Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", path)
        .output()
        .is_ok_and(|o| o.status.success());
    if !linker_runs {
        bail!("bpf-linker is not installed or does not run; {SETUP_HINT}");
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env("PATH", path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let Some(sysroot) = sysroot else {
        bail!("there is no nightly toolchain; {SETUP_HINT}");
    };
    let library = sysroot.join("lib/rustlib/src/rust/library/core");
    if !library.is_dir() {
        bail!("the nightly toolchain has no rust-src component; {SETUP_HINT}");
    }
    Ok(())
}
