//! Small helpers for running commands with a visible trace.

use std::{
    ffi::OsStr,
    path::PathBuf,
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
