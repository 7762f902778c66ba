//! `cargo xtask test`: the one command that sets up and runs every test.
//!
//! 1. installs what is missing (the eBPF toolchain, the Debian packages the tests call, and
//!    cargo-machete for the lint step);
//! 2. checks formatting and lints (`cargo fmt --check`, `cargo machete` for dependencies that no
//!    source file uses, `cargo clippy -D warnings`, also on the eBPF crate for its own target);
//! 3. runs the unprivileged tests of the workspace (among them the benchmark's unit tests);
//! 4. runs the tests that need root (the `hostgw-tests` crate: program tests, network
//!    namespaces) as root, through `sudo -E` when this is not root;
//! 5. runs the kernel matrix (`cargo xtask matrix`): the root tests' kernel subset inside VMs
//!    booted from Debian's 6.1 and 6.12 kernels (`--no-matrix` skips it; so does a test filter);
//! 6. runs the benchmark's smoke run (`cargo xtask bench --quick`), so it never rots;
//! 7. ends with one line `N passed, N failed` and exits non-zero on any failure (a failed
//!    build or benchmark smoke run counts as one).

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::Context as _;

use crate::{
    packages, toolchain,
    util::{self, describe, is_root, say, workspace_root},
};

#[derive(Debug, clap::Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent command-line switches, one per step"
)]
pub struct Options {
    /// Skip `cargo fmt --check`, `cargo machete` and `cargo clippy`.
    #[arg(long)]
    pub no_lint: bool,
    /// Run only the unprivileged tests.
    #[arg(long)]
    pub no_root: bool,
    /// Skip the benchmark's smoke run (`cargo xtask bench --quick`).
    #[arg(long)]
    pub no_bench: bool,
    /// Skip the kernel matrix (the root tests' kernel subset in VMs of Debian's kernels).
    #[arg(long)]
    pub no_matrix: bool,
    /// Arguments passed to every test binary (a name filter, `--nocapture`, ...).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// Test counts summed over every `test result:` line libtest printed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Adds the counts of one libtest summary line such as
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`.
    fn add_line(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return false;
        };
        let count = |what: &str| -> u64 {
            rest.split(';')
                .filter_map(|part| part.trim().rsplit_once(' '))
                .filter(|(_, name)| *name == what)
                .filter_map(|(n, _)| n.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        self.passed += count("passed");
        self.failed += count("failed");
        self.ignored += count("ignored");
        true
    }
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let path = toolchain::ensure()?;
    packages::ensure(packages::TEST_PACKAGES)?;
    let root = workspace_root();

    if !opts.no_lint {
        say("checking formatting");
        util::run(
            Command::new("cargo")
                .args(["fmt", "--all", "--check"])
                .current_dir(&root),
        )?;
        toolchain::ensure_cargo_machete(&path)?;
        say("looking for unused dependencies (cargo machete)");
        // Exits non-zero when a manifest lists a crate no source file names; a false positive
        // goes into that package's `[package.metadata.cargo-machete] ignored`, with a reason.
        util::run(toolchain::cargo_machete(&["--skip-target-dir"], &path).current_dir(&root))?;
        say("running clippy");
        util::run(
            Command::new("cargo")
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--exclude",
                    "hostgw-ebpf",
                ])
                .args(["--", "-D", "warnings"])
                .current_dir(&root)
                .env("PATH", &path),
        )?;
        say("running clippy on the eBPF crate (bpfel-unknown-none)");
        crate::ebpf::clippy(&path)?;
    }

    let mut tally = Tally::default();
    let mut broken = Vec::new();
    // Every failed test by name, listed again at the end, where a long log's tail shows it.
    let mut failures = Vec::new();

    say("running the unprivileged tests");
    let mut cmd = cargo_test(
        &root,
        &path,
        &[
            "--workspace",
            "--exclude",
            "hostgw-ebpf",
            "--exclude",
            "hostgw-tests",
        ],
        &[],
        opts,
    );
    run_tests(&mut cmd, &mut tally, &mut broken, &mut failures)?;

    if opts.no_root {
        say("--no-root: the root tests were not run");
    } else {
        say("running the tests that need root (program tests, network namespaces)");
        say("building hostgw-agent for the root tests");
        util::build_agent(&root, &path)?;
        // Their output (verifier instruction counts, the decision table) is part of the record.
        let mut cmd = cargo_test(
            &root,
            &path,
            &["--package", "hostgw-tests"],
            &["--nocapture"],
            opts,
        );
        cmd.env(
            "HOSTGW_AGENT_BIN",
            util::target_dir().join("debug/hostgw-agent"),
        );
        if !is_root() {
            say("not root: running the test binaries through `sudo -E`");
            cmd.env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER", "sudo -E");
        }
        run_tests(&mut cmd, &mut tally, &mut broken, &mut failures)?;
    }

    if opts.no_root || opts.no_matrix || !opts.test_args.is_empty() {
        say("the kernel matrix was skipped");
    } else {
        say("running the kernel matrix: Debian's 6.1 and 6.12 kernels in VMs (cargo xtask matrix)");
        match crate::matrix::run_kernels(&[]) {
            Ok((passed, failed_in_vm)) => {
                tally.passed += passed;
                tally.failed += failed_in_vm.len() as u64;
                failures.extend(
                    failed_in_vm
                        .into_iter()
                        .map(|f| format!("kernel matrix: {f}")),
                );
            }
            Err(error) => broken.push(format!("cargo xtask matrix: {error:#}")),
        }
    }

    if opts.no_root || opts.no_bench {
        say("the benchmark's smoke run was skipped");
    } else {
        // The benchmark runs in CI too, so it never rots; its numbers are not judged here.
        say("running the benchmark's smoke run (cargo xtask bench --quick)");
        let quick = crate::bench::Options {
            quick: true,
            out: Some(util::target_dir().join("bench-quick")),
            bench_args: Vec::new(),
        };
        if let Err(error) = crate::bench::run(&quick) {
            broken.push(format!("cargo xtask bench --quick: {error:#}"));
        }
    }

    if tally.ignored > 0 {
        say(format!("{} tests are marked ignored", tally.ignored));
    }
    for f in &failures {
        println!("failed: {f}");
    }
    for b in &broken {
        println!("failed: {b}");
    }
    let failed = tally.failed + broken.len() as u64;
    println!("{} passed, {failed} failed", tally.passed);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `cargo test --no-fail-fast CARGO_ARGS -- TEST_ARGS`, where the test binaries get the
/// user's arguments, or `default_test_args` when there are none.
fn cargo_test(
    root: &std::path::Path,
    path: &OsString,
    cargo_args: &[&str],
    default_test_args: &[&str],
    opts: &Options,
) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--no-fail-fast"])
        .args(cargo_args)
        .current_dir(root)
        .env("PATH", path)
        .arg("--");
    if opts.test_args.is_empty() {
        cmd.args(default_test_args);
    } else {
        cmd.args(&opts.test_args);
    }
    cmd
}

/// Runs one `cargo test`, echoing its output while counting libtest's summary lines. A cargo
/// failure that no failed test explains (a build error, a crashed binary) is recorded in
/// `broken`.
fn run_tests(
    cmd: &mut Command,
    tally: &mut Tally,
    broken: &mut Vec<String>,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {}", describe(cmd)))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let before = *tally;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        tally.add_line(&line);
        if let Some(name) = failed_test(&line) {
            failures.push(name.to_owned());
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && tally.failed == before.failed {
        broken.push(format!("{} exited with {status}", describe(cmd)));
    }
    if status.success() && tally.passed == before.passed {
        broken.push(format!("{} ran no test", describe(cmd)));
    }
    Ok(())
}

/// The test a libtest line reports failed (`test gate::flows::x ... FAILED`).
fn failed_test(line: &str) -> Option<&str> {
    line.strip_prefix("test ")?.strip_suffix(" ... FAILED")
}

#[cfg(test)]
mod tests {
    use super::{Tally, failed_test};

    #[test]
    fn failed_tests_are_named() {
        assert_eq!(
            failed_test("test flows::a_flow ... FAILED"),
            Some("flows::a_flow")
        );
        assert_eq!(failed_test("test flows::a_flow ... ok"), None);
        assert_eq!(failed_test("failures:"), None);
    }

    #[test]
    fn tally_sums_libtest_summary_lines() {
        let mut t = Tally::default();
        assert!(t.add_line(
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
             finished in 0.00s"
        ));
        assert!(t.add_line(
            "test result: FAILED. 2 passed; 4 failed; 0 ignored; 0 measured; 0 filtered out"
        ));
        assert!(!t.add_line("running 3 tests"));
        assert_eq!(
            t,
            Tally {
                passed: 5,
                failed: 4,
                ignored: 1
            }
        );
    }
}
