//! `hostgw-lab`: the lab of `hostgw_tests::lab` from the command line.
//!
//! `hostgw-lab demo` starts a dual-stack fast-path lab (the real agent on every node) and walks
//! through the host-gw packet walk of DESIGN.md §1, over IPv4 and then over IPv6: each node's
//! routes, a traceroute from a pod to a pod on another node, a ping, a TCP transfer, then the
//! programs' counters next to the kernel's forwarding counters. `--ipv4-only` leaves IPv6 out. It tears the lab down on exit, on Ctrl-C and on SIGTERM;
//! `--keep` leaves it up and prints how to explore it and how to remove it
//! (`hostgw-lab down <lab>`).

use std::{
    process::ExitCode,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use std::{fmt::Display, net::IpAddr, str::FromStr};

use hostgw_common::counters::{family, reason};
use hostgw_tests::lab::{self, INTERRUPTED, Lab, Mode, Node, Pod, Spec};

/// The hostgw network-namespace lab: a host-gw cluster of nodes and pods on this machine.
#[derive(Debug, Parser)]
#[command(name = "hostgw-lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a lab with the agent on every node and walk a packet through it.
    Demo(DemoArgs),
    /// Remove a lab left up with `demo --keep`: its agents, namespaces and pin directories.
    Down {
        /// The lab's name (`--name` of `demo`).
        #[arg(default_value = "demo")]
        name: String,
    },
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Leave the lab up afterwards and print how to explore and remove it.
    #[arg(long)]
    keep: bool,
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=20))]
    nodes: u8,
    /// Pods per node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=20))]
    pods: u8,
    /// Megabytes for the TCP transfer.
    #[arg(long, default_value_t = 64)]
    megabytes: u64,
    /// The lab's name: its namespaces are `hgw-<pid>-<name>-…`.
    #[arg(long, default_value = "demo")]
    name: String,
    /// An IPv4-only lab (by default it is dual-stack and the walk is done over both families).
    #[arg(long)]
    ipv4_only: bool,
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set [`INTERRUPTED`]; the lab's waits and the demo's steps check it.
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

fn heading(title: &str) {
    println!(
        "\n== {title} {}",
        "=".repeat(70usize.saturating_sub(title.len()))
    );
}

/// Stops the walk between steps once a signal arrived (the lab is torn down on the way out).
fn step() -> Result<(), Interrupted> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

#[derive(Debug)]
struct Interrupted;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("hostgw-lab needs root (network namespaces, BPF): run it through `sudo -E`");
        return ExitCode::FAILURE;
    }
    match cli.command {
        Command::Demo(args) => demo(&args),
        Command::Down { name } => {
            let done = lab::teardown_kept(&name);
            println!(
                "lab {name}: stopped agents {:?}, deleted {} namespaces, removed {:?}",
                done.agents,
                done.namespaces.len(),
                done.paths
            );
            ExitCode::SUCCESS
        }
    }
}

fn demo(args: &DemoArgs) -> ExitCode {
    install_signal_handlers();
    let (nodes, pods) = (usize::from(args.nodes), usize::from(args.pods));
    println!(
        "Starting lab {:?}: {nodes} nodes × {pods} pods on one L2 switch, {}, hostgw-agent on \
         every node ({})",
        args.name,
        if args.ipv4_only {
            "IPv4 only"
        } else {
            "dual-stack"
        },
        hostgw_tests::agent_binary().display()
    );
    let started = Instant::now();
    // A panic (a failed step, or a signal during a wait) unwinds through the lab, which
    // tears itself down on the way.
    let result = std::panic::catch_unwind(|| {
        let spec = Spec {
            ipv6: !args.ipv4_only,
            ..Spec::new(nodes, pods, Mode::FastPath)
        };
        let lab = Lab::start(&args.name, &spec);
        println!(
            "Lab up in {:.1} s: every agent attached and routed to every other node.",
            started.elapsed().as_secs_f64()
        );
        let walked = walk(&lab, args.megabytes);
        if walked.is_ok() && args.keep {
            print_keep(&lab);
            let pids = lab.keep();
            println!(
                "\nAgents left running: {}",
                pids.iter()
                    .map(|(i, pid)| format!("n{i}={pid}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        } else {
            println!("\nTearing the lab down.");
        }
        walked
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Interrupted)) => {
            eprintln!("interrupted: the lab is torn down");
            ExitCode::from(130)
        }
        Err(_) if INTERRUPTED.load(Ordering::Relaxed) => {
            eprintln!("interrupted: the lab is torn down");
            ExitCode::from(130)
        }
        Err(_) => {
            eprintln!("the demo failed (see the message above); the lab is torn down");
            ExitCode::FAILURE
        }
    }
}

/// The packet walk of DESIGN.md §1, on the lab.
fn walk(lab: &Lab, megabytes: u64) -> Result<(), Interrupted> {
    let n = lab.node_count();
    let (src, dst) = (lab.pod(1, 1), lab.pod(2, 1));

    heading("Topology");
    println!(
        "switch namespace {} (bridge {})",
        lab.switch_netns(),
        lab::SWITCH_BRIDGE
    );
    let v6 = lab.ipv6();
    let and6 = |addr: &dyn Display| {
        if v6 {
            format!(" {addr}")
        } else {
            String::new()
        }
    };
    for node in lab.nodes() {
        println!(
            "node {}: netns {}, {} {}{} ({}), {} {}{}, pin dir {}",
            node.name(),
            node.netns(),
            lab::UPLINK,
            node.uplink_ip(),
            and6(&node.uplink_ip6()),
            lab::mac_string(node.uplink_mac()),
            lab::BRIDGE,
            node.gateway(),
            and6(&node.gateway6()),
            node.pin_dir().display()
        );
        for pod in lab.pods().iter().filter(|p| p.node() == node.index()) {
            println!(
                "    pod {}: netns {}, eth0 {}{} via {}",
                pod.label(),
                pod.netns(),
                pod.ip(),
                and6(&pod.ip6()),
                pod.host_veth()
            );
        }
    }

    step()?;
    heading(if v6 {
        "1. Each node's routes (ip route, ip -6 route)"
    } else {
        "1. Each node's routes (ip route)"
    });
    println!(
        "Pod CIDRs of other nodes go `via` that node's uplink address; the agent's routes carry \
         `proto {}`.",
        lab::ROUTE_PROTO
    );
    for i in 1..=n {
        println!("{}:", lab.node(i).name());
        for r in lab.routes(i) {
            println!("    {r}");
        }
        if v6 {
            for r in lab.routes6(i) {
                println!("    {r}");
            }
        }
    }

    step()?;
    trace(
        lab,
        "2. traceroute -n",
        src.ip(),
        dst.ip(),
        |h| h == lab.node(1).gateway(),
        |h| h == lab.node(2).uplink_ip(),
    );
    if v6 {
        step()?;
        trace(
            lab,
            "2b. traceroute -6 -n",
            src.ip6(),
            dst.ip6(),
            |h| h == lab.node(1).gateway6(),
            |h| h == lab.node(2).uplink_ip6(),
        );
    }
    println!(
        "The same hops as a plain host-gw node: the programs leave TTL-expiring packets to the kernel."
    );

    step()?;
    ping(lab, "3. ping", src, dst.ip(), family::IPV4);
    if v6 {
        step()?;
        ping(lab, "3b. ping -6", src, dst.ip6(), family::IPV6);
    }

    step()?;
    let far = lab.pod(n, lab.pods_per_node());
    heading(&format!(
        "4. TCP transfer of {megabytes} MB from pod {} to pod {} ({})",
        src.label(),
        far.label(),
        far.ip()
    ));
    let t = lab.tcp_transfer(src, far, megabytes << 20);
    println!(
        "    {:.1} MB arrived intact in {:.2} s: {:.0} Mbit/s",
        t.bytes as f64 / f64::from(1 << 20),
        t.elapsed.as_secs_f64(),
        t.mbit_per_s()
    );
    if v6 {
        step()?;
        heading(&format!(
            "4b. TCP transfer of {megabytes} MB over IPv6 to pod {} ({})",
            far.label(),
            far.ip6()
        ));
        let t = lab.tcp_transfer6(src, far, megabytes << 20);
        println!(
            "    {:.1} MB arrived intact in {:.2} s: {:.0} Mbit/s",
            t.bytes as f64 / f64::from(1 << 20),
            t.elapsed.as_secs_f64(),
            t.mbit_per_s()
        );
    }

    step()?;
    heading("5. Who forwarded: the programs (STATS) next to the kernel's forwarding counters");
    println!(
        "    {:<6} {:>10} {:>14} {:>10} {:>20}   by reason",
        "node", "fast IPv4", "ForwDatagrams", "fast IPv6", "Ip6OutForwDatagrams"
    );
    for i in 1..=n {
        let c = lab.fast_path_counters(i);
        let detail = c
            .nonzero()
            .iter()
            .map(|(f, h, r, p)| format!("{f}/{h}/{r}={p}"))
            .collect::<Vec<_>>()
            .join(" ");
        let (fast6, forw6) = if v6 {
            (
                c.fast_in(family::IPV6).to_string(),
                lab.snmp6_forwarded(i).to_string(),
            )
        } else {
            ("-".to_owned(), "-".to_owned())
        };
        println!(
            "    {:<6} {:>10} {:>14} {fast6:>10} {forw6:>20}   {detail}",
            lab.node(i).name(),
            c.fast_in(family::IPV4),
            lab.snmp_forwarded(i),
        );
    }
    println!(
        "Fast path = fast_egress + fast_ingress + fast_transit + fib_forward + neigh_redirect; \
         ForwDatagrams (IPv4) and Ip6OutForwDatagrams (IPv6) count what the kernel's routing \
         stack forwarded instead."
    );
    Ok(())
}

/// A traceroute from `src` to `dst`, each hop explained.
fn trace<A>(
    lab: &Lab,
    title: &str,
    src: A,
    dst: A,
    is_gateway: impl Fn(A) -> bool,
    is_next_hop: impl Fn(A) -> bool,
) where
    A: Into<IpAddr> + FromStr + Display + Copy + PartialEq,
{
    let from = lab.pod(1, 1);
    heading(&format!("{title} {dst} from pod {} ({src})", from.label()));
    for (k, hop) in lab.traceroute(from, dst).iter().enumerate() {
        let ip = hop.map_or_else(|| "*".to_owned(), |h| h.to_string());
        let what = match hop {
            Some(h) if is_gateway(*h) => "the pod's gateway: cni0 on n1",
            Some(h) if is_next_hop(*h) => "n2's uplink: the next hop of n1's route",
            Some(h) if *h == dst => "the destination pod, behind cni0 on n2",
            _ => "",
        };
        println!("    {}  {ip:<22} {what}", k + 1);
    }
}

/// 20 pings from `src` to `dst` 10 ms apart, and what the programs of n1 and n2 forwarded of
/// `fam`.
fn ping(lab: &Lab, title: &str, src: &Pod, dst: impl Into<IpAddr>, fam: u32) {
    let dst = dst.into();
    heading(&format!(
        "{title} {dst} from pod {} (20 × 10 ms)",
        src.label()
    ));
    let before: Vec<_> = [1, 2].map(|i| lab.fast_path_counters(i)).into();
    let ping = lab.ping(src, dst, 20, Duration::from_millis(10));
    println!("    {} sent, {} received", ping.sent, ping.received);
    for i in [1, 2] {
        let grew = lab.fast_path_counters(i).since(&before[i - 1]);
        println!(
            "    {}: +{} fast_egress, +{} fast_ingress",
            lab.node(i).name(),
            grew.reason_in(fam, reason::FAST_EGRESS),
            grew.reason_in(fam, reason::FAST_INGRESS)
        );
    }
}

fn print_keep(lab: &Lab) {
    let (src, dst) = (lab.pod(1, 1), lab.pod(2, 1));
    let n1 = lab.node(1);
    heading("The lab stays up");
    println!("Explore it:");
    println!(
        "    ip netns list | grep {}",
        lab.switch_netns().trim_end_matches("-sw")
    );
    println!("    ip netns exec {} ping {}", src.netns(), dst.ip());
    println!(
        "    ip netns exec {} traceroute -n {}",
        src.netns(),
        dst.ip()
    );
    if lab.ipv6() {
        println!("    ip netns exec {} ping {}", src.netns(), dst.ip6());
        println!(
            "    ip netns exec {} traceroute -6 -n {}",
            src.netns(),
            dst.ip6()
        );
    }
    println!("    ip -n {} route", n1.netns());
    println!("    ip -n {} -6 route", n1.netns());
    println!("    ip -n {} neigh", n1.netns());
    println!("    ip netns exec {} cat /proc/net/snmp", n1.netns());
    for map in [
        "ROUTES_V4",
        "ROUTES_V6",
        "ENDPOINTS_V4",
        "ENDPOINTS_V6",
        "STATS",
    ] {
        println!(
            "    bpftool map dump pinned {}/{map}",
            n1.pin_dir().display()
        );
    }
    println!("    cat {}", lab.nodes_file().display());
    println!("    less {}", n1.log_path().display());
    println!("Edit the nodes file (write elsewhere, then mv over it) and the agents follow.");
    println!("\nTear it down:");
    let exe = std::env::current_exe()
        .map_or_else(|_| "hostgw-lab".to_owned(), |p| p.display().to_string());
    println!("    {exe} down {}", lab.name());
    println!("or by hand:");
    let pids: Vec<String> = lab
        .nodes()
        .iter()
        .filter_map(|node| lab.agent_pid(node.index()).map(|p| p.to_string()))
        .collect();
    println!("    kill -TERM {}; sleep 2", pids.join(" "));
    let mut namespaces: Vec<&str> = lab.pods().iter().map(Pod::netns).collect();
    namespaces.extend(lab.nodes().iter().map(Node::netns));
    namespaces.push(lab.switch_netns());
    for ns in namespaces {
        println!("    ip netns del {ns}");
    }
    for node in lab.nodes() {
        println!("    rm -rf {}", node.pin_dir().display());
    }
    println!("    rm -rf {}", lab.dir().display());
}
