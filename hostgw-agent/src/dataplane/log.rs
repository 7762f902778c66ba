//! Log records from the programs (aya-log's ring buffer), turned into `tracing` events with
//! the target `hostgw_ebpf`, so `RUST_LOG` and `--log-format` apply to them too. The programs
//! rate-limit themselves; this only reads.

use tokio::io::{Interest, unix::AsyncFd};

/// Forwards `log` records into `tracing`.
struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "hostgw_ebpf", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "hostgw_ebpf", "{msg}"),
            log::Level::Info => tracing::info!(target: "hostgw_ebpf", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "hostgw_ebpf", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "hostgw_ebpf", "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// Starts reading the log records of the program `program_id` (and of every program loaded
/// with it: they share one ring buffer). A failure is reported and the agent goes on without
/// kernel logs.
pub fn start(program_id: u32) {
    let logger = match aya_log::EbpfLogger::init_from_id_with_logger(program_id, ToTracing) {
        Ok(l) => l,
        Err(error) => {
            tracing::warn!(%error, "the programs' log records will not be read");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer's descriptor and keeps it open, unchanged,
    // for as long as it lives, and the AsyncFd owns the logger.
    let registered = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(error) => {
            let (_logger, error) = error.into_parts();
            tracing::warn!(%error, "the programs' log records will not be read");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}
