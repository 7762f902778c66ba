//! `hostgw-agent`: parses the command line, sets up logging, and hands over to the library.

use anyhow::Context as _;
use clap::Parser as _;
use hostgw_agent::cli::{Cli, Command, InspectArgs, LogFormat, Output};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Run(args) => args.log_format,
        _ => LogFormat::Text,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }

    match cli.command {
        Command::Run(args) => {
            let config = hostgw_agent::Config::try_from(args)?;
            // The namespace is entered before the runtime starts, so that every thread the
            // runtime spawns inherits it.
            if let Some(netns) = &config.netns {
                hostgw_agent::netns::enter(netns).with_context(|| format!("--netns {netns}"))?;
            }
            runtime()?.block_on(async {
                let shutdown =
                    hostgw_agent::shutdown_signal().context("installing signal handlers")?;
                hostgw_agent::run(config, shutdown).await?;
                anyhow::Ok(())
            })?;
        }
        Command::Routes(args) => inspect(&args, |pin, h| async move {
            let rows = hostgw_agent::inspect::routes(&pin, &h, args.metrics_addr).await?;
            print(
                args.output,
                &rows,
                &[
                    "CIDR",
                    "NODE IP",
                    "NODE MAC",
                    "UPLINK",
                    "MTU",
                    "KERNEL VIA",
                    "NEIGHBOUR",
                    "STATUS",
                ],
                |r| {
                    vec![
                        r.cidr.clone(),
                        r.node_ip.clone().unwrap_or_else(|| "-".into()),
                        r.node_mac.clone().unwrap_or_else(|| "-".into()),
                        r.uplink.clone().unwrap_or_else(|| "-".into()),
                        r.mtu.map_or_else(|| "-".into(), |m| m.to_string()),
                        r.kernel_via.clone().unwrap_or_else(|| "-".into()),
                        r.neighbour.clone(),
                        r.status.clone(),
                    ]
                },
            );
            Ok(())
        })?,
        Command::Endpoints(args) => inspect(&args, |pin, h| async move {
            let rows = hostgw_agent::inspect::endpoint_rows(&pin, &h).await?;
            print(
                args.output,
                &rows,
                &["POD IP", "MAC", "IFINDEX", "VETH"],
                |r| {
                    vec![
                        r.ip.clone(),
                        r.mac.clone(),
                        r.ifindex.to_string(),
                        r.veth.clone().unwrap_or_else(|| "-".into()),
                    ]
                },
            );
            Ok(())
        })?,
        Command::Stats(args) => {
            let pin = args.inspect.pin_dir.clone();
            if let Some(ns) = &args.inspect.netns {
                hostgw_agent::netns::enter(ns).with_context(|| format!("--netns {ns}"))?;
            }
            let cols = ["FAMILY", "HOOK", "REASON", "PACKETS", "BYTES"];
            let row = |r: &hostgw_agent::inspect::StatRow| {
                vec![
                    r.family.into(),
                    r.hook.into(),
                    r.reason.into(),
                    r.packets.to_string(),
                    r.bytes.to_string(),
                ]
            };
            let mut last = hostgw_agent::inspect::stat_rows(&pin, true)?;
            if !args.watch {
                let rows: Vec<_> = last
                    .into_iter()
                    .filter(|r| args.all || r.packets > 0)
                    .collect();
                print(args.inspect.output, &rows, &cols, row);
                return Ok(());
            }
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let now = hostgw_agent::inspect::stat_rows(&pin, true)?;
                let rates: Vec<_> = now
                    .iter()
                    .zip(&last)
                    .map(|(n, l)| hostgw_agent::inspect::StatRow {
                        packets: n.packets.saturating_sub(l.packets),
                        bytes: n.bytes.saturating_sub(l.bytes),
                        ..n.clone()
                    })
                    .filter(|r| args.all || r.packets > 0)
                    .collect();
                print(
                    args.inspect.output,
                    &rates,
                    &["FAMILY", "HOOK", "REASON", "PACKETS/S", "BYTES/S"],
                    row,
                );
                println!();
                last = now;
            }
        }
        Command::Status(args) => inspect(&args, |pin, h| async move {
            let status = hostgw_agent::inspect::status(&pin, &h, args.metrics_addr).await?;
            match args.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                Output::Table => print_status(&status),
            }
            Ok(())
        })?,
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs an inspection command: enters `--netns`, opens a netlink connection, calls `f`.
fn inspect<F, Fut>(args: &InspectArgs, f: F) -> anyhow::Result<()>
where
    F: FnOnce(std::path::PathBuf, rtnetlink::Handle) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if let Some(ns) = &args.netns {
        hostgw_agent::netns::enter(ns).with_context(|| format!("--netns {ns}"))?;
    }
    runtime()?.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().context("netlink")?;
        tokio::spawn(conn);
        f(args.pin_dir.clone(), handle).await
    })
}

/// Prints rows as aligned columns or as a JSON array.
fn print<T: serde::Serialize>(
    output: Output,
    rows: &[T],
    header: &[&str],
    cells: impl Fn(&T) -> Vec<String>,
) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(rows).expect("rows serialize")
        ),
        Output::Table => {
            let lines: Vec<Vec<String>> =
                std::iter::once(header.iter().map(|h| (*h).to_owned()).collect())
                    .chain(rows.iter().map(cells))
                    .collect();
            let widths: Vec<usize> = (0..header.len())
                .map(|c| lines.iter().map(|l| l[c].len()).max().unwrap_or(0))
                .collect();
            for l in lines {
                let cols: Vec<String> = l
                    .iter()
                    .zip(&widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                println!("{}", cols.join("  ").trim_end());
            }
        }
    }
}

fn print_status(s: &hostgw_agent::inspect::Status) {
    println!(
        "agent {}   kernel {}   pins {}",
        s.agent_version, s.kernel, s.pin_dir
    );
    println!("kernel features: {}", s.features);
    let on = |b: bool| if b { "on" } else { "off" };
    println!(
        "forwarding ipv4 {}   ipv6 {}   conntrack gate {}",
        on(s.forwarding_v4),
        on(s.forwarding_v6),
        on(s.conntrack_gate)
    );
    println!();
    print(
        Output::Table,
        &s.programs,
        &["PIN", "PROGRAM", "ID", "TAG", "INTERFACE", "MODE"],
        |a| {
            vec![
                a.pin.clone(),
                a.program.clone(),
                a.program_id.to_string(),
                a.tag.clone(),
                a.interface.clone(),
                a.mode.clone(),
            ]
        },
    );
    if !s.shared_hooks.is_empty() {
        println!();
        print(
            Output::Table,
            &s.shared_hooks,
            &["INTERFACE", "SHARED", "OTHER TC USERS"],
            |h| {
                vec![
                    h.interface.clone(),
                    h.flags.join(","),
                    h.ingress
                        .iter()
                        .map(|u| format!("ingress: {u}"))
                        .chain(h.egress.iter().map(|u| format!("egress: {u}")))
                        .collect::<Vec<_>>()
                        .join("; "),
                ]
            },
        );
    }
    println!();
    print(
        Output::Table,
        &s.maps,
        &["MAP", "ENTRIES", "CAPACITY"],
        |m| {
            vec![
                m.map.to_owned(),
                m.entries.to_string(),
                m.capacity.to_string(),
            ]
        },
    );
    println!();
    match &s.agent {
        Some(a) => println!("agent report: {a}"),
        None => println!("agent report: no agent answered on its HTTP endpoint"),
    }
}
