//! From [`Results`] to what a reader sees: per-figure medians with min–max over the runs,
//! fast/kernel ratios, the targets of issue 7 as met or missed, the saturation evidence, the
//! Markdown report and the PNG chart.
//!
//! Pure functions of the results, apart from [`chart`] writing its file.

use std::{fmt::Write as _, path::Path};

use super::{
    Family, LARGE, Results, SMALL, Variant,
    bpf::SinkKind,
    fwd::{Evidence, Session},
    paths::Direction,
    traffic,
};

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    })
}

/// Median, minimum and maximum over runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    /// `None` when there is no finite value.
    pub fn of(values: &[f64]) -> Option<Self> {
        let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        Some(Self {
            median: median(&v)?,
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: v.len(),
        })
    }

    /// `median (min–max)` with `digits` decimals; just the median for a single run.
    pub fn cell(&self, digits: usize) -> String {
        if self.n <= 1 {
            format!("{:.digits$}", self.median)
        } else {
            format!(
                "{:.digits$} ({:.digits$}–{:.digits$})",
                self.median, self.min, self.max
            )
        }
    }
}

fn cell(s: Option<Summary>, digits: usize) -> String {
    s.map_or_else(|| "–".to_owned(), |s| s.cell(digits))
}

/// The unit a forwarding figure is given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Million frames per second (small frames).
    Mpps,
    /// Gbit/s of IP packets (large frames).
    Gbps,
}

impl Unit {
    pub fn for_frames(len: usize) -> Self {
        if len >= 1000 { Self::Gbps } else { Self::Mpps }
    }

    /// `pps` frames of `len` bytes per second in this unit.
    pub fn of_pps(self, pps: f64, len: usize) -> f64 {
        match self {
            Self::Mpps => pps / 1e6,
            Self::Gbps => pps * (len - 14) as f64 * 8.0 / 1e9,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Mpps => "Mpps",
            Self::Gbps => "Gbit/s",
        }
    }

    /// `value` with its unit.
    pub fn format(self, value: f64) -> String {
        format!("{value:.2} {}", self.name())
    }
}

/// The IP packet size of a frame length, for labels.
fn ip_size(len: usize) -> usize {
    if len == SMALL { 64 } else { len - 14 }
}

/// A forwarding figure's name: its direction, and the family when it is IPv6.
fn figure_name(direction: Direction, family: Family) -> String {
    match family {
        Family::V4 => direction.name().to_owned(),
        Family::V6 => format!("{} IPv6", direction.name()),
    }
}

/// One forwarding figure, summarised.
#[derive(Debug, Clone)]
pub struct FwdSummary {
    pub direction: Direction,
    pub family: Family,
    pub len: usize,
    pub unit: Unit,
    /// Kernel-only lab.
    pub kernel: Option<Summary>,
    /// Per variant (fast, gate): the "on" seconds, the "off" seconds (kernel path with the
    /// programs attached and passing), and the paired ratio, each per run.
    pub fast: Option<Summary>,
    pub fast_off: Option<Summary>,
    pub fast_ratio: Option<Summary>,
    pub gate: Option<Summary>,
    pub gate_off: Option<Summary>,
    pub gate_ratio: Option<Summary>,
}

fn per_run(
    sessions: &[(Variant, Session)],
    v: Variant,
    f: impl Fn(&Session) -> Option<f64>,
) -> Vec<f64> {
    sessions
        .iter()
        .filter(|(x, _)| *x == v)
        .filter_map(|(_, s)| f(s))
        .collect()
}

/// Every forwarding figure of `r`, summarised.
pub fn forwarding(r: &Results) -> Vec<FwdSummary> {
    r.forwarding
        .iter()
        .map(|f| {
            let unit = Unit::for_frames(f.len);
            let rate =
                |fast: bool| move |s: &Session| s.median_pps(fast).map(|p| unit.of_pps(p, f.len));
            let ratio = |s: &Session| median(&s.pair_ratios());
            let sum = |v: Variant, g: &dyn Fn(&Session) -> Option<f64>| {
                Summary::of(&per_run(&f.sessions, v, g))
            };
            FwdSummary {
                direction: f.direction,
                family: f.family,
                len: f.len,
                unit,
                kernel: sum(Variant::Kernel, &rate(false)),
                fast: sum(Variant::Fast, &rate(true)),
                fast_off: sum(Variant::Fast, &rate(false)),
                fast_ratio: sum(Variant::Fast, &ratio),
                gate: sum(Variant::Gate, &rate(true)),
                gate_off: sum(Variant::Gate, &rate(false)),
                gate_ratio: sum(Variant::Gate, &ratio),
            }
        })
        .collect()
}

/// A ceiling, summarised.
#[derive(Debug, Clone)]
pub struct CeilingSummary {
    pub kind: SinkKind,
    pub len: usize,
    pub value: Option<Summary>,
    pub saturated: usize,
    pub runs: usize,
}

pub fn ceilings(r: &Results) -> Vec<CeilingSummary> {
    r.ceilings
        .iter()
        .map(|c| {
            let unit = Unit::for_frames(c.len);
            CeilingSummary {
                kind: c.kind,
                len: c.len,
                value: Summary::of(
                    &c.sessions
                        .iter()
                        .filter_map(|s| s.median_pps(false).map(|p| unit.of_pps(p, c.len)))
                        .collect::<Vec<_>>(),
                ),
                saturated: c
                    .sessions
                    .iter()
                    .filter(|s| s.evidence.failures().is_empty())
                    .count(),
                runs: c.sessions.len(),
            }
        })
        .collect()
}

/// Values of `variant` over runs, from request/response results.
fn rr_values(r: &Results, v: Variant, f: impl Fn(&traffic::RrResult) -> f64) -> Vec<f64> {
    r.rr.iter()
        .filter(|(x, _)| *x == v)
        .map(|(_, x)| f(x))
        .collect()
}

/// `a[i] / b[i]` for runs present in both (runs alternate between variants, so the i-th of
/// each were measured next to each other).
fn run_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(_, y)| **y > 0.0)
        .map(|(x, y)| x / y)
        .collect()
}

/// A row of the comparison table: kernel, fast, fast/kernel, gate, gate/kernel.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    pub digits: usize,
    pub kernel: Option<Summary>,
    pub fast: Option<Summary>,
    pub fast_ratio: Option<Summary>,
    pub gate: Option<Summary>,
    pub gate_ratio: Option<Summary>,
}

/// A request/response figure: name, decimals, what to take from a result.
type Metric = (&'static str, usize, fn(&traffic::RrResult) -> f64);

/// A comparison row from the values of each variant, per run.
fn comparison_row(figure: String, digits: usize, vals: impl Fn(Variant) -> Vec<f64>) -> Row {
    let (k, f, g) = (
        vals(Variant::Kernel),
        vals(Variant::Fast),
        vals(Variant::Gate),
    );
    Row {
        figure,
        digits,
        kernel: Summary::of(&k),
        fast: Summary::of(&f),
        fast_ratio: Summary::of(&run_ratios(&f, &k)),
        gate: Summary::of(&g),
        gate_ratio: Summary::of(&run_ratios(&g, &k)),
    }
}

/// The comparison rows for TCP and request/response.
pub fn traffic_rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    for streams in [1, 4] {
        let figure = format!(
            "TCP pod → remote pod, {streams} stream{} (Gbit/s)",
            if streams == 1 { "" } else { "s" }
        );
        rows.push(comparison_row(figure, 2, |v| {
            r.tcp
                .iter()
                .filter(|(s, x, _)| *s == streams && *x == v)
                .map(|(_, _, g)| *g)
                .collect()
        }));
    }
    rows.push(comparison_row(
        "TCP pod → remote pod over IPv6, 1 stream (Gbit/s)".to_owned(),
        2,
        |v| {
            r.tcp6
                .iter()
                .filter(|(x, _)| *x == v)
                .map(|(_, g)| *g)
                .collect()
        },
    ));
    let metrics: [Metric; 3] = [
        (
            "Request/response, both ends on one core (transactions/s)",
            0,
            |x| x.transactions_per_s,
        ),
        ("Request/response p50 latency (µs)", 1, |x| x.p50_us),
        ("Request/response p99 latency (µs)", 1, |x| x.p99_us),
    ];
    for (name, digits, f) in metrics {
        rows.push(comparison_row(name.to_owned(), digits, |v| {
            rr_values(r, v, f)
        }));
    }
    rows
}

/// The control-plane figures: `(figure, value, target text, met)`.
pub fn control_rows(r: &Results) -> Vec<(String, Option<Summary>, &'static str, Option<bool>)> {
    let c = &r.control;
    let conv = Summary::of(&c.iter().map(|x| x.converge_s).collect::<Vec<_>>());
    let p50 = Summary::of(
        &c.iter()
            .map(|x| traffic::quantile(&x.change_ms, 0.5))
            .collect::<Vec<_>>(),
    );
    let p99 = Summary::of(
        &c.iter()
            .map(|x| traffic::quantile(&x.change_ms, 0.99))
            .collect::<Vec<_>>(),
    );
    let rss = Summary::of(&c.iter().map(|x| x.peak_rss_mib).collect::<Vec<_>>());
    let round = Summary::of(
        &c.iter()
            .map(|x| traffic::quantile(&x.round_ms, 0.5))
            .collect::<Vec<_>>(),
    );
    let parse = Summary::of(&c.iter().map(|x| x.parse_ms).collect::<Vec<_>>());
    let changes = c.first().map_or(0, |x| x.change_ms.len());
    vec![
        (
            "Full convergence from agent start (s)".into(),
            conv,
            "< 1 s",
            conv.map(|s| s.median < 1.0),
        ),
        (
            format!("One-node edit → route and trie updated, p50 over {changes} edits (ms)"),
            p50,
            "",
            None,
        ),
        (
            format!("One-node edit → route and trie updated, p99 over {changes} edits (ms)"),
            p99,
            "< 50 ms",
            p99.map(|s| s.median < 50.0),
        ),
        (
            "Peak RSS of the agent, VmHWM (MiB)".into(),
            rss,
            "< 64 MiB",
            rss.map(|s| s.median < 64.0),
        ),
        (
            "… of an edit: the agent's reconcile round, p50 (ms)".into(),
            round,
            "",
            None,
        ),
        (
            "… of an edit: reading + parsing the nodes file once (ms)".into(),
            parse,
            "",
            None,
        ),
    ]
}

/// One target of issue 7 with what was measured.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

fn fmt_ratio(s: Option<Summary>) -> String {
    s.map_or_else(|| "–".into(), |s| format!("{:.2}×", s.median))
}

/// The targets of issue 7, each met, missed or not measured.
pub fn targets(r: &Results) -> Vec<Target> {
    let fwd = forwarding(r);
    let ceil = ceilings(r);
    let small = |d: Direction| {
        fwd.iter()
            .find(|f| f.direction == d && f.family == Family::V4 && f.len == SMALL)
    };
    let mut out = Vec::new();
    for d in [Direction::Egress, Direction::Ingress] {
        let f = small(d);
        let ratio = f.and_then(|f| f.fast_ratio);
        out.push(Target {
            what: format!("64 B forwarding rate per core ≥ 3× kernel, {}", d.name()),
            measured: format!(
                "{} paired ({} vs the kernel-only lab)",
                fmt_ratio(ratio),
                match f.and_then(|f| Some(f.fast?.median / f.kernel?.median)) {
                    Some(x) => format!("{x:.2}×"),
                    None => "–".into(),
                }
            ),
            met: ratio.map(|s| s.median >= 3.0),
        });
    }
    let tc_ceiling = ceil
        .iter()
        .find(|c| c.kind == SinkKind::Tc && c.len == SMALL)
        .and_then(|c| c.value);
    let xdp_ceiling = ceil
        .iter()
        .find(|c| c.kind == SinkKind::Xdp && c.len == SMALL)
        .and_then(|c| c.value);
    for d in [Direction::Egress, Direction::Ingress] {
        let fast = small(d).and_then(|f| f.fast);
        let share = |c: Option<Summary>| Some(100.0 * fast?.median / c?.median);
        out.push(Target {
            what: format!(
                "fast path ≥ 85 % of the no-forwarding ceiling, 64 B {}",
                d.name()
            ),
            measured: format!(
                "{} of the TC-sink ceiling (skb receive path); {} of the XDP-sink ceiling \
                 (generator-bound)",
                share(tc_ceiling).map_or_else(|| "–".into(), |x| format!("{x:.0} %")),
                share(xdp_ceiling).map_or_else(|| "–".into(), |x| format!("{x:.0} %"))
            ),
            met: share(tc_ceiling).map(|x| x >= 85.0),
        });
    }
    let rows = traffic_rows(r);
    let p50 = rows.iter().find(|x| x.figure.contains("p50"));
    out.push(Target {
        what: "request/response p50 latency ≥ 20 % lower than kernel, both ends on one core".into(),
        measured: p50.and_then(|x| x.fast_ratio).map_or_else(
            || "–".into(),
            |s| format!("{:.0} % lower", 100.0 * (1.0 - s.median)),
        ),
        met: p50.and_then(|x| x.fast_ratio).map(|s| s.median <= 0.8),
    });
    for row in rows.iter().filter(|x| x.figure.starts_with("TCP")) {
        out.push(Target {
            what: format!("{} ≥ 1.2× kernel", row.figure.trim_end_matches(" (Gbit/s)")),
            measured: fmt_ratio(row.fast_ratio),
            met: row.fast_ratio.map(|s| s.median >= 1.2),
        });
    }
    for (figure, value, target, met) in control_rows(r) {
        if !target.is_empty() {
            out.push(Target {
                what: format!("{figure} {target}"),
                measured: value.map_or_else(|| "–".into(), |s| format!("{:.3}", s.median)),
                met,
            });
        }
    }
    out
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// Median of each evidence field over `sessions`, and how many were saturated.
fn evidence_cells(sessions: &[&Session]) -> String {
    let f = |g: fn(&Evidence) -> f64| {
        median(&sessions.iter().map(|s| g(&s.evidence)).collect::<Vec<_>>())
    };
    let saturated = sessions
        .iter()
        .filter(|s| s.evidence.failures().is_empty())
        .count();
    let pct = |v: Option<f64>| v.map_or_else(|| "–".into(), |x| format!("{x:.1} %"));
    format!(
        "{saturated}/{} | {} | {} | {} | {} | {} | {}",
        sessions.len(),
        pct(f(|e| e.fwd_idle_pct)),
        pct(f(|e| e.napi_busy_pct)),
        pct(f(|e| e.fwd_steal_pct)),
        f(|e| e.offered_pps / e.forwarded_pps.max(1.0))
            .map_or_else(|| "–".into(), |x| format!("{x:.1}×")),
        pct(f(|e| e.lost_after_ring_pct)),
        f(|e| e.gen_cpu_softnet_pps).map_or_else(|| "–".into(), |x| format!("{x:.0}")),
    )
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# hostgw benchmark\n");
    let _ = writeln!(
        m,
        "{} run{}{}, {} build, on {}; load average {:.2} before it started; took {:.0} s.\n",
        r.runs,
        if r.runs == 1 { "" } else { "s" },
        if r.quick {
            " (`--quick` smoke run: short, one run, not representative)"
        } else {
            ""
        },
        r.build,
        r.machine,
        r.load_before,
        r.elapsed_s
    );
    let _ = writeln!(
        m,
        "Each cell: median over the runs (min–max). Kernel = the kernel-only lab (flannel \
         host-gw: routes, no programs). Forwarding ratios are paired inside each run: the \
         programs' forwarding bit is flipped every second and each fast-path second is divided \
         by the mean of its neighbouring kernel-path seconds (this machine's speed drifts by \
         ±25 % over seconds); the median of those pairs is the run's ratio. Other ratios divide \
         runs taken next to each other.\n"
    );

    let _ = writeln!(m, "## Results\n");
    let _ = writeln!(
        m,
        "| Figure | Kernel (host-gw) | Fast path | Fast / kernel | Fast path + ct gate | Gate / kernel |"
    );
    let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|");
    for f in forwarding(r) {
        let _ = writeln!(
            m,
            "| Forwarding per core, {}, {} B packets ({}) | {} | {} | {} | {} | {} |",
            figure_name(f.direction, f.family),
            ip_size(f.len),
            f.unit.name(),
            cell(f.kernel, 2),
            cell(f.fast, 2),
            cell(f.fast_ratio, 2),
            cell(f.gate, 2),
            cell(f.gate_ratio, 2)
        );
    }
    for row in traffic_rows(r) {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} |",
            row.figure,
            cell(row.kernel, row.digits),
            cell(row.fast, row.digits),
            cell(row.fast_ratio, 2),
            cell(row.gate, row.digits),
            cell(row.gate_ratio, 2)
        );
    }

    let _ = writeln!(
        m,
        "\n### No-forwarding ceiling (one veth pair, same generator)\n"
    );
    let _ = writeln!(m, "| Sink | Packets | Rate | Saturated runs |");
    let _ = writeln!(m, "|---|---|---:|---:|");
    for c in ceilings(r) {
        let unit = Unit::for_frames(c.len);
        let _ = writeln!(
            m,
            "| {} | {} B | {} {} | {}/{} |",
            match c.kind {
                SinkKind::Tc => "TC (tcx) drop: the skb receive path every TC forwarder pays",
                SinkKind::Xdp => "XDP drop: no skb; bounded by the generator",
            },
            ip_size(c.len),
            cell(c.value, 2),
            unit.name(),
            c.saturated,
            c.runs
        );
    }

    let _ = writeln!(
        m,
        "\n### Control plane (the agent on {} synthetic nodes)\n",
        r.nodes
    );
    let _ = writeln!(m, "| Figure | Value | Target |");
    let _ = writeln!(m, "|---|---:|---|");
    for (figure, value, target, met) in control_rows(r) {
        let _ = writeln!(
            m,
            "| {figure} | {} | {} |",
            cell(value, if figure.contains("(s)") { 3 } else { 1 }),
            if target.is_empty() {
                String::new()
            } else {
                format!("{target}: {}", verdict(met))
            }
        );
    }

    let _ = writeln!(m, "\n### Targets (reported, not asserted)\n");
    let _ = writeln!(m, "| Target | Measured | |");
    let _ = writeln!(m, "|---|---|---|");
    for t in targets(r) {
        let _ = writeln!(m, "| {} | {} | {} |", t.what, t.measured, verdict(t.met));
    }

    let _ = writeln!(m, "\n### Forwarding: paired detail\n");
    let _ = writeln!(
        m,
        "The kernel path inside the fast-path labs (\"off\" seconds) still runs the programs, \
         which parse each packet and hand it to the stack; the kernel-only lab has none.\n"
    );
    let _ = writeln!(
        m,
        "| Figure | Kernel-only lab | bf off (kernel path) | bf on (fast path) | paired | bg off (kernel path + conntrack) | bg on (fast + gate) | paired |"
    );
    let _ = writeln!(m, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in forwarding(r) {
        let _ = writeln!(
            m,
            "| {} {} B ({}) | {} | {} | {} | {} | {} | {} | {} |",
            figure_name(f.direction, f.family),
            ip_size(f.len),
            f.unit.name(),
            cell(f.kernel, 2),
            cell(f.fast_off, 2),
            cell(f.fast, 2),
            cell(f.fast_ratio, 2),
            cell(f.gate_off, 2),
            cell(f.gate, 2),
            cell(f.gate_ratio, 2)
        );
    }

    let _ = writeln!(m, "\n### Saturation evidence (medians over runs)\n");
    let _ = writeln!(
        m,
        "A figure is the forwarder's per-core capacity when: the forwarding CPU {} is ≤ 1 % \
         idle, its NAPI thread ≥ 97 % busy, the generator (CPU {}) offers ≥ 3× what is \
         forwarded, frames are lost only at the forwarder's input ring, and the generator's \
         CPU receives nothing. The measured threads run at nice −20.\n",
        super::fwd::FWD_CPU,
        super::fwd::GEN_CPU
    );
    let _ = writeln!(
        m,
        "| Figure | Variant | Saturated runs | CPU idle | NAPI busy | Steal | Offered / forwarded | Lost after ring | Generator CPU rx pkt/s |"
    );
    let _ = writeln!(m, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for f in &r.forwarding {
        for v in Variant::ALL {
            let s: Vec<&Session> = f
                .sessions
                .iter()
                .filter(|(x, _)| *x == v)
                .map(|(_, s)| s)
                .collect();
            if !s.is_empty() {
                let _ = writeln!(
                    m,
                    "| {} {} B | {} | {} |",
                    figure_name(f.direction, f.family),
                    ip_size(f.len),
                    v.label(),
                    evidence_cells(&s)
                );
            }
        }
    }
    for c in &r.ceilings {
        let s: Vec<&Session> = c.sessions.iter().collect();
        if !s.is_empty() {
            let _ = writeln!(
                m,
                "| ceiling {} B | {} sink | {} |",
                ip_size(c.len),
                match c.kind {
                    SinkKind::Tc => "TC",
                    SinkKind::Xdp => "XDP",
                },
                evidence_cells(&s)
            );
        }
    }

    where_the_time_goes(&mut m, r);

    if !r.notes.is_empty() {
        let _ = writeln!(m, "\n### Notes\n");
        for n in &r.notes {
            let _ = writeln!(m, "- {n}");
        }
    }
    if !r.failures.is_empty() {
        let _ = writeln!(m, "\n### Failures\n");
        for f in &r.failures {
            let _ = writeln!(m, "- {}", f.replace('\n', " "));
        }
    }
    m
}

/// Per-packet CPU time on the forwarding core, from the 64-byte medians: what the kernel
/// path, the fast path and the bare skb receive path (the TC-sink ceiling) each cost.
fn where_the_time_goes(m: &mut String, r: &Results) {
    let fwd = forwarding(r);
    let tc = ceilings(r)
        .into_iter()
        .find(|c| c.kind == SinkKind::Tc && c.len == SMALL)
        .and_then(|c| c.value);
    let ns = |s: Option<Summary>| s.map(|s| 1e3 / s.median);
    let lines: Vec<String> = fwd
        .iter()
        .filter(|f| f.len == SMALL)
        .filter_map(|f| {
            let (k, fa, floor) = (ns(f.kernel)?, ns(f.fast)?, ns(tc)?);
            Some(format!(
                "- {}: kernel path {k:.0} ns/packet, fast path {fa:.0} ns/packet, of which \
                 {floor:.0} ns is the receive path every TC program pays before it runs \
                 (building the skb, GRO, the tcx hook: the TC-sink ceiling) and {:.0} ns the \
                 program, the redirect and the transmit to the sink; the kernel path spends \
                 {:.0} ns after that same receive path. A TC fast path here can be at most \
                 {:.2}× the kernel path even if the program and transmit cost nothing.",
                figure_name(f.direction, f.family),
                fa - floor,
                k - floor,
                k / floor
            ))
        })
        .collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        m,
        "\n### Where the time goes (64 B, per packet on the forwarding core)\n"
    );
    for l in lines {
        let _ = writeln!(m, "{l}");
    }
}

/// Where the chart's text font comes from: `DejaVu Sans` (Debian's `fonts-dejavu-core`).
pub const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// A failed chart.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// No font to draw text with.
    #[error("no TrueType font at {0:?} (install fonts-dejavu-core)")]
    NoFont([&'static str; 2]),
    /// Drawing or writing failed.
    #[error("drawing the chart: {0}")]
    Draw(String),
}

/// A bar: value with min–max whisker.
type Bar = Option<Summary>;

/// One panel: groups of bars, one bar per series.
struct Panel {
    title: String,
    unit: &'static str,
    groups: Vec<(String, Vec<Bar>)>,
}

const SERIES: [(&str, plotters::style::RGBColor); 4] = [
    ("kernel (host-gw)", plotters::style::RGBColor(120, 120, 120)),
    ("fast path", plotters::style::RGBColor(31, 119, 180)),
    (
        "fast path + ct gate",
        plotters::style::RGBColor(255, 127, 14),
    ),
    (
        "no forwarding (ceiling)",
        plotters::style::RGBColor(44, 160, 44),
    ),
];

/// Where bar `k` of a group sits: the three variants side by side, the ceiling in the middle.
fn bar_offset(k: usize) -> f64 {
    if k == 3 { 0.38 } else { 0.12 + 0.26 * k as f64 }
}

fn panels(r: &Results) -> Vec<Panel> {
    let fwd = forwarding(r);
    let ceil = ceilings(r);
    let mut out = Vec::new();
    for (len, unit) in [(SMALL, "Mpps"), (LARGE, "Gbit/s")] {
        let mut groups: Vec<(String, Vec<Bar>)> = fwd
            .iter()
            .filter(|f| f.len == len)
            .map(|f| {
                (
                    figure_name(f.direction, f.family),
                    vec![f.kernel, f.fast, f.gate],
                )
            })
            .collect();
        if let Some(c) = ceil.iter().find(|c| c.len == len && c.kind == SinkKind::Tc) {
            groups.push(("ceiling (TC sink)".into(), vec![None, None, None, c.value]));
        }
        out.push(Panel {
            title: format!("Forwarding per core, {} B packets", ip_size(len)),
            unit,
            groups,
        });
    }
    let rows = traffic_rows(r);
    out.push(Panel {
        title: "TCP pod → remote pod".into(),
        unit: "Gbit/s",
        groups: rows
            .iter()
            .filter(|x| x.figure.starts_with("TCP"))
            .map(|x| {
                let name = if x.figure.contains("IPv6") {
                    "IPv6, 1 stream"
                } else if x.figure.contains("4 streams") {
                    "4 streams"
                } else {
                    "1 stream"
                };
                (name.to_owned(), vec![x.kernel, x.fast, x.gate])
            })
            .collect(),
    });
    out.push(Panel {
        title: "Request/response latency, one core (lower is better)".into(),
        unit: "µs",
        groups: rows
            .iter()
            .filter(|x| x.figure.contains("latency"))
            .map(|x| {
                let name = if x.figure.contains("p50") {
                    "p50"
                } else {
                    "p99"
                };
                (name.to_owned(), vec![x.kernel, x.fast, x.gate])
            })
            .collect(),
    });
    out
}

/// Draws the results as a PNG of four bar panels (64 B and 1500 B forwarding, TCP,
/// request/response latency), bars at the median with min–max whiskers.
pub fn chart(r: &Results, path: &Path) -> Result<(), ChartError> {
    use plotters::prelude::*;

    static FONT: std::sync::OnceLock<Option<&'static [u8]>> = std::sync::OnceLock::new();
    let font = FONT.get_or_init(|| {
        let bytes = FONT_PATHS.iter().find_map(|p| std::fs::read(p).ok())?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .ok()
            .map(|()| bytes)
    });
    if font.is_none() {
        return Err(ChartError::NoFont(FONT_PATHS));
    }
    let draw = |e: &dyn std::fmt::Display| ChartError::Draw(e.to_string());

    let root = BitMapBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let (top, body) = root.split_vertically(50);
    top.draw_text(
        &format!(
            "hostgw benchmark — {}{}",
            r.machine,
            if r.quick { " — quick smoke run" } else { "" }
        ),
        &("sans-serif", 18).into_font().color(&BLACK),
        (20, 15),
    )
    .map_err(|e| draw(&e))?;
    let areas = body.split_evenly((2, 2));
    for (area, panel) in areas.iter().zip(panels(r)) {
        let ymax = panel
            .groups
            .iter()
            .flat_map(|(_, bars)| bars.iter().flatten().map(|s| s.max))
            .fold(0.0f64, f64::max)
            .max(1e-3)
            * 1.4;
        let n = panel.groups.len().max(1) as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(10)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n, (-0.08 * ymax)..ymax)
            .map_err(|e| draw(&e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(panel.unit)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| draw(&e))?;
        for (g, (name, _)) in panel.groups.iter().enumerate() {
            chart
                .draw_series(std::iter::once(Text::new(
                    name.clone(),
                    (g as f64 + 0.3, -0.03 * ymax),
                    ("sans-serif", 15).into_font(),
                )))
                .map_err(|e| draw(&e))?;
        }
        for (k, (label, color)) in SERIES.iter().enumerate() {
            let bars: Vec<(f64, Summary)> = panel
                .groups
                .iter()
                .enumerate()
                .filter_map(|(g, (_, bars))| Some((g as f64 + bar_offset(k), (*bars.get(k)?)?)))
                .collect();
            if bars.is_empty() {
                continue;
            }
            chart
                .draw_series(bars.iter().map(|(x, s)| {
                    Rectangle::new([(*x, 0.0), (x + 0.22, s.median)], color.filled())
                }))
                .map_err(|e| draw(&e))?
                .label(*label)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
            chart
                .draw_series(bars.iter().filter(|(_, s)| s.n > 1).map(|(x, s)| {
                    PathElement::new(
                        vec![(x + 0.11, s.min), (x + 0.11, s.max)],
                        BLACK.stroke_width(2),
                    )
                }))
                .map_err(|e| draw(&e))?;
            chart
                .draw_series(bars.iter().map(|(x, s)| {
                    Text::new(
                        format!("{:.2}", s.median),
                        (*x, s.max.max(s.median) + 0.02 * ymax),
                        ("sans-serif", 13).into_font(),
                    )
                }))
                .map_err(|e| draw(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| draw(&e))?;
    }
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}
