//! The hostgw test lab: network namespaces, interfaces and agent processes for tests that need
//! root, each behind an RAII guard that removes what it created, even when the test panics.
//!
//! Everything a test creates lives in network namespaces it made (`hgw-<pid>-<name>`) and in pin
//! directories below `/sys/fs/bpf/hostgw-test-<pid>-<name>`; nothing is added to the root
//! namespace. [`lab`] builds whole host-gw clusters (nodes, pods, agents) from these guards, for
//! the end-to-end tests, the `hostgw-lab` demo binary and the benchmark (the `hostgw-bench`
//! crate in `tests/bench`).

pub mod bpf;
pub mod frame;
pub mod lab;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

/// Fails the test unless it runs as root, naming the command that runs it properly.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, BPF): run it with `cargo xtask test`"
    );
}

/// Pins task `pid` (0: the calling thread) to CPU `cpu`.
pub fn pin_to_cpu(pid: u32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid as i32, size_of::<libc::cpu_set_t>(), &raw const set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `cmd`, panicking with its output when it fails.
pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `ip ARGS…`, panicking on failure.
pub fn ip(args: &[&str]) -> Output {
    sh(Command::new("ip").args(args))
}

/// A hostgw clsact filter, as `tc -j filter show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcFilter {
    pub pref: u64,
    pub handle: String,
    /// The program's name, `hostgw_…`.
    pub name: String,
    pub prog_id: u64,
}

/// hostgw's bpf filters on the clsact ingress hook of `dev` in the namespace `netns` (every
/// hostgw program sits on an ingress hook).
pub fn hostgw_filters(netns: &str, dev: &str) -> Vec<TcFilter> {
    let out =
        sh(Command::new("tc").args(["-n", netns, "-j", "filter", "show", "dev", dev, "ingress"]));
    let filters: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    filters
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|f| f["kind"] == "bpf")
        .filter_map(|f| {
            let name = f["options"]["bpf_name"].as_str()?;
            name.starts_with("hostgw_").then(|| TcFilter {
                pref: f["pref"].as_u64().expect("pref"),
                handle: f["options"]["handle"].as_str().expect("handle").to_owned(),
                name: name.to_owned(),
                prog_id: f["options"]["prog"]["id"].as_u64().expect("program id"),
            })
        })
        .collect()
}

/// A network namespace created with `ip netns add`, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `hgw-<pid>-<name>` with its loopback up.
    pub fn new(name: &str) -> Self {
        let name = format!("hgw-{}-{name}", std::process::id());
        // A leftover from a crashed run with the same pid would make `add` fail.
        let _ignored = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> ARGS…`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        sh(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Netns {
    /// Names of the programs attached to `iface` inside the namespace: its XDP program and the
    /// programs on its tcx ingress hook.
    pub fn attached_programs(&self, iface: &str) -> Vec<String> {
        let out = self.ip(&["-j", "link", "show", "dev", iface]);
        let links: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("`ip -j link` prints JSON");
        let xdp_id = links[0]["xdp"]["prog"]["id"].as_u64();
        let mut names = Vec::new();
        if let Some(id) = xdp_id {
            let info = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .find(|p| u64::from(p.id()) == id)
                .unwrap_or_else(|| panic!("XDP program id {id} on {iface} is not loaded"));
            names.push(info.name_as_str().unwrap_or("?").to_owned());
        }
        // tcx is queried by ifindex in the caller's namespace: do it from a thread inside.
        let ns = self.name.clone();
        let iface = iface.to_owned();
        let tcx = std::thread::spawn(move || {
            hostgw_agent::netns::enter(&ns).expect("entering the test namespace");
            aya::programs::SchedClassifier::query_tcx(&iface, aya::programs::TcAttachType::Ingress)
                .map(|(_, progs)| {
                    progs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
                        .collect::<Vec<_>>()
                })
                .expect("querying tcx ingress")
        })
        .join()
        .expect("tcx query thread");
        names.extend(tcx);
        names
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes every interface in it, and with them their links.
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("warning: could not delete netns {}: {out:?}", self.name);
        }
    }
}

/// A pin directory below `/sys/fs/bpf`, removed with everything in it on drop.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// Names `/sys/fs/bpf/hostgw-test-<pid>-<name>`; the agent creates it.
    pub fn new(name: &str) -> Self {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/hostgw-test-{}-{name}",
            std::process::id()
        ));
        let _ignored = std::fs::remove_dir_all(&path);
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.path.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.path)
        {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// The `hostgw-agent` binary: `$HOSTGW_AGENT_BIN` (set by `cargo xtask test`), else built once
/// with cargo.
pub fn agent_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("HOSTGW_AGENT_BIN") {
            return PathBuf::from(bin);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("workspace root");
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        sh(Command::new(cargo)
            .args([
                "build",
                "--package",
                "hostgw-agent",
                "--bin",
                "hostgw-agent",
            ])
            .current_dir(root));
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        target.join("debug").join("hostgw-agent")
    })
}

/// A running `hostgw-agent`, killed on drop if it is still running.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
    /// Whether the log is this guard's to remove on drop.
    owns_log: bool,
}

impl Agent {
    /// Starts `hostgw-agent ARGS…` with its log in a temporary file.
    pub fn start(args: &[&str]) -> Self {
        let log = std::env::temp_dir().join(format!(
            "hostgw-agent-{}-{}.log",
            std::process::id(),
            args.join("_")
                .replace('/', "_")
                .chars()
                .take(60)
                .collect::<String>()
        ));
        let file = std::fs::File::create(&log).expect("creating the agent log");
        let child = Command::new(agent_binary())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", agent_binary().display()));
        Self {
            child: Some(child),
            log,
            owns_log: true,
        }
    }

    /// Starts `hostgw-agent ARGS…` appending its log, without colours, to `log`, which the
    /// caller owns (it outlives this guard, so a restarted agent's log follows the old one).
    pub fn start_with_log(args: &[&str], log: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open the agent log {}: {e}", log.display()));
        let child = Command::new(agent_binary())
            .args(args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", agent_binary().display()));
        Self {
            child: Some(child),
            log: log.to_path_buf(),
            owns_log: false,
        }
    }

    /// The agent's process id, while this guard still holds it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the agent for good without panicking (for teardown): SIGTERM, then SIGKILL if it
    /// has not exited within `grace`. Returns its exit status, if it was still held.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our own child, not yet
            // reaped, so the id cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "warning: agent {} ignored SIGTERM for {grace:?}, killing it",
            child.id()
        );
        let _ignored = child.kill();
        child.wait().ok()
    }

    /// Leaves the agent running after this guard is gone (for a lab kept up on purpose).
    pub fn detach(mut self) -> Option<u32> {
        let pid = self.pid();
        // Dropping a `Child` neither kills nor waits for it.
        drop(self.child.take());
        self.owns_log = false;
        pid
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready` holds, panicking with the agent's log if the agent exits or
    /// `timeout` passes first.
    pub fn wait_until(&mut self, timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if ready() {
                return;
            }
            let child = self.child.as_mut().expect("agent running");
            if let Some(status) = child.try_wait().expect("polling the agent") {
                panic!("agent exited ({status}) before {what}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; agent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` and waits up to `timeout` for the agent to exit; returns its status.
    pub fn stop(&mut self, signal: i32, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("agent running");
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        // SAFETY: kill has no memory-safety preconditions; `pid` is our own child.
        unsafe { libc::kill(pid, signal) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("polling the agent") {
                return status;
            }
            if start.elapsed() > timeout {
                let _ignored = child.kill();
                let _ignored = child.wait();
                panic!(
                    "agent did not exit within {timeout:?} of signal {signal}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the agent to exit on its own; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("agent running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("polling the agent") {
                self.child = None;
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "agent still running after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ignored = child.kill();
            let _ignored = child.wait();
        }
        if self.owns_log {
            let _ignored = std::fs::remove_file(&self.log);
        }
    }
}
