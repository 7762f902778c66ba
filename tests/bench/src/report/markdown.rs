//! The Markdown report: every figure's table, the targets, the evidence that the generator
//! saturated the forwarder, and where the time goes per packet.

use std::fmt::Write as _;

use super::{
    Results, SMALL, Session, SinkKind, Summary, Unit, Variant, ceilings, cell, control_rows,
    evidence_cells, figure_name, forwarding, ip_size, targets, traffic_rows, verdict,
};

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
        crate::fwd::FWD_CPU,
        crate::fwd::GEN_CPU
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
