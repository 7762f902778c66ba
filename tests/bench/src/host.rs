//! What the benchmark reads from and sets on the host: CPU affinity of threads and kernel
//! threads, per-CPU time (`/proc/stat`), a thread's run time (`/proc/<pid>/schedstat`),
//! per-CPU packet processing (`/proc/net/softnet_stat`), and, inside a lab namespace, an
//! interface's receive mode (GRO, threaded NAPI) and its veth XDP transmit counters.
//!
//! It never changes anything in the root network namespace: every interface setting is made
//! through `ip netns exec <lab namespace>`.

use std::{process::Command, time::Duration};

use super::netlink::{self, Napi};
use hostgw_tests::lab::output_within;

/// A failed host query or setting.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    /// A file could not be read or parsed.
    #[error("reading {path}: {detail}")]
    Read { path: String, detail: String },
    /// `sched_setaffinity` failed.
    #[error("pinning task {pid} to CPU {cpu}")]
    Affinity {
        pid: u32,
        cpu: usize,
        #[source]
        source: std::io::Error,
    },
    /// The NAPI thread of an interface could not be found.
    #[error("no NAPI thread for {iface} in {netns}: {detail}")]
    NoNapiThread {
        netns: String,
        iface: String,
        detail: String,
    },
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
}

/// Runs `sh -c script` inside the namespace `netns` (`ip netns exec` remounts `/sys` there, so
/// `/sys/class/net` shows the namespace's interfaces).
pub fn ns_sh(netns: &str, script: &str) -> Result<String, HostError> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, "sh", "-c", script]);
    let out = output_within(&mut cmd, Duration::from_secs(30));
    if !out.status.success() {
        return Err(HostError::Command {
            command: format!("ip netns exec {netns} sh -c {script:?}"),
            detail: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The index of interface `iface` in `netns`.
pub fn ifindex(netns: &str, iface: &str) -> Result<u32, HostError> {
    let text = ns_sh(netns, &format!("cat /sys/class/net/{iface}/ifindex"))?;
    text.trim().parse().map_err(|_| HostError::Read {
        path: format!("{netns}:/sys/class/net/{iface}/ifindex"),
        detail: format!("not a number: {text:?}"),
    })
}

/// Pins task `pid` (0: the calling thread) to CPU `cpu`.
pub fn pin(pid: u32, cpu: usize) -> Result<(), HostError> {
    hostgw_tests::pin_to_cpu(pid, cpu).map_err(|source| HostError::Affinity { pid, cpu, source })
}

/// Sets the nice value of task `pid` (0: the calling thread). The measured threads run at
/// −20, so that other work on a shared machine (a build) takes only about 1 % of their CPU
/// instead of half; the evidence of each figure still shows what they got.
pub fn renice(pid: u32, nice: i32) -> Result<(), HostError> {
    // SAFETY: setpriority has no memory-safety preconditions.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, nice) };
    if rc != 0 {
        return Err(HostError::Read {
            path: format!("setpriority({pid}, {nice})"),
            detail: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

/// Lets the calling thread run on every CPU again.
pub fn unpin_self() {
    // SAFETY: as in `pin`; failure leaves the affinity as it was, which is harmless.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

/// Time one CPU spent, in clock ticks, from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTimes {
    pub total: u64,
    /// `idle` + `iowait`.
    pub idle: u64,
    pub softirq: u64,
    /// Time the hypervisor ran something else while this virtual CPU wanted to run.
    pub steal: u64,
}

impl CpuTimes {
    /// CPU `cpu`'s times now.
    pub fn read(cpu: usize) -> Result<Self, HostError> {
        let text = std::fs::read_to_string("/proc/stat").map_err(|e| HostError::Read {
            path: "/proc/stat".into(),
            detail: e.to_string(),
        })?;
        let tag = format!("cpu{cpu} ");
        let line = text
            .lines()
            .find(|l| l.starts_with(&tag))
            .ok_or_else(|| HostError::Read {
                path: "/proc/stat".into(),
                detail: format!("no line for CPU {cpu}"),
            })?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal guest guest_nice
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        Ok(Self {
            total: (0..8).map(get).sum(),
            idle: get(3) + get(4),
            softirq: get(6),
            steal: get(7),
        })
    }

    /// Shares of the interval since `earlier`: `(idle, softirq, steal)` in percent.
    pub fn shares_since(&self, earlier: &Self) -> (f64, f64, f64) {
        let total = self.total.saturating_sub(earlier.total).max(1) as f64;
        let pct = |a: u64, b: u64| 100.0 * a.saturating_sub(b) as f64 / total;
        (
            pct(self.idle, earlier.idle),
            pct(self.softirq, earlier.softirq),
            pct(self.steal, earlier.steal),
        )
    }
}

/// Nanoseconds task `pid` has run, from `/proc/<pid>/schedstat`.
pub fn task_runtime_ns(pid: u32) -> Result<u64, HostError> {
    let path = format!("/proc/{pid}/schedstat");
    let text = std::fs::read_to_string(&path).map_err(|e| HostError::Read {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or(HostError::Read {
            path,
            detail: format!("unexpected content {text:?}"),
        })
}

/// Packets CPU `cpu` has taken through the receive path (`/proc/net/softnet_stat`, first
/// column of the CPU's row).
pub fn softnet_processed(cpu: usize) -> Result<u64, HostError> {
    let path = "/proc/net/softnet_stat";
    let text = std::fs::read_to_string(path).map_err(|e| HostError::Read {
        path: path.into(),
        detail: e.to_string(),
    })?;
    text.lines()
        .nth(cpu)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or(HostError::Read {
            path: path.into(),
            detail: format!("no row for CPU {cpu}"),
        })
}

/// An interface switched to threaded NAPI with its receive thread pinned; back to plain
/// softirq NAPI and its GRO setting as it was on drop.
#[derive(Debug)]
pub struct ThreadedNapi {
    netns: String,
    iface: String,
    /// GRO as it was before (`on`/`off`), restored on drop.
    gro: String,
    /// The receive thread.
    pub pid: u32,
}

impl ThreadedNapi {
    /// Turns GRO on (which gives a veth NAPI even without an XDP program), then threaded NAPI,
    /// and pins the interface's NAPI thread to `cpu`. Call it after every program is attached:
    /// attaching XDP to a veth can re-create its NAPI.
    pub fn enable(netns: &str, iface: &str, cpu: usize) -> Result<Self, HostError> {
        let features = ns_sh(netns, &format!("ethtool -k {iface}"))?;
        let gro = features
            .lines()
            .find_map(|l| l.trim().strip_prefix("generic-receive-offload:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or("off")
            .to_owned();
        ns_sh(
            netns,
            &format!(
                "ethtool -K {iface} gro on >/dev/null && echo 1 > /sys/class/net/{iface}/threaded"
            ),
        )?;
        // From here on the guard restores the interface, whatever fails next.
        let mut guard = Self {
            netns: netns.to_owned(),
            iface: iface.to_owned(),
            gro,
            pid: 0,
        };
        guard.pid = napi_thread(netns, iface)?;
        pin(guard.pid, cpu)?;
        renice(guard.pid, -20)?;
        Ok(guard)
    }
}

impl Drop for ThreadedNapi {
    fn drop(&mut self) {
        let script = format!(
            "echo 0 > /sys/class/net/{i}/threaded; ethtool -K {i} gro {g} >/dev/null",
            i = self.iface,
            g = self.gro
        );
        if let Err(e) = ns_sh(&self.netns, &script) {
            eprintln!("warning: restoring NAPI mode of {}: {e}", self.iface);
        }
    }
}

/// The process id of the (only) NAPI thread of `iface` in `netns`, checked against the
/// thread's name `napi/<iface>-<napi id>`.
pub fn napi_thread(netns: &str, iface: &str) -> Result<u32, HostError> {
    let index = ifindex(netns, iface)?;
    let no = |detail: String| HostError::NoNapiThread {
        netns: netns.to_owned(),
        iface: iface.to_owned(),
        detail,
    };
    let mut sock = netlink::Socket::generic(netns)?;
    let napis: Vec<Napi> = sock.napis(index)?;
    let threaded: Vec<Napi> = napis.iter().copied().filter(|n| n.pid.is_some()).collect();
    let [napi] = threaded[..] else {
        return Err(no(format!(
            "expected one threaded NAPI instance, the kernel lists {napis:?}"
        )));
    };
    let pid = napi.pid.expect("filtered on a thread");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let expected = format!("napi/{iface}-{}", napi.id);
    // Older kernels cut thread names to 15 bytes; newer ones show kernel threads' full names.
    let comm = comm.trim_end();
    let cut = &expected[..expected.len().min(15)];
    if comm != expected && comm != cut {
        return Err(no(format!(
            "netlink names thread {pid} for NAPI {}, but its name is {comm:?}, not {expected:?}",
            napi.id
        )));
    }
    Ok(pid)
}

/// Frames a veth accepted into its peer's XDP receive ring, and frames refused because the
/// ring was full: `tx_queue_0_xdp_xmit` and `tx_queue_0_xdp_xmit_errors` of `ethtool -S`.
pub fn xdp_xmit_counters(netns: &str, iface: &str) -> Result<(u64, u64), HostError> {
    let text = ns_sh(netns, &format!("ethtool -S {iface}"))?;
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k.trim() == name).then(|| v.trim().parse().ok())?
        })
    };
    match (
        field("tx_queue_0_xdp_xmit"),
        field("tx_queue_0_xdp_xmit_errors"),
    ) {
        (Some(x), Some(e)) => Ok((x, e)),
        _ => Err(HostError::Read {
            path: format!("ethtool -S {iface} in {netns}"),
            detail: "no tx_queue_0_xdp_xmit(_errors) counters".into(),
        }),
    }
}

/// The CPU model and the kernel, for the report.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0.0, |kib| kib as f64 / (1024.0 * 1024.0));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    format!("{model}, {cpus} vCPUs, {mem_gib:.0} GiB, Linux {kernel}")
}

/// The 1-minute load average, to tell whether something else ran during a measurement.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}
