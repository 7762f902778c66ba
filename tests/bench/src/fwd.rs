//! Per-core forwarding capacity: one generator, one forwarding CPU, one sink, and the
//! evidence that the figure is the forwarder's and not the generator's (TOOLCHAIN.md,
//! "Measuring per-core forwarding capacity here").
//!
//! A [`Path`] names three interfaces: the generator transmits out of one (live-frames
//! `XDP_TX`, pinned to [`GEN_CPU`] as one continuous call); the forwarder receives on the
//! next, whose NAPI is threaded and pinned to [`FWD_CPU`], so everything the forwarder does
//! for a frame runs in that one thread; the sink counts and drops what comes out. With a
//! `STATE` map to toggle, the programs' forwarding bit is flipped every second (off: they hand
//! every packet to the kernel, the host-gw path; on: the fast path), and every "on" second is
//! paired with the "off" seconds beside it, because this machine's speed drifts over seconds.
//!
//! This module changes only the lab interfaces it is given, and restores them (NAPI mode,
//! sink, forwarding bit) when a session ends, also on error.

use std::{
    os::unix::thread::JoinHandleExt as _,
    path::{Path as FsPath, PathBuf},
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use hostgw_common::{STATE_F_FORWARD_V4, STATE_F_FORWARD_V6, State};

use super::{
    bpf::{BpfError, Generator, Sink, SinkKind},
    host::{self, CpuTimes, HostError, ThreadedNapi},
};

/// The CPU the packet generator runs on.
pub const GEN_CPU: usize = 0;
/// The CPU the forwarder's receive thread runs on: the core being measured.
pub const FWD_CPU: usize = 1;

/// A failed forwarding measurement.
#[derive(Debug, thiserror::Error)]
pub enum FwdError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    /// The pinned `STATE` map could not be used.
    #[error("the STATE map at {path}: {detail}")]
    State { path: PathBuf, detail: String },
    /// The generator thread failed.
    #[error("the generator: {0}")]
    Generator(String),
    /// Attaching the sink failed.
    #[error("attaching the sink to {iface} in {netns}")]
    Sink {
        netns: String,
        iface: String,
        #[source]
        source: Box<FwdError>,
    },
}

/// Where the frames go.
#[derive(Debug, Clone)]
pub struct Path {
    /// What the path is, for messages.
    pub label: String,
    /// The generator transmits out of this interface (its peer receives): `(netns, iface)`.
    pub source: (String, String),
    /// The forwarder's receiving interface: its NAPI thread is the measured core.
    pub rx: (String, String),
    /// The sink's interface.
    pub sink: (String, String),
    pub sink_kind: SinkKind,
    /// The forwarding node's pinned `STATE` map, to toggle the fast path every second;
    /// `None` measures one path throughout.
    pub toggle: Option<PathBuf>,
    /// The frame to generate.
    pub frame: Vec<u8>,
}

/// How long a session runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Generating before the first counted second.
    pub warmup: Duration,
    /// Counted seconds.
    pub seconds: usize,
}

/// One counted second.
#[derive(Debug, Clone, Copy)]
pub struct Second {
    /// Whether the fast path was on (always false without a toggle).
    pub fast: bool,
    /// Frames per second at the sink.
    pub pps: f64,
}

/// Why a figure can be trusted as the forwarder's capacity, measured over a whole session.
#[derive(Debug, Clone, Copy, Default)]
pub struct Evidence {
    /// Idle share of the forwarding CPU, percent.
    pub fwd_idle_pct: f64,
    /// Share of the forwarding CPU the hypervisor gave to something else, percent.
    pub fwd_steal_pct: f64,
    /// Share of the session the NAPI thread ran, percent.
    pub napi_busy_pct: f64,
    /// Frames the generator offered per second (accepted into the forwarder's input ring
    /// plus refused because it was full).
    pub offered_pps: f64,
    /// Frames refused at the forwarder's input ring per second.
    pub ring_drop_pps: f64,
    /// Frames per second at the sink.
    pub forwarded_pps: f64,
    /// Share of the frames accepted into the input ring that did not reach the sink, percent.
    pub lost_after_ring_pct: f64,
    /// Packets per second the generator's CPU took through the receive path.
    pub gen_cpu_softnet_pps: f64,
    /// 1-minute load average at the end.
    pub loadavg: f64,
}

impl Evidence {
    /// The checks that fail, empty when the figure is the forwarder's capacity. For a
    /// generator-bound measurement (a ceiling with an XDP sink) the CPU checks are expected
    /// to fail: the message then says who the bottleneck was.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.fwd_idle_pct > 1.0 {
            out.push(format!(
                "CPU {FWD_CPU} idle {:.1} % > 1 %",
                self.fwd_idle_pct
            ));
        }
        if self.napi_busy_pct < 97.0 {
            out.push(format!(
                "NAPI thread busy {:.1} % < 97 %",
                self.napi_busy_pct
            ));
        }
        if self.offered_pps < 3.0 * self.forwarded_pps {
            out.push(format!(
                "offered only {:.2}× forwarded",
                self.offered_pps / self.forwarded_pps.max(1.0)
            ));
        }
        if self.lost_after_ring_pct > 1.0 {
            out.push(format!(
                "{:.1} % lost after the input ring",
                self.lost_after_ring_pct
            ));
        }
        if self.gen_cpu_softnet_pps > 0.01 * self.forwarded_pps.max(1.0) {
            out.push(format!(
                "CPU {GEN_CPU} received {:.0} pkt/s",
                self.gen_cpu_softnet_pps
            ));
        }
        out
    }

    /// One line: every check with its value.
    pub fn line(&self) -> String {
        let failures = self.failures();
        format!(
            "CPU{FWD_CPU} idle {:.1}% (steal {:.1}%), napi busy {:.1}%, offered {:.2} Mpps = \
             {:.1}× forwarded, ring drops {:.2} Mpps, lost after ring {:.2}%, CPU{GEN_CPU} \
             softnet {:.0} pkt/s, load {:.2} → {}",
            self.fwd_idle_pct,
            self.fwd_steal_pct,
            self.napi_busy_pct,
            self.offered_pps / 1e6,
            self.offered_pps / self.forwarded_pps.max(1.0),
            self.ring_drop_pps / 1e6,
            self.lost_after_ring_pct,
            self.gen_cpu_softnet_pps,
            self.loadavg,
            if failures.is_empty() {
                "saturated".to_owned()
            } else {
                format!("NOT saturated: {}", failures.join("; "))
            }
        )
    }
}

/// What one session measured.
#[derive(Debug, Clone)]
pub struct Session {
    pub seconds: Vec<Second>,
    pub evidence: Evidence,
}

impl Session {
    /// Median frames per second over the seconds with the fast path `fast`.
    pub fn median_pps(&self, fast: bool) -> Option<f64> {
        super::report::median(
            &self
                .seconds
                .iter()
                .filter(|s| s.fast == fast)
                .map(|s| s.pps)
                .collect::<Vec<_>>(),
        )
    }

    /// Each "on" second over the mean of its neighbouring "off" seconds.
    pub fn pair_ratios(&self) -> Vec<f64> {
        let s = &self.seconds;
        (0..s.len())
            .filter(|&i| s[i].fast)
            .filter_map(|i| {
                let neighbours: Vec<f64> = [i.checked_sub(1), Some(i + 1)]
                    .into_iter()
                    .flatten()
                    .filter_map(|j| s.get(j))
                    .filter(|n| !n.fast)
                    .map(|n| n.pps)
                    .collect();
                if neighbours.is_empty() {
                    return None;
                }
                let off = neighbours.iter().sum::<f64>() / neighbours.len() as f64;
                (off > 0.0).then(|| s[i].pps / off)
            })
            .collect()
    }
}

/// The forwarding bits (IPv4 and IPv6) of a node's pinned `STATE` map.
struct Toggle {
    path: PathBuf,
    map: Array<MapData, State>,
    /// The flags as the agent wrote them: "on" turns on the forwarding bits set here, and
    /// drop leaves them so.
    agent_flags: u32,
}

const FORWARD_BITS: u32 = STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6;

impl Toggle {
    fn open(path: &FsPath) -> Result<Self, FwdError> {
        let err = |detail: String| FwdError::State {
            path: path.to_path_buf(),
            detail,
        };
        let data = MapData::from_pin(path).map_err(|e| err(e.to_string()))?;
        let map = aya::maps::Map::Array(data);
        let map: Array<MapData, State> = Array::try_from(map).map_err(|e| err(e.to_string()))?;
        let agent_flags = map.get(&0, 0).map_err(|e| err(e.to_string()))?.flags;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            agent_flags,
        })
    }

    fn set(&mut self, fast: bool) -> Result<(), FwdError> {
        let err = |detail: String| FwdError::State {
            path: self.path.clone(),
            detail,
        };
        let mut state = self.map.get(&0, 0).map_err(|e| err(e.to_string()))?;
        if fast {
            state.flags |= FORWARD_BITS & self.agent_flags;
        } else {
            state.flags &= !FORWARD_BITS;
        }
        self.map.set(0, state, 0).map_err(|e| err(e.to_string()))
    }
}

impl Drop for Toggle {
    fn drop(&mut self) {
        if let Err(e) = self.set(true) {
            eprintln!("warning: restoring the forwarding bits: {e}");
        }
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {}

/// SIGUSR1 interrupts the generator's test run (no `SA_RESTART`): the kernel ends a live-frames
/// run with `EINTR` when a signal is pending.
fn install_stop_signal() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is valid to fill in; the handler does nothing, which is
        // async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(libc::SIGUSR1, &raw const action, std::ptr::null_mut());
        }
    });
}

/// The live-frames generator running in its own thread until stopped.
struct Running {
    handle: Option<std::thread::JoinHandle<Result<(), String>>>,
    done: std::sync::Arc<AtomicBool>,
}

impl Running {
    fn start(path: &Path) -> Result<Self, FwdError> {
        install_stop_signal();
        let generator = Generator::load(&path.frame)?;
        let ifindex = host::ifindex(&path.source.0, &path.source.1)?;
        let (netns, frame) = (path.source.0.clone(), path.frame.clone());
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            let result = (|| {
                hostgw_agent::netns::enter(&netns).map_err(|e| format!("{netns}: {e}"))?;
                host::pin(0, GEN_CPU).map_err(|e| e.to_string())?;
                host::renice(0, -20).map_err(|e| e.to_string())?;
                let _ignored = ready_tx.send(());
                // At most 2^32 frames: ten minutes even at 7 Mpps, so the run ends by itself
                // if the stop signal never came.
                generator
                    .run_live(&frame, ifindex, u32::MAX)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })();
            flag.store(true, Ordering::Release);
            result
        });
        let running = Self {
            handle: Some(handle),
            done,
        };
        if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
            let e = running.stop().err().unwrap_or_default();
            return Err(FwdError::Generator(format!("did not start: {e}")));
        }
        Ok(running)
    }

    /// Stops the generator; its error, if it failed.
    fn stop(mut self) -> Result<(), String> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), String> {
        let Some(handle) = self.handle.take() else {
            return Ok(());
        };
        let start = Instant::now();
        while !self.done.load(Ordering::Acquire) {
            // SAFETY: the thread has not been joined, so its pthread_t is valid; SIGUSR1 has
            // a no-op handler.
            unsafe { libc::pthread_kill(handle.as_pthread_t(), libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(20));
            if start.elapsed() > Duration::from_secs(30) {
                return Err("the generator did not stop within 30 s".into());
            }
        }
        handle
            .join()
            .map_err(|_| "the generator thread panicked".to_owned())?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Err(e) = self.stop_inner() {
            eprintln!("warning: stopping the generator: {e}");
        }
    }
}

/// CPU readings at one instant.
struct CpuSnapshot {
    at: Instant,
    napi_ns: u64,
    fwd_cpu: CpuTimes,
    gen_softnet: u64,
}

impl CpuSnapshot {
    fn take(napi: &ThreadedNapi) -> Result<Self, FwdError> {
        Ok(Self {
            at: Instant::now(),
            napi_ns: host::task_runtime_ns(napi.pid)?,
            fwd_cpu: CpuTimes::read(FWD_CPU)?,
            gen_softnet: host::softnet_processed(GEN_CPU)?,
        })
    }
}

/// Frame counts while nothing is in flight (before the generator starts, after it stopped):
/// `(accepted into the input ring, refused by it, counted at the sink)`.
fn frame_counts(path: &Path, sink: &Sink) -> Result<(u64, u64, u64), FwdError> {
    let (accepted, refused) = host::xdp_xmit_counters(&path.source.0, &path.source.1)?;
    Ok((accepted, refused, sink.count()?))
}

/// Runs one session on `path`: generator, sink and NAPI set up, `timing.warmup` of
/// generating, then `timing.seconds` counted seconds (alternately kernel and fast path when
/// the path has a toggle, starting with the kernel), then everything restored.
pub fn session(path: &Path, timing: Timing) -> Result<Session, FwdError> {
    // The coordinating thread (this one) stays off the measured CPU.
    host::pin(0, GEN_CPU)?;
    let result = session_pinned(path, timing);
    host::unpin_self();
    result
}

fn session_pinned(path: &Path, timing: Timing) -> Result<Session, FwdError> {
    let sink = {
        let (netns, iface, kind) = (path.sink.0.clone(), path.sink.1.clone(), path.sink_kind);
        std::thread::spawn(move || -> Result<Sink, FwdError> {
            hostgw_agent::netns::enter(&netns)
                .map_err(|e| FwdError::Generator(format!("entering {netns} for the sink: {e}")))?;
            let index = host::ifindex(&netns, &iface)?;
            Ok(Sink::attach(kind, index)?)
        })
        .join()
        .expect("the sink thread does not panic")
        .map_err(|e| FwdError::Sink {
            netns: path.sink.0.clone(),
            iface: path.sink.1.clone(),
            source: Box::new(e),
        })?
    };
    let napi = ThreadedNapi::enable(&path.rx.0, &path.rx.1, FWD_CPU)?;
    let mut toggle = path.toggle.as_deref().map(Toggle::open).transpose()?;
    if let Some(t) = toggle.as_mut() {
        t.set(false)?;
    }

    let before = frame_counts(path, &sink)?;
    let started = Instant::now();
    let generator = Running::start(path)?;
    std::thread::sleep(timing.warmup);
    let first = CpuSnapshot::take(&napi)?;
    let mut seconds = Vec::with_capacity(timing.seconds);
    let mut fast = false;
    let (mut last_at, mut last_count) = (first.at, sink.count()?);
    for k in 1..=timing.seconds {
        if hostgw_tests::lab::INTERRUPTED.load(Ordering::Relaxed) {
            return Err(FwdError::Generator("interrupted".into()));
        }
        let deadline = first.at + Duration::from_secs(k as u64);
        if let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let count = sink.count()?;
        let now = Instant::now();
        let dt = now.duration_since(last_at).as_secs_f64();
        seconds.push(Second {
            fast,
            pps: count.saturating_sub(last_count) as f64 / dt,
        });
        (last_at, last_count) = (now, count);
        if let Some(t) = toggle.as_mut() {
            fast = !fast;
            t.set(fast)?;
        }
    }
    let last = CpuSnapshot::take(&napi)?;
    generator.stop().map_err(FwdError::Generator)?;
    let generating = started.elapsed().as_secs_f64();
    drop(toggle);
    // Let the last frames drain before counting.
    std::thread::sleep(Duration::from_millis(100));
    let after = frame_counts(path, &sink)?;

    let wall = last.at.duration_since(first.at).as_secs_f64();
    let accepted = after.0.saturating_sub(before.0);
    let refused = after.1.saturating_sub(before.1);
    let forwarded = after.2.saturating_sub(before.2);
    let (idle, _softirq, steal) = last.fwd_cpu.shares_since(&first.fwd_cpu);
    let evidence = Evidence {
        fwd_idle_pct: idle,
        fwd_steal_pct: steal,
        napi_busy_pct: 100.0 * last.napi_ns.saturating_sub(first.napi_ns) as f64 / (wall * 1e9),
        offered_pps: (accepted + refused) as f64 / generating,
        ring_drop_pps: refused as f64 / generating,
        forwarded_pps: forwarded as f64 / generating,
        lost_after_ring_pct: 100.0 * accepted.saturating_sub(forwarded) as f64
            / accepted.max(1) as f64,
        gen_cpu_softnet_pps: last.gen_softnet.saturating_sub(first.gen_softnet) as f64 / wall,
        loadavg: host::loadavg(),
    };
    drop(napi);
    drop(sink);
    Ok(Session { seconds, evidence })
}
