//! Sets up what building the eBPF crate needs: a nightly toolchain with `rust-src`, and
//! `bpf-linker` built against that nightly's own LLVM.
//!
//! No system package carries an LLVM of the nightly's major version, but the nightly ships its
//! own `libLLVM`. `bpf-linker` is built against it through a directory holding two symlinks to
//! that library (`libLLVM.so` and the library's own name), passed as `LLVM_PREFIX`; the binary
//! keeps an rpath to that directory, which therefore lives beside cargo's own files
//! (`$CARGO_HOME/hostgw/llvm-<version>`) and is reused by later runs. A stamp file records which
//! libLLVM the installed linker was built against, so a nightly update triggers a rebuild and an
//! unchanged machine installs nothing.
//!
//! The lint step also needs `cargo-machete`, which finds dependencies that no source file uses;
//! [`ensure_cargo_machete`] installs it the same way, with `cargo install` into
//! `$CARGO_HOME/bin`, when it is missing.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::util::{output, run, say};

/// The nightly toolchain that builds the eBPF crate.
pub const NIGHTLY: &str = "nightly";

/// bpf-linker release known to build against LLVM 21–23 (see the crate's `llvm-NN` features).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// LLVM major versions offered as `llvm-NN` features by [`BPF_LINKER_VERSION`].
const BPF_LINKER_LLVM_MAJORS: &[u32] = &[21, 22, 23];

/// cargo-machete release the lint step runs (it reads `[package.metadata.cargo-machete]`).
const CARGO_MACHETE_VERSION: &str = "0.9.2";

/// Makes sure the nightly toolchain, its `rust-src` and a matching `bpf-linker` are installed,
/// installing what is missing. Returns the `PATH` value child processes must use so that the
/// freshly installed linker is found.
pub fn ensure() -> anyhow::Result<std::ffi::OsString> {
    let cargo_home = cargo_home()?;
    let bin = cargo_home.join("bin");
    let path = prepend_path(&bin)?;

    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker(&cargo_home, &path)?;
    Ok(path)
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn prepend_path(dir: &Path) -> anyhow::Result<std::ffi::OsString> {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut parts: Vec<PathBuf> = env::split_paths(&current).collect();
    if !parts.iter().any(|p| p == dir) {
        parts.insert(0, dir.to_path_buf());
    }
    env::join_paths(parts).context("PATH holds an entry with a ':'")
}

fn ensure_nightly() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if toolchains.lines().any(|l| l.starts_with("nightly-")) {
        return Ok(());
    }
    say("installing the nightly toolchain (the eBPF crate needs -Z build-std)");
    run(Command::new("rustup").args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]))
}

fn ensure_rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        NIGHTLY,
    ]))?;
    if installed.lines().any(|l| l.trim() == "rust-src") {
        return Ok(());
    }
    say("installing rust-src for the nightly toolchain (core is rebuilt for bpfel-unknown-none)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
}

/// The nightly's LLVM: its major version and the shared library it ships.
#[derive(Debug)]
struct NightlyLlvm {
    major: u32,
    library: PathBuf,
}

fn nightly_llvm() -> anyhow::Result<NightlyLlvm> {
    let version = output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "-vV"]))?;
    let llvm = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no `LLVM version:` line")?;
    let major: u32 = llvm
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from {llvm:?}"))?;

    let sysroot =
        output(Command::new("rustc").args([&format!("+{NIGHTLY}"), "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let library = fs::read_dir(&lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM") && n.contains(".so"))
        })
        .with_context(|| {
            format!(
                "the nightly toolchain ships no libLLVM*.so in {}; bpf-linker cannot be built \
                 against it",
                lib_dir.display()
            )
        })?;
    Ok(NightlyLlvm { major, library })
}

fn ensure_bpf_linker(cargo_home: &Path, path: &std::ffi::OsStr) -> anyhow::Result<()> {
    let llvm = nightly_llvm()?;
    let lib_name = llvm
        .library
        .file_name()
        .and_then(|n| n.to_str())
        .context("libLLVM file name is not UTF-8")?
        .to_owned();
    let state_dir = cargo_home.join("hostgw");
    let stamp = state_dir.join("bpf-linker.stamp");
    let wanted_stamp = format!("{BPF_LINKER_VERSION} {lib_name}\n");

    let works = Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", path)
        .output()
        .is_ok_and(|o| o.status.success());
    match fs::read_to_string(&stamp) {
        Ok(s) if works && s == wanted_stamp => return Ok(()),
        Err(_) if works => {
            // A bpf-linker we did not install: trust whoever put it there.
            return Ok(());
        }
        Ok(_) if works => say(format!(
            "bpf-linker was built against another LLVM than the nightly's {lib_name}: rebuilding"
        )),
        _ => say("bpf-linker is missing or does not run: building it"),
    }

    if !BPF_LINKER_LLVM_MAJORS.contains(&llvm.major) {
        bail!(
            "the nightly toolchain uses LLVM {}, but bpf-linker {BPF_LINKER_VERSION} supports \
             LLVM {BPF_LINKER_LLVM_MAJORS:?}; pin a nightly whose `rustc +nightly -vV` shows one \
             of those",
            llvm.major
        );
    }

    // The LLVM prefix: D/lib/{libLLVM.so, <lib_name>} -> the nightly's library.
    let prefix = state_dir.join(format!("llvm-{}", lib_name.trim_start_matches("lib")));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    for name in ["libLLVM.so", lib_name.as_str()] {
        let link = lib.join(name);
        let _ignored = fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm.library, &link).with_context(|| {
            format!(
                "cannot link {} to {}",
                link.display(),
                llvm.library.display()
            )
        })?;
    }
    say(format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} ({}), about a \
         minute",
        llvm.major,
        llvm.library.display()
    ));
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{}", llvm.major),
        ])
        .env("LLVM_PREFIX", &prefix)
        .env("PATH", path))?;
    fs::write(&stamp, wanted_stamp).with_context(|| format!("cannot write {}", stamp.display()))?;
    say(format!(
        "bpf-linker installed in {}",
        cargo_home.join("bin").display()
    ));
    Ok(())
}

/// `cargo machete ARGS…` with `path` (the value [`ensure`] returns).
///
/// cargo-machete takes itself for a cargo subcommand only when `CARGO` is set and
/// `CARGO_PKG_NAME` is not, and otherwise reads the `machete` that cargo passes on as a path
/// to search. `cargo xtask` runs through `cargo run`, which sets `CARGO_PKG_NAME` for this
/// process, so the child must not inherit it.
pub fn cargo_machete(args: &[&str], path: &std::ffi::OsStr) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("machete")
        .args(args)
        .env("PATH", path)
        .env_remove("CARGO_PKG_NAME");
    cmd
}

/// Makes sure `cargo machete` runs with `path` (the value [`ensure`] returns), installing
/// cargo-machete [`CARGO_MACHETE_VERSION`] with `cargo install` when it does not.
pub fn ensure_cargo_machete(path: &std::ffi::OsStr) -> anyhow::Result<()> {
    let works = cargo_machete(&["--version"], path)
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        // Whichever version is there reads the same `ignored` lists.
        return Ok(());
    }
    say(format!(
        "installing cargo-machete {CARGO_MACHETE_VERSION} (the lint step fails on a dependency \
         no source file uses), about a minute"
    ));
    run(Command::new("cargo")
        .args([
            "install",
            "cargo-machete",
            "--locked",
            "--version",
            CARGO_MACHETE_VERSION,
        ])
        .env("PATH", path))?;
    say(format!(
        "cargo-machete installed in {}",
        cargo_home()?.join("bin").display()
    ));
    Ok(())
}
