//! `hostgw-bench`: the benchmark of the `hostgw_bench` library, run by `cargo xtask bench`.
//!
//! Measures the kernel-only host-gw baseline and the fast path side by side (forwarding rate
//! per core, TCP, request/response, the no-forwarding ceiling, the agent's control plane),
//! prints each measurement with its saturation evidence as it goes, then writes the Markdown
//! report (`results.md`) and the chart (`results.png`) into `--out` and prints the report.
//! Every lab it starts is torn down on exit, on Ctrl-C and on SIGTERM. It exits non-zero when
//! a measurement failed; it never judges the numbers.

use std::{path::PathBuf, process::ExitCode, sync::atomic::Ordering};

use clap::Parser;
use hostgw_bench::{self as bench, Options, report};
use hostgw_tests::lab::INTERRUPTED;

/// Benchmark the hostgw fast path against the kernel's host-gw forwarding on this machine.
#[derive(Debug, Parser)]
#[command(name = "hostgw-bench")]
struct Cli {
    /// A short smoke run: every figure once, with short durations, through the same code.
    #[arg(long)]
    quick: bool,
    /// Where to write results.md and results.png (default: <target dir>/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs per figure (default 5, or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: Option<u32>,
    /// Only these parts (comma-separated): forwarding, tcp, rr, control.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The build profile of the agent and of this binary, for the report.
    #[arg(long, default_value = "debug")]
    build: String,
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid value to fill in; the handler only stores to
        // an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(sig, &raw const action, std::ptr::null_mut());
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("hostgw-bench needs root (network namespaces, BPF): run it through `sudo -E`");
        return ExitCode::FAILURE;
    }
    install_signal_handlers();
    let mut opts = if cli.quick {
        Options::quick()
    } else {
        Options::full()
    };
    if let Some(runs) = cli.runs {
        opts.runs = runs as usize;
    }
    if !cli.only.is_empty() {
        let has = |p: &str| cli.only.iter().any(|o| o == p);
        for o in &cli.only {
            if !["forwarding", "tcp", "rr", "control"].contains(&o.as_str()) {
                eprintln!("--only: unknown part {o:?} (forwarding, tcp, rr, control)");
                return ExitCode::FAILURE;
            }
        }
        opts.parts.forwarding = has("forwarding");
        opts.parts.tcp = has("tcp");
        opts.parts.rr = has("rr");
        opts.parts.control = has("control");
    }
    let out = cli.out.unwrap_or_else(bench::default_out_dir);
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }

    // A panic (a lab that does not come up, or a signal during a wait) unwinds through the
    // labs, which tear themselves down on the way.
    let results = match std::panic::catch_unwind(|| bench::run(&opts, cli.quick, &cli.build)) {
        Ok(r) => r,
        Err(_) if INTERRUPTED.load(Ordering::Relaxed) => {
            eprintln!("interrupted: the labs are torn down");
            return ExitCode::from(130);
        }
        Err(_) => {
            eprintln!("the benchmark failed (see the message above); the labs are torn down");
            return ExitCode::FAILURE;
        }
    };

    let md = report::markdown(&results);
    let md_path = out.join("results.md");
    let png_path = out.join("results.png");
    let mut ok = results.failures.is_empty();
    if let Err(e) = std::fs::write(&md_path, &md) {
        eprintln!("cannot write {}: {e}", md_path.display());
        ok = false;
    }
    let chart = report::chart(&results, &png_path);
    println!("{md}");
    println!("Report: {}", md_path.display());
    match chart {
        Ok(()) => println!("Chart:  {}", png_path.display()),
        Err(e) => {
            eprintln!("no chart: {e}");
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{} measurement(s) failed: see Failures in the report",
            results.failures.len()
        );
        ExitCode::FAILURE
    }
}
