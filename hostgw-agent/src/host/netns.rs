//! Entering a named network namespace (`ip netns add NAME` makes `/run/netns/NAME`).
//!
//! Unlike `ip netns exec`, this only switches the network namespace of the calling thread and
//! keeps the mount namespace, so the host's bpf filesystem stays visible and pins outlive the
//! process. Threads created afterwards inherit the namespace: call it before starting a
//! runtime.

use std::{fs::File, os::fd::AsRawFd as _, path::PathBuf};

/// Why a namespace could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace file could not be opened.
    #[error("cannot open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `setns` failed (not root, or not a network namespace file).
    #[error("cannot enter network namespace {path}")]
    Setns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Moves the calling thread into the network namespace `name`.
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let path = PathBuf::from("/run/netns").join(name);
    let file = File::open(&path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    // SAFETY: setns takes a valid open file descriptor, which `file` keeps alive for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(NetnsError::Setns {
            path,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
