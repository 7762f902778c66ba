//! `cargo xtask matrix`: the root tests' kernel subset inside VMs booted from Debian's kernel
//! packages (6.1 LTS and 6.12), where conntrack, bridge and veth are modules and 6.1 has no
//! tcx. It installs what is missing and says so: qemu, a static busybox, Python's venv, the
//! kernel packages (they only add files under /boot and /lib/modules; nothing boots them on
//! the host) and virtme-ng (in `target/vm/venv`). Each VM boots with qemu's TCG (KVM guests
//! hang on this kind of machine), sees the host's files read-only, loads the modules the
//! dataplane needs, mounts bpffs and runs the test binaries built here. A failure names the
//! kernel; the tests' output is in `target/vm/run/<kernel>.log`, the VM's console in
//! `<kernel>.console`.
//!
//! Each kernel, and this machine's own, also gets a report: an agent started on a one-node
//! namespace, and its `status -o json`, which says how its hooks were attached (tcx or clsact,
//! XDP native or generic on a veth) and what the kernel offers (where the conntrack kfuncs
//! are, managed neighbours). The table of these is the README's. In the VMs an agent also
//! starts before `nf_conntrack` is loaded, and must say so.

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

/// Modules the dataplane and the lab use, loaded in each VM: first those without conntrack,
/// then (after the report without it) conntrack and NAT.
const MODULES: &[&str] = &[
    "veth",
    "bridge",
    "sch_ingress",
    "cls_bpf",
    // An admin's drop filter (the coexistence test), and what stands in where they are not.
    "cls_flower",
    "act_gact",
    "cls_u32",
    "act_mirred",
    "ifb",
];
const CONNTRACK_MODULES: &[&str] = &["nf_conntrack", "nf_tables", "nft_chain_nat", "nf_nat"];

/// The kernel report: an agent on a one-node namespace (a veth uplink with `--xdp on`, a bridge
/// with one port) for as long as `status -o json` takes to show its programs. `report OUT
/// ARGS…` writes `OUT.status.json` and the agent's log `OUT.agent.log`; everything it creates
/// goes again.
const REPORT_FN: &str = r#"report() {
  out=$1; shift
  ns=hgw-report-$$; pins=/sys/fs/bpf/hgw-report-$$
  : > "$out.status.json"
  ip netns add "$ns" || return 1
  ip -n "$ns" link add up0 type veth peer name up0-sw
  ip -n "$ns" link add cni0 type bridge
  ip -n "$ns" link add veth-pod0 type veth peer name pod0
  ip -n "$ns" link set veth-pod0 master cni0
  for l in lo up0 up0-sw cni0 veth-pod0 pod0; do ip -n "$ns" link set "$l" up; done
  "$HOSTGW_AGENT_BIN" run --netns "$ns" --uplink up0 --bridge cni0 --pin-dir "$pins" --xdp on "$@" > "$out.agent.log" 2>&1 &
  agent=$!
  i=0
  while [ $i -lt 120 ] && kill -0 $agent 2>/dev/null; do
    if "$HOSTGW_AGENT_BIN" status --netns "$ns" --pin-dir "$pins" -o json > "$out.status.json" 2>/dev/null       && grep -q hostgw_ingress "$out.status.json"; then break; fi
    : > "$out.status.json"
    i=$((i+1)); sleep 0.5
  done
  kill -TERM $agent 2>/dev/null; wait $agent
  ip netns del "$ns"
}
"#;

/// The kernel subset: every program test, and the lab tests that exercise what differs between
/// kernels (attach mode, module kfuncs, restart adoption). `(test target, name filter)`.
const SUBSET: &[(&str, &str)] = &[
    ("programs", ""),
    (
        "dataplane",
        "clsact_filters_are_adopted_after_a_kill_and_removed_on_exit",
    ),
    ("e2e", "fast_path_every_pod_pair_pings"),
    (
        "e2e",
        "agent_sigkill_loses_no_packet_and_restart_adopts_pins",
    ),
    ("dual_stack", "fast_path_every_pod_pair_pings_over_ipv6"),
    ("gate", "services::cluster_ip_dnat_works_with_the_gate_on"),
    // With Debian's modules, the admin's filter is a real flower drop filter.
    (
        "coexist",
        "an_admins_drop_filter_on_a_pod_veth_drops_like_the_kernel",
    ),
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

/// Runs the subset and the kernel reports on each kernel of `series` (both when empty), and
/// the report on this machine's kernel; prints the table of what each kernel gave the agent
/// (`target/vm/run/kernels.md`). Returns the tests and reports that passed and each failure,
/// named `<kernel>: <test>`.
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
    let mut rows = Vec::new();
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
        let (mut passed, mut fails) = summary(&text);
        let (row, checked, report_fails) = check_reports(&kernel.release, &log, true);
        passed += checked - report_fails.len() as u64;
        fails.extend(report_fails);
        rows.extend(row);
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
        if !fails.is_empty() || !status.success() {
            // What the VM printed last: why it stopped, when it did.
            let console = scratch.join(format!("{}.console", kernel.release));
            let text = std::fs::read_to_string(&console).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            println!("  the VM's console ended with:");
            for line in &lines[lines.len().saturating_sub(30)..] {
                println!("    {line}");
            }
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

    // The machine's own kernel, for the table.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading the kernel release")?
        .trim()
        .to_owned();
    say(format!(
        "the kernel report on this machine's kernel {release}"
    ));
    let log = scratch.join(format!("{release}.log"));
    let status = util::status(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{REPORT_FN}report {}",
                report_path(&log, FEATURES).display()
            ))
            .env("HOSTGW_AGENT_BIN", target_dir().join("debug/hostgw-agent")),
    )?;
    let (row, checked, fails) = check_reports(&release, &log, false);
    if status.success() {
        total += checked - fails.len() as u64;
    }
    if !status.success() {
        failed.push(format!("{release}: the kernel report exited with {status}"));
    }
    failed.extend(fails.into_iter().map(|f| format!("{release}: {f}")));
    rows.extend(row);

    let table = format!("{TABLE_HEAD}\n{}\n", rows.join("\n"));
    let path = scratch.join("kernels.md");
    std::fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "What each kernel gave the agent (also in {}):\n{table}",
        path.display()
    );
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

/// The script the VM runs: bpffs, the modules but conntrack's, the report without conntrack,
/// conntrack's modules, each test binary with its output in `log`, and the kernel report.
fn vm_script(binaries: &[(&str, &str, PathBuf)], log: &Path) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("set -u\nmount -t bpf bpf /sys/fs/bpf\n");
    let modprobe = |s: &mut String, modules: &[&str]| {
        for m in modules {
            let _ = writeln!(s, "modprobe {m} || echo \"modprobe {m} failed\"");
        }
    };
    modprobe(&mut s, MODULES);
    let _ = writeln!(
        s,
        "export HOSTGW_AGENT_BIN={}\n: > {}\n{REPORT_FN}report {} --conntrack-gate on",
        target_dir().join("debug/hostgw-agent").display(),
        log.display(),
        report_path(log, NO_CONNTRACK).display(),
    );
    modprobe(&mut s, CONNTRACK_MODULES);
    for (target, filter, exe) in binaries {
        let exact = if filter.is_empty() { "" } else { " --exact" };
        let _ = writeln!(
            s,
            "echo '==> {target} {filter}' >> {log}\n{exe} {filter}{exact} --test-threads=1 --show-output >> {log} 2>&1",
            log = log.display(),
            exe = exe.display(),
        );
    }
    let _ = writeln!(s, "report {}", report_path(log, FEATURES).display());
    s
}

/// The kernel reports of a run: with every module loaded, and before conntrack's were.
const FEATURES: &str = "features";
const NO_CONNTRACK: &str = "no-conntrack";

/// `target/vm/run/<kernel>.<which>`, next to the kernel's log.
fn report_path(log: &Path, which: &str) -> PathBuf {
    log.with_extension(which)
}

/// What a kernel gave the agent, from its report's `status -o json`.
#[derive(Debug, PartialEq, Eq)]
struct Gave {
    tc: String,
    xdp: String,
    conntrack_kfuncs: String,
    managed_neighbours: bool,
}

fn gave(status: &str) -> anyhow::Result<Gave> {
    let v: serde_json::Value =
        serde_json::from_str(status).context("the report's status is not JSON")?;
    let mode = |program: &str| {
        v["programs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["program"] == program)
            .and_then(|p| p["mode"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("the report's status has no {program}"))
    };
    Ok(Gave {
        tc: mode("hostgw_ingress")?,
        xdp: mode("hostgw_xdp")?,
        conntrack_kfuncs: v["features"]["conntrack_kfuncs"]
            .as_str()
            .context("the report's status has no conntrack_kfuncs")?
            .to_owned(),
        managed_neighbours: v["features"]["managed_neighbours"]
            .as_bool()
            .context("the report's status has no managed_neighbours")?,
    })
}

/// The README's table row of a kernel.
fn table_row(release: &str, g: &Gave) -> String {
    format!(
        "| {release} | {} | {} | {} | {} on a veth |",
        g.tc,
        g.conntrack_kfuncs,
        if g.managed_neighbours { "yes" } else { "no" },
        g.xdp.trim_start_matches("xdp "),
    )
}

const TABLE_HEAD: &str =
    "| kernel | TC hooks | conntrack kfuncs | managed neighbours | XDP |\n|---|---|---|---|---|";

/// Checks the reports of a kernel's run: what it gave the agent (a table row), and, where
/// conntrack is a module, that the agent started without it says so. Returns the row, how
/// many reports were checked and the failures.
fn check_reports(release: &str, log: &Path, modular: bool) -> (Option<String>, u64, Vec<String>) {
    let read = |which: &str| {
        let path = report_path(log, which).display().to_string();
        let status = std::fs::read_to_string(format!("{path}.status.json")).unwrap_or_default();
        let agent = std::fs::read_to_string(format!("{path}.agent.log")).unwrap_or_default();
        (status, agent)
    };
    let mut failed = Vec::new();
    let (status, agent) = read(FEATURES);
    let row = match gave(&status) {
        Ok(g) => Some(table_row(release, &g)),
        Err(e) => {
            failed.push(format!("kernel report: {e:#}\n{agent}"));
            None
        }
    };
    if modular {
        let (status, agent) = read(NO_CONNTRACK);
        let said = agent.contains("the nf_conntrack module is not loaded");
        match gave(&status) {
            Ok(g) if g.conntrack_kfuncs == "nf_conntrack not loaded" && said => {}
            Ok(g) => failed.push(format!(
                "without nf_conntrack: status says conntrack kfuncs {:?}, the agent {} it is not loaded\n{agent}",
                g.conntrack_kfuncs,
                if said { "said" } else { "did not say" },
            )),
            Err(e) => failed.push(format!("kernel report without nf_conntrack: {e:#}\n{agent}")),
        }
    }
    (row, 1 + u64::from(modular), failed)
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
    fn a_report_becomes_a_table_row() {
        let status = r#"{"features":{"tcx":false,"conntrack_kfuncs":"module nf_conntrack","managed_neighbours":true},
            "programs":[{"program":"hostgw_xdp","mode":"xdp native"},{"program":"hostgw_ingress","mode":"clsact"}]}"#;
        let g = gave(status).expect("a report");
        assert_eq!(
            table_row("6.1.0-50-amd64", &g),
            "| 6.1.0-50-amd64 | clsact | module nf_conntrack | yes | native on a veth |"
        );
        let e = gave(r#"{"features":{},"programs":[]}"#).expect_err("no programs");
        assert!(e.to_string().contains("hostgw_ingress"), "{e}");
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
