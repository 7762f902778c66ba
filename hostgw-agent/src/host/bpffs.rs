//! Making sure the pin directory lives on a bpf filesystem.
//!
//! bpffs may not be mounted at boot. For the standard root `/sys/fs/bpf` the agent mounts it;
//! elsewhere it reports what to do.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The standard bpffs mount point.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Why the pin directory is unusable.
#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    /// The directory is not on a bpf filesystem and is not below the standard root.
    #[error(
        "pin directory {0} is not on a bpf filesystem; mount one (`mount -t bpf bpf DIR`) or \
         use a directory below /sys/fs/bpf"
    )]
    NotBpffs(PathBuf),
    /// Mounting bpffs at the standard root failed.
    #[error("cannot mount a bpf filesystem at {BPFFS_ROOT}")]
    Mount(#[source] std::io::Error),
    /// Creating the pin directory failed.
    #[error("cannot create pin directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Makes sure `dir` exists on a bpf filesystem, mounting bpffs at `/sys/fs/bpf` when `dir` is
/// below it and nothing is mounted there.
pub fn ensure_pin_dir(dir: &Path) -> Result<(), BpffsError> {
    if !on_bpffs(dir) {
        if !dir.starts_with(BPFFS_ROOT) {
            return Err(BpffsError::NotBpffs(dir.to_path_buf()));
        }
        if !is_bpffs(Path::new(BPFFS_ROOT)) {
            tracing::info!(path = BPFFS_ROOT, "mounting the bpf filesystem");
            mount_bpffs(Path::new(BPFFS_ROOT))?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| BpffsError::Create {
        path: dir.to_path_buf(),
        source,
    })?;
    if !is_bpffs(dir) {
        return Err(BpffsError::NotBpffs(dir.to_path_buf()));
    }
    Ok(())
}

/// Whether `dir`, or its closest existing ancestor, is on a bpf filesystem.
fn on_bpffs(dir: &Path) -> bool {
    dir.ancestors().find(|p| p.exists()).is_some_and(is_bpffs)
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out pointer.
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    rc == 0 && st.f_type == BPF_FS_MAGIC
}

fn mount_bpffs(at: &Path) -> Result<(), BpffsError> {
    let target = CString::new(at.as_os_str().as_bytes()).expect("constant path has no NUL");
    std::fs::create_dir_all(at).map_err(BpffsError::Mount)?;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(BpffsError::Mount(std::io::Error::last_os_error()));
    }
    Ok(())
}
