//! From [`Results`] to what a reader sees: per-figure medians with min–max over the runs,
//! fast/kernel ratios, the targets as met or missed, the saturation evidence; the Markdown
//! report ([`markdown`]) and the PNG chart ([`chart`]) are built from these.
//!
//! Pure functions of the results, apart from [`chart`] writing its file.

mod chart;
mod markdown;

pub use self::{
    chart::{ChartError, FONT_PATHS, chart},
    markdown::markdown,
};

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

/// One performance target with what was measured.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

fn fmt_ratio(s: Option<Summary>) -> String {
    s.map_or_else(|| "–".into(), |s| format!("{:.2}×", s.median))
}

/// The performance targets, each met, missed or not measured.
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
