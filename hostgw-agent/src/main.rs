//! `hostgw-agent`: parses the command line, sets up logging, and hands over to the library.

use anyhow::Context as _;
use clap::Parser as _;
use hostgw_agent::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match cli.command {
        Command::Run(args) => {
            let config = hostgw_agent::Config::try_from(args)?;
            // The namespace is entered before the runtime starts, so that every thread the
            // runtime spawns inherits it.
            if let Some(netns) = &config.netns {
                hostgw_agent::netns::enter(netns).with_context(|| format!("--netns {netns}"))?;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let shutdown =
                    hostgw_agent::shutdown_signal().context("installing signal handlers")?;
                hostgw_agent::run(config, shutdown).await?;
                anyhow::Ok(())
            })?;
        }
    }
    Ok(())
}
