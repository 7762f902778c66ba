//! `cargo xtask matrix`: the root tests' kernel subset inside VMs booted from Debian's kernel
//! packages (6.1 LTS and 6.12), where conntrack, bridge and veth are modules and 6.1 has no
//! tcx. It installs what is missing and says so: qemu, a static busybox, Python's venv, the
//! kernel packages (they only add files under /boot and /lib/modules; nothing boots them on
//! the host) and virtme-ng (in `target/vm/venv`). Each VM boots with qemu's TCG (KVM guests
//! hang on this kind of machine), sees the host's files read-only, loads the modules the
//! dataplane needs, mounts bpffs and runs the test binaries built here. A failure names the
//! kernel; the tests' output is in `target/vm/run/<kernel>.log`, the VM's console in
//! `<kernel>.console`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    packages, toolchain,
    util::{self, output, say, target_dir, workspace_root},
};

/// Debian packages the VMs need: qemu (TCG), a static busybox for virtme-ng's init, and venv
/// for virtme-ng itself.
const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "python3-venv"];

/// The virtme-ng release installed from `PyPI`.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// Modules the dataplane and the lab use, loaded in each VM.
const MODULES: &[&str] = &[
    "veth",
    "bridge",
    "nf_conntrack",
    "sch_ingress",
    "cls_bpf",
    "nf_tables",
    "nft_chain_nat",
    "nf_nat",
];

/// The kernel subset: every program test, and the lab tests that exercise what differs between
/// kernels (attach mode, module kfuncs, restart adoption). `(test target, name filter)`.
const SUBSET: &[(&str, &str)] = &[
    ("programs", ""),
    (
        "dataplane",
        "clsact_filters_are_adopted_after_a_kill_and_removed_on_exit",
    ),
    ("e2e", "fast_path_every_pod_pair_pings"),
    ("dual_stack", "fast_path_every_pod_pair_pings_over_ipv6"),
    ("gate", "services::cluster_ip_dnat_works_with_the_gate_on"),
];

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Kernels to boot: `6.1`, `6.12` (default: both).
    #[arg(long = "kernel")]
    pub kernels: Vec<String>,
}

/// A Debian kernel, installed: its release and image.
#[derive(Debug)]
struct Kernel {
    release: String,
    image: PathBuf,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    let (_, failed) = run_kernels(&opts.kernels)?;
    if !failed.is_empty() {
        bail!("the kernel matrix failed:\n{}", failed.join("\n"));
    }
    Ok(())
}

/// Runs the subset on each kernel of `series` (both when empty). Returns the tests that
/// passed and each failure, named `<kernel>: <test>`.
pub fn run_kernels(series: &[String]) -> anyhow::Result<(u64, Vec<String>)> {
    let path = toolchain::ensure()?;
    packages::ensure(packages::TEST_PACKAGES)?;
    packages::ensure(VM_PACKAGES)?;
    let series: Vec<String> = if series.is_empty() {
        vec!["6.1".into(), "6.12".into()]
    } else {
        series.to_vec()
    };
    let kernels = series
        .iter()
        .map(|s| ensure_kernel(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let vng = ensure_virtme_ng()?;

    let root = workspace_root();
    say("building hostgw-agent and the root test binaries");
    util::build_agent(&root, &path)?;
    let binaries = test_binaries(&root, &path)?;

    let scratch = target_dir().join("vm/run");
    std::fs::create_dir_all(&scratch).context("creating target/vm/run")?;
    let mut failed = Vec::new();
    let mut total = 0;
    for kernel in &kernels {
        say(format!(
            "booting {} under qemu (TCG) for the kernel subset",
            kernel.release
        ));
        let script = scratch.join(format!("{}.sh", kernel.release));
        let log = scratch.join(format!("{}.log", kernel.release));
        std::fs::write(&script, vm_script(&binaries, &log)).context("writing the VM script")?;
        // No earlier run's results can be read as this one's.
        std::fs::write(&log, "").context("clearing the VM log")?;
        // The VM's console goes to a file of its own: qemu writes it at offsets of its own,
        // which would overwrite what this process prints.
        let console = scratch.join(format!("{}.console", kernel.release));
        let console = std::fs::File::create(&console)
            .with_context(|| format!("creating {}", console.display()))?;
        let status = util::status(
            Command::new(&vng)
                .args(["--disable-kvm", "--run"])
                .arg(&kernel.image)
                .args(["--memory", "2G", "--cpus", "2", "--user", "root", "--rwdir"])
                .arg(&scratch)
                .args(["--rwdir", "/tmp", "--", "sh"])
                .arg(&script)
                .env("PATH", vng_path(&vng))
                .stdin(std::process::Stdio::null())
                .stdout(console.try_clone().context("the console file")?)
                .stderr(console),
        )?;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let (passed, fails) = summary(&text);
        total += passed;
        println!(
            "kernel {}: {passed} passed, {} failed{}",
            kernel.release,
            fails.len(),
            if status.success() {
                ""
            } else {
                " (the VM exited with an error)"
            }
        );
        for f in &fails {
            println!("  failed on {}: {f}", kernel.release);
        }
        if fails.is_empty() && passed == 0 {
            failed.push(format!(
                "{}: no test ran (log {})",
                kernel.release,
                log.display()
            ));
        }
        failed.extend(
            fails
                .into_iter()
                .map(|f| format!("{}: {f}", kernel.release)),
        );
    }
    Ok((total, failed))
}

/// Installs the newest Debian kernel package of `series` if none is installed, and returns it.
fn ensure_kernel(series: &str) -> anyhow::Result<Kernel> {
    let pattern = match series {
        "6.1" => "^linux-image-6\\.1\\.0-[0-9]+-amd64$",
        "6.12" => "^linux-image-6\\.12\\.[0-9]+\\+deb[0-9]+-amd64$",
        other => bail!("--kernel {other}: the matrix knows 6.1 and 6.12"),
    };
    if let Some(k) = installed_kernel(series) {
        return Ok(k);
    }
    let found = output(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
    let mut names: Vec<String> = found
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort_by_key(|n| version_key(n));
    let Some(newest) = names.pop() else {
        bail!(
            "apt-cache has no Debian kernel package of {series} ({pattern}): is the Debian archive in the sources?"
        );
    };
    say(format!(
        "installing the Debian kernel package {newest} (files under /boot and /lib/modules only; it is booted in a VM, never on this machine)"
    ));
    packages::ensure(&[newest.as_str()])?;
    installed_kernel(series)
        .with_context(|| format!("{newest} installed no /boot/vmlinuz-{series}*"))
}

/// The newest `/boot/vmlinuz-<series>…-amd64` with its modules.
fn installed_kernel(series: &str) -> Option<Kernel> {
    let mut found: Vec<Kernel> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            let of_series = release
                .strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(['.', '-']));
            (of_series
                && release.ends_with("-amd64")
                && Path::new("/lib/modules").join(&release).exists())
            .then(|| Kernel {
                release,
                image: e.path(),
            })
        })
        .collect();
    found.sort_by_key(|k| version_key(&k.release));
    found.pop()
}

/// Orders `6.1.0-9` before `6.1.0-50`: the numbers in a name, compared as numbers.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// virtme-ng in `target/vm/venv`, installed from `PyPI` when missing.
fn ensure_virtme_ng() -> anyhow::Result<PathBuf> {
    let venv = target_dir().join("vm/venv");
    let vng = venv.join("bin/vng");
    if vng.exists() {
        return Ok(vng);
    }
    say(format!(
        "installing {VIRTME_NG} from PyPI into {}",
        venv.display()
    ));
    util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    util::run(Command::new(venv.join("bin/pip")).args(["install", "-q", VIRTME_NG]))?;
    Ok(vng)
}

/// `PATH` with the venv's `bin` first: vng calls its sibling `virtme-run`.
fn vng_path(vng: &Path) -> std::ffi::OsString {
    let mut dirs = vec![vng.parent().expect("bin dir").to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH")
}

/// The subset's test binaries, built: `(target, filter, executable)`.
fn test_binaries(
    root: &Path,
    path: &std::ffi::OsString,
) -> anyhow::Result<Vec<(&'static str, &'static str, PathBuf)>> {
    let out = Command::new("cargo")
        .args(["test", "--package", "hostgw-tests", "--no-run"])
        .current_dir(root)
        .env("PATH", path)
        .output()
        .context("building the root test binaries")?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("building the root test binaries failed:\n{text}");
    }
    // `  Executable tests/e2e.rs (target/debug/deps/e2e-…)`
    let executables: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Executable "))
        .filter_map(|l| l.rsplit_once('(').map(|(_, p)| p.trim_end_matches(')')))
        .map(|p| root.join(p))
        .collect();
    SUBSET
        .iter()
        .map(|(target, filter)| {
            let exe = executables
                .iter()
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.rsplit_once('-'))
                        .is_some_and(|(stem, _)| stem == *target)
                })
                .with_context(|| format!("cargo built no test binary {target}"))?;
            Ok((*target, *filter, exe.clone()))
        })
        .collect()
}

/// The script the VM runs: modules, bpffs, then each test binary with its output in `log`.
fn vm_script(binaries: &[(&str, &str, PathBuf)], log: &Path) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("set -u\nmount -t bpf bpf /sys/fs/bpf\n");
    for m in MODULES {
        let _ = writeln!(s, "modprobe {m} || echo \"modprobe {m} failed\"");
    }
    let _ = writeln!(
        s,
        "export HOSTGW_AGENT_BIN={}\n: > {}",
        target_dir().join("debug/hostgw-agent").display(),
        log.display()
    );
    for (target, filter, exe) in binaries {
        let exact = if filter.is_empty() { "" } else { " --exact" };
        let _ = writeln!(
            s,
            "echo '==> {target} {filter}' >> {log}\n{exe} {filter}{exact} --test-threads=1 >> {log} 2>&1",
            log = log.display(),
            exe = exe.display(),
        );
    }
    s
}

/// Passed tests and failures in a libtest log: failed test names, and each `==>` section of
/// the script in which no test ran (a filter that matches nothing, a binary that did not
/// start).
fn summary(log: &str) -> (u64, Vec<String>) {
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut section: Option<(String, usize)> = None;
    let close = |section: &mut Option<(String, usize)>, failed: &mut Vec<String>| {
        if let Some((name, 0)) = section.take() {
            failed.push(format!("{name}: no test ran"));
        }
    };
    for line in log.lines() {
        if let Some(name) = line.strip_prefix("==> ") {
            close(&mut section, &mut failed);
            section = Some((name.trim().to_owned(), 0));
        } else if let Some(name) = line.strip_prefix("test ") {
            let ran = if name.ends_with(" ... ok") {
                passed += 1;
                true
            } else if let Some(n) = name.strip_suffix(" ... FAILED") {
                failed.push(n.to_owned());
                true
            } else {
                false
            };
            if let (true, Some((_, n))) = (ran, section.as_mut()) {
                *n += 1;
            }
        }
    }
    close(&mut section, &mut failed);
    (passed, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_by_number() {
        let mut names = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-50-amd64",
            "linux-image-6.1.0-47-amd64",
        ];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names.last(), Some(&"linux-image-6.1.0-50-amd64"));
    }

    #[test]
    fn the_summary_counts_passes_and_names_failures() {
        let log = "==> programs \ntest v4::decision_table ... ok\ntest gate::conntrack_gate ... FAILED\ntest result: FAILED. 1 passed; 1 failed\n==> gate nothing\ntest result: ok. 0 passed\n";
        assert_eq!(
            summary(log),
            (
                1,
                vec![
                    "gate::conntrack_gate".to_owned(),
                    "gate nothing: no test ran".to_owned()
                ]
            )
        );
    }
}
