//! The benchmark behind `cargo xtask bench`: the kernel-only host-gw baseline and the hostgw
//! fast path side by side, in one run, on this machine (DESIGN.md §7, layer 4). Numbers, not
//! assertions: targets are reported as met or missed, never enforced.
//!
//! Three 2-node labs run at once, so every figure alternates between them run by run and the
//! machine's drift hits them alike:
//!
//! - `bk`: kernel only (flannel host-gw: routes, no programs, no agent);
//! - `bf`: the agent with the fast path (conntrack gate off: the node has no NAT);
//! - `bg`: the agent with `--conntrack-gate on`, on nodes whose netfilter tracks connections
//!   (an nftables `ct state` rule in the forward hook, as a kube-proxy node has): every flow's
//!   first packets take the kernel path, which confirms them, and the rest the fast path.
//!
//! What is measured, and where (see each module):
//!
//! - [`fwd`] + [`paths`]: 60- and 1514-byte frames, egress and ingress, forwarded by one
//!   pinned core, counted at a sink; the fast-path labs toggle their programs every second and
//!   pair each second with its neighbours; the no-forwarding ceilings;
//! - [`traffic`]: TCP with `iperf3` (1 and 4 streams) and UDP request/response with both
//!   ends on one core;
//! - [`control`]: the agent on a node list of thousands of nodes;
//! - [`report`]: medians with min–max over the runs, ratios, the Markdown report, the chart.
//!
//! Everything it creates lives in network namespaces and pin directories of its own and is
//! removed when it ends, also on error and on Ctrl-C; its traffic only ever goes between those
//! namespaces, in runs bounded in time.
//!
//! The labs come from `hostgw_tests::lab`; this crate adds what only the benchmark needs (its
//! own BPF programs and their loader, NAPI and CPU bookkeeping, the report and the chart). The
//! `hostgw-bench` binary parses the options, runs [`run`] and writes the report.

pub mod bpf;
pub mod control;
pub mod fwd;
pub mod host;
pub mod netlink;
pub mod paths;
pub mod report;
pub mod traffic;

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use hostgw_common::{Endpoint, STATE_F_CT_GATE, names};

use bpf::SinkKind;
use fwd::{Session, Timing};
pub use hostgw_tests::lab::Family;
use hostgw_tests::lab::{Lab, Mode, Spec};
use paths::Direction;

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs of every figure (each figure is the median over them).
    pub runs: usize,
    /// Forwarding: counted seconds per toggled session (half of them fast path).
    pub toggled_seconds: usize,
    /// Forwarding: counted seconds per kernel-only and ceiling session.
    pub plain_seconds: usize,
    /// Generating before counting.
    pub warmup: Duration,
    /// `iperf3 -t`.
    pub tcp_seconds: u32,
    /// Request/response: measured time per run.
    pub rr_time: Duration,
    /// Control plane: synthetic nodes, and single-node edits per run.
    pub nodes: usize,
    pub changes: usize,
    /// Which parts to run.
    pub parts: Parts,
}

/// Parts of the benchmark, all on by default.
#[derive(Debug, Clone, Copy)]
#[expect(clippy::struct_excessive_bools, reason = "independent on/off switches")]
pub struct Parts {
    pub forwarding: bool,
    pub tcp: bool,
    pub rr: bool,
    pub control: bool,
}

impl Options {
    /// The full benchmark: 5 runs of everything, 5 000 nodes, 100 edits per run.
    pub fn full() -> Self {
        Self {
            runs: 5,
            toggled_seconds: 10,
            plain_seconds: 5,
            warmup: Duration::from_secs(1),
            tcp_seconds: 5,
            rr_time: Duration::from_secs(5),
            nodes: 5_000,
            changes: 100,
            parts: Parts {
                forwarding: true,
                tcp: true,
                rr: true,
                control: true,
            },
        }
    }

    /// The smoke run: every figure once, short, through the same code.
    pub fn quick() -> Self {
        Self {
            runs: 1,
            toggled_seconds: 4,
            plain_seconds: 2,
            warmup: Duration::from_millis(500),
            tcp_seconds: 2,
            rr_time: Duration::from_secs(1),
            nodes: 5_000,
            changes: 20,
            ..Self::full()
        }
    }
}

/// The three kinds of node measured side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Kernel only: flannel host-gw.
    Kernel,
    /// The fast path.
    Fast,
    /// The fast path with the conntrack gate on.
    Gate,
}

impl Variant {
    pub const ALL: [Self; 3] = [Self::Kernel, Self::Fast, Self::Gate];

    pub fn label(self) -> &'static str {
        match self {
            Self::Kernel => "kernel (host-gw)",
            Self::Fast => "fast path",
            Self::Gate => "fast path + ct gate",
        }
    }
}

/// One forwarding figure: family, frame size and direction, every session of every variant.
#[derive(Debug, Clone)]
pub struct FwdFigure {
    pub direction: Direction,
    pub family: Family,
    pub len: usize,
    pub sessions: Vec<(Variant, Session)>,
}

/// One ceiling: sink kind and frame size, every session.
#[derive(Debug, Clone)]
pub struct CeilingFigure {
    pub kind: SinkKind,
    pub len: usize,
    pub sessions: Vec<Session>,
}

/// Everything one benchmark measured.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub machine: String,
    pub quick: bool,
    pub runs: usize,
    pub build: String,
    pub started_unix: u64,
    pub elapsed_s: f64,
    pub load_before: f64,
    /// Synthetic nodes of the control-plane benchmark.
    pub nodes: usize,
    pub forwarding: Vec<FwdFigure>,
    pub ceilings: Vec<CeilingFigure>,
    /// `(streams, variant, Gbit/s)` per run, over IPv4.
    pub tcp: Vec<(u32, Variant, f64)>,
    /// `(variant, Gbit/s)` per run: one stream over IPv6.
    pub tcp6: Vec<(Variant, f64)>,
    pub rr: Vec<(Variant, traffic::RrResult)>,
    pub control: Vec<control::ControlRun>,
    /// What failed (each failure skips one measurement, not the run).
    pub failures: Vec<String>,
    /// Facts about the setup worth printing next to the numbers.
    pub notes: Vec<String>,
}

/// Frame sizes of the forwarding figures: the minimum (64 bytes on the wire with the FCS)
/// and a full 1500-byte IP packet.
pub const SMALL: usize = 60;
pub const LARGE: usize = 1514;
/// The smallest IPv6 UDP frame: 14 + 40 + 8 bytes, a 48-byte IP packet.
pub const SMALL6: usize = 62;

/// Between two measurements: a signal (Ctrl-C, SIGTERM) ends the benchmark here, and the labs
/// are torn down as the panic unwinds through them. Every measurement is bounded in time, so
/// the benchmark stops within one of them.
fn checkpoint() {
    hostgw_tests::lab::check_interrupted();
}

fn say(msg: &str) {
    eprintln!("bench: {msg}");
}

/// Runs the benchmark, printing each measurement to stderr as it is taken; `build` names the
/// build profile for the report.
pub fn run(opts: &Options, quick: bool, build: &str) -> Results {
    let started = Instant::now();
    let mut r = Results {
        machine: host::machine(),
        quick,
        runs: opts.runs,
        build: build.to_owned(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        load_before: host::loadavg(),
        nodes: opts.nodes,
        ..Results::default()
    };
    say(&format!(
        "{} — load average {:.2} before starting",
        r.machine, r.load_before
    ));
    for tool in ["iperf3", "ss", "ethtool", "nft"] {
        if !traffic::have(tool) {
            r.failures.push(format!("{tool} is not installed"));
        }
    }

    if opts.parts.forwarding || opts.parts.tcp || opts.parts.rr {
        let labs = Labs::start(&mut r);
        if opts.parts.forwarding {
            forwarding(&labs, opts, &mut r);
        }
        if opts.parts.tcp {
            tcp(&labs, opts, &mut r);
        }
        if opts.parts.rr {
            rr(&labs, opts, &mut r);
        }
        say("tearing the labs down");
    }
    if opts.parts.control {
        control_plane(opts, &mut r);
    }
    r.elapsed_s = started.elapsed().as_secs_f64();
    r
}

/// The three labs.
struct Labs {
    kernel: Lab,
    fast: Lab,
    gate: Lab,
}

impl Labs {
    fn start(r: &mut Results) -> Self {
        say(
            "starting three 2-node labs: bk (kernel only), bf (fast path), bg (fast path + ct gate)",
        );
        let kernel = Lab::start("bk", &Spec::new(2, 1, Mode::KernelOnly));
        let fast = Lab::start("bf", &Spec::new(2, 1, Mode::FastPath));
        let mut gate = Lab::start("bg", &Spec::new(2, 1, Mode::FastPath));
        for i in 1..=2 {
            // Connection tracking in the forward hook of both families, as on a node with
            // kube-proxy.
            let ruleset = "table inet hgwbench {\n chain forward {\n  type filter hook forward \
                           priority 0; policy accept;\n  ct state invalid drop\n }\n}\n";
            if let Err(e) = host::ns_sh(
                gate.node(i).netns(),
                &format!("printf '{ruleset}' | nft -f -"),
            ) {
                r.failures.push(format!("conntrack rule on bg n{i}: {e}"));
            }
            gate.restart_agent_with(i, &["--conntrack-gate", "on"]);
        }
        // The forwarding loads are one-way floods (UDP 40000 → 5201, pod n1p1 → pod n2p1),
        // which the gate leaves to the stack until conntrack has seen a reply, as netfilter's
        // flowtable does. A real flow gets its reply; these get a confirmed entry that has
        // seen one, on both nodes and for both families, so the gate rows measure the gate.
        let (p1, p2) = (gate.pod(1, 1), gate.pod(2, 1));
        let flows = [
            (p1.ip().to_string(), p2.ip().to_string()),
            (p1.ip6().to_string(), p2.ip6().to_string()),
        ];
        for i in 1..=2 {
            for (src, dst) in &flows {
                let insert = format!(
                    "conntrack -I -p udp -s {src} -d {dst} --sport 40000 --dport 5201 \
                     -t 7200 -u SEEN_REPLY,ASSURED"
                );
                if let Err(e) = host::ns_sh(gate.node(i).netns(), &insert) {
                    r.failures
                        .push(format!("conntrack entry for the loads on bg n{i}: {e}"));
                }
            }
        }
        let labs = Self { kernel, fast, gate };
        for (v, lab) in labs.all() {
            if let Err(e) = learn(lab) {
                r.failures.push(format!("{}: {e}", v.label()));
            }
        }
        match gate_on(&labs.gate) {
            Ok(true) => r
                .notes
                .push("bg: the STATE map has the conntrack gate bit set on both nodes".into()),
            Ok(false) => r
                .failures
                .push("bg: the conntrack gate bit is not set after --conntrack-gate on".into()),
            Err(e) => r.failures.push(format!("bg: reading STATE: {e}")),
        }
        labs
    }

    fn all(&self) -> [(Variant, &Lab); 3] {
        [
            (Variant::Kernel, &self.kernel),
            (Variant::Fast, &self.fast),
            (Variant::Gate, &self.gate),
        ]
    }
}

/// Whether both nodes of `lab` have the conntrack gate bit in their `STATE` map.
fn gate_on(lab: &Lab) -> Result<bool, String> {
    let mut on = true;
    for i in 1..=2 {
        let path = lab.node(i).pin_dir().join(names::STATE);
        let data = MapData::from_pin(&path).map_err(|e| e.to_string())?;
        let map: aya::maps::Array<MapData, hostgw_common::State> =
            aya::maps::Array::try_from(Map::Array(data)).map_err(|e| e.to_string())?;
        on &= map.get(&0, 0).map_err(|e| e.to_string())?.flags & STATE_F_CT_GATE != 0;
    }
    Ok(on)
}

/// Makes both pods known over both families: a few pings each way (the nodes resolve the
/// pods, the agent learns them as endpoints), then, on a fast-path lab, waits until each
/// node's endpoint tables hold its pod.
fn learn(lab: &Lab) -> Result<(), String> {
    let (p1, p2) = (lab.pod(1, 1), lab.pod(2, 1));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let replies = [
            (p1, IpAddr::from(p2.ip())),
            (p2, p1.ip().into()),
            (p1, p2.ip6().into()),
            (p2, p1.ip6().into()),
        ]
        .iter()
        .all(|(from, to)| lab.ping(from, *to, 2, Duration::from_millis(50)).received > 0);
        let known = lab.mode() == Mode::KernelOnly
            || [(1, p1), (2, p2)].iter().all(|(i, p)| {
                has_endpoint(lab, *i, names::ENDPOINTS_V4, &p.ip().octets())
                    && has_endpoint(lab, *i, names::ENDPOINTS_V6, &p.ip6().octets())
            });
        if replies && known {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "lab {}: pods not reachable or not learned as endpoints (IPv4 and IPv6) within \
                 20 s",
                lab.name()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether node `i`'s endpoint table `map` has the address `key`.
fn has_endpoint<const N: usize>(lab: &Lab, i: usize, map: &str, key: &[u8; N]) -> bool {
    let path = lab.node(i).pin_dir().join(map);
    let Ok(data) = MapData::from_pin(&path) else {
        return false;
    };
    let Ok(map) = BpfHashMap::<MapData, [u8; N], Endpoint>::try_from(Map::HashMap(data)) else {
        return false;
    };
    map.get(key, 0).is_ok()
}

fn forwarding(labs: &Labs, opts: &Options, r: &mut Results) {
    let toggled = Timing {
        warmup: opts.warmup,
        seconds: opts.toggled_seconds,
    };
    let plain = Timing {
        warmup: opts.warmup,
        seconds: opts.plain_seconds,
    };
    let figures = [
        (Direction::Egress, Family::V4, SMALL),
        (Direction::Ingress, Family::V4, SMALL),
        (Direction::Egress, Family::V4, LARGE),
        (Direction::Ingress, Family::V4, LARGE),
        (Direction::Egress, Family::V6, SMALL6),
        (Direction::Ingress, Family::V6, SMALL6),
    ];
    r.forwarding = figures
        .iter()
        .map(|&(direction, family, len)| FwdFigure {
            direction,
            family,
            len,
            sessions: Vec::new(),
        })
        .collect();
    let ceilings = [
        (SinkKind::Tc, SMALL),
        (SinkKind::Xdp, SMALL),
        (SinkKind::Tc, LARGE),
    ];
    r.ceilings = ceilings
        .iter()
        .map(|&(kind, len)| CeilingFigure {
            kind,
            len,
            sessions: Vec::new(),
        })
        .collect();
    let ceiling = paths::Ceiling::new("bc");
    for run in 1..=opts.runs {
        for fig in &mut r.forwarding {
            for (variant, lab) in labs.all() {
                checkpoint();
                let path = paths::lab_path(lab, fig.direction, fig.family, fig.len);
                let timing = if variant == Variant::Kernel {
                    plain
                } else {
                    toggled
                };
                match fwd::session(&path, timing) {
                    Ok(s) => {
                        say(&format!(
                            "run {run}/{}: {} [{}]: {}\n    {}",
                            opts.runs,
                            path.label,
                            variant.label(),
                            describe_session(&s, fig.len),
                            s.evidence.line()
                        ));
                        fig.sessions.push((variant, s));
                    }
                    Err(e) => r
                        .failures
                        .push(format!("{} [{}]: {e}", path.label, variant.label())),
                }
            }
        }
        for c in &mut r.ceilings {
            checkpoint();
            let path = ceiling.path(c.kind, c.len);
            match fwd::session(&path, plain) {
                Ok(s) => {
                    say(&format!(
                        "run {run}/{}: {}: {}\n    {}",
                        opts.runs,
                        path.label,
                        describe_session(&s, c.len),
                        s.evidence.line()
                    ));
                    c.sessions.push(s);
                }
                Err(e) => r.failures.push(format!("{}: {e}", path.label)),
            }
        }
    }
}

fn describe_session(s: &Session, len: usize) -> String {
    let unit = report::Unit::for_frames(len);
    let fmt =
        |pps: Option<f64>| pps.map_or_else(|| "–".to_owned(), |p| unit.format(unit.of_pps(p, len)));
    if s.seconds.iter().any(|x| x.fast) {
        format!(
            "kernel path (programs passing) {}, fast path {}, paired ratio {}",
            fmt(s.median_pps(false)),
            fmt(s.median_pps(true)),
            report::median(&s.pair_ratios()).map_or_else(|| "–".into(), |x| format!("{x:.2}×"))
        )
    } else {
        fmt(s.median_pps(false))
    }
}

fn tcp(labs: &Labs, opts: &Options, r: &mut Results) {
    for run in 1..=opts.runs {
        for streams in [1, 4] {
            for (variant, lab) in labs.all() {
                checkpoint();
                match traffic::tcp_gbps(lab, Family::V4, streams, opts.tcp_seconds) {
                    Ok(g) => {
                        say(&format!(
                            "run {run}/{}: TCP {streams} stream(s) [{}]: {g:.2} Gbit/s",
                            opts.runs,
                            variant.label()
                        ));
                        r.tcp.push((streams, variant, g));
                    }
                    Err(e) => r.failures.push(format!(
                        "TCP {streams} stream(s) [{}]: {e}",
                        variant.label()
                    )),
                }
            }
        }
        for (variant, lab) in labs.all() {
            checkpoint();
            match traffic::tcp_gbps(lab, Family::V6, 1, opts.tcp_seconds) {
                Ok(g) => {
                    say(&format!(
                        "run {run}/{}: TCP over IPv6, 1 stream [{}]: {g:.2} Gbit/s",
                        opts.runs,
                        variant.label()
                    ));
                    r.tcp6.push((variant, g));
                }
                Err(e) => r
                    .failures
                    .push(format!("TCP over IPv6 [{}]: {e}", variant.label())),
            }
        }
    }
}

fn rr(labs: &Labs, opts: &Options, r: &mut Results) {
    for run in 1..=opts.runs {
        for (variant, lab) in labs.all() {
            checkpoint();
            match traffic::request_response(lab, fwd::FWD_CPU, opts.rr_time) {
                Ok(x) => {
                    say(&format!(
                        "run {run}/{}: request/response [{}]: {:.0} transactions/s, p50 {:.1} µs, \
                         p99 {:.1} µs, {} lost",
                        opts.runs,
                        variant.label(),
                        x.transactions_per_s,
                        x.p50_us,
                        x.p99_us,
                        x.lost
                    ));
                    r.rr.push((variant, x));
                }
                Err(e) => r
                    .failures
                    .push(format!("request/response [{}]: {e}", variant.label())),
            }
        }
    }
}

fn control_plane(opts: &Options, r: &mut Results) {
    say(&format!(
        "control plane: the agent on {} synthetic nodes, {} runs of a cold start and {} \
         single-node edits",
        opts.nodes, opts.runs, opts.changes
    ));
    let node = match control::ControlNode::new("bcp", opts.nodes) {
        Ok(n) => n,
        Err(e) => {
            r.failures.push(format!("control plane setup: {e}"));
            return;
        }
    };
    for run in 1..=opts.runs {
        checkpoint();
        match node.run(opts.changes) {
            Ok(c) => {
                say(&format!(
                    "run {run}/{}: converged in {:.3} s; edits p50 {:.1} ms, p99 {:.1} ms (agent \
                     round p50 {:.1} ms, parsing the file {:.1} ms); peak RSS {:.1} MiB",
                    opts.runs,
                    c.converge_s,
                    traffic::quantile(&c.change_ms, 0.5),
                    traffic::quantile(&c.change_ms, 0.99),
                    traffic::quantile(&c.round_ms, 0.5),
                    c.parse_ms,
                    c.peak_rss_mib
                ));
                r.control.push(c);
            }
            Err(e) => r.failures.push(format!("control plane run {run}: {e}")),
        }
    }
}

/// Where the report and the chart go by default: `<target dir>/bench`.
pub fn default_out_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .ancestors()
                    .nth(2)
                    .expect("the workspace root, two levels above this crate")
                    .join("target")
            },
            PathBuf::from,
        )
        .join("bench")
}
