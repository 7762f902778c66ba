//! Small helpers for running commands with a visible trace.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
};

use anyhow::{Context as _, bail};

/// Prints what the xtask is about to do, prefixed so it stands out among cargo's output.
pub fn say(msg: impl std::fmt::Display) {
    eprintln!("xtask: {msg}");
}

/// Runs `cmd`, inheriting stdio, and fails with the command line when it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd`, inheriting stdio, and returns its exit status.
pub fn status(cmd: &mut Command) -> anyhow::Result<ExitStatus> {
    cmd.status()
        .with_context(|| format!("failed to start {}", describe(cmd)))
}

/// Runs `cmd`, a program that cleans up after itself on Ctrl-C, and waits for it: this
/// process ignores SIGINT and SIGTERM meanwhile, so it does not die first and leave the child
/// finishing in the background. Fails with the command line when the child fails.
pub fn run_in_foreground(cmd: &mut Command) -> anyhow::Result<()> {
    let mut child = cmd
        .spawn()
        .with_context(|| format!("failed to start {}", describe(cmd)))?;
    let _ignore = IgnoreInterrupts::new();
    let status = child
        .wait()
        .with_context(|| format!("waiting for {}", describe(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Ignores SIGINT and SIGTERM in this process while it lives.
struct IgnoreInterrupts {
    previous: [libc::sighandler_t; 2],
}

impl IgnoreInterrupts {
    const SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

    fn new() -> Self {
        // SAFETY: setting a signal's disposition to SIG_IGN has no memory-safety
        // preconditions.
        let previous = Self::SIGNALS.map(|s| unsafe { libc::signal(s, libc::SIG_IGN) });
        Self { previous }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        for (s, h) in Self::SIGNALS.iter().zip(self.previous) {
            // SAFETY: restores the disposition `new` found.
            unsafe { libc::signal(*s, h) };
        }
    }
}

/// Runs `cmd` and returns its standard output, failing when it exits non-zero.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("failed to start {}", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}\n{}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("{} printed non-UTF-8", describe(cmd)))
}

/// The command line of `cmd`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds the `hostgw-agent` binary (debug) in the workspace at `root` with `path` as `PATH`
/// (the eBPF toolchain on it); the root tests run it as `target/debug/hostgw-agent`.
pub fn build_agent(root: &Path, path: &OsStr) -> anyhow::Result<()> {
    run(Command::new("cargo")
        .args([
            "build",
            "--package",
            "hostgw-agent",
            "--bin",
            "hostgw-agent",
        ])
        .current_dir(root)
        .env("PATH", path))
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else `target` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(
            || workspace_root().join("target"),
            |d| workspace_root().join(d),
        )
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
