//! Developer commands for hostgw: `cargo xtask build-ebpf`, `cargo xtask test`,
//! `cargo xtask demo`, `cargo xtask bench`.
//!
//! Every command first makes sure the machine can build the eBPF programs (see
//! [`toolchain`]) and says what it installs, so a fresh machine with only rustup and apt gets
//! from `git clone` to a tested dataplane without manual steps.

mod bench;
mod demo;
mod ebpf;
mod matrix;
mod packages;
mod test;
mod toolchain;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "hostgw developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the eBPF object (installing rust-src and bpf-linker first if missing) and print
    /// its path.
    BuildEbpf(ebpf::Options),
    /// Install what the tests need, build, and run every test: the unprivileged ones and those
    /// that need root (program tests, network-namespace tests).
    Test(test::Options),
    /// Install what is missing, build, start a 3-node lab with the agent on every node and walk
    /// a packet through it: routes, traceroute, ping, a TCP transfer, then the fast-path
    /// counters next to the kernel's. Tears the lab down at the end unless `--keep`.
    Demo(demo::Options),
    /// Install what is missing, build (release; debug with `--quick`) and benchmark the fast
    /// path against the kernel's host-gw forwarding: forwarding rate per core, TCP,
    /// request/response, the no-forwarding ceiling and the agent's control plane. Writes
    /// target/bench/results.md and results.png and prints the table.
    Bench(bench::Options),
    /// Install what is missing (qemu, virtme-ng, Debian's 6.1 and 6.12 kernel packages) and run
    /// the root tests' kernel subset inside a VM booted from each kernel (qemu TCG, the host's
    /// files read-only); prints a summary per kernel.
    Matrix(matrix::Options),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::BuildEbpf(opts) => ebpf::build(&opts).map(|_| ()),
        Command::Test(opts) => test::run(&opts),
        Command::Demo(opts) => demo::run(&opts),
        Command::Bench(opts) => bench::run(&opts),
        Command::Matrix(opts) => matrix::run(&opts),
    }
}
