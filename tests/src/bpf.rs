//! `BPF_PROG_TEST_RUN` through the raw `bpf(2)` call, for what aya's `test_run` does not pass
//! (test-run flags such as `BPF_F_TEST_XDP_LIVE_FRAMES` and
//! `BPF_F_TEST_SKB_CHECKSUM_COMPLETE`).

/// The `bpf(2)` command.
pub const BPF_PROG_TEST_RUN: u32 = 10;
/// Test-run flag: XDP frames are sent out as a live `XDP_TX`/redirect would.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Test-run flag (Linux 6.11): the skb gets `CHECKSUM_COMPLETE`, and the run fails with
/// `EBADMSG` when the program leaves `skb->csum` wrong.
pub const BPF_F_TEST_SKB_CHECKSUM_COMPLETE: u32 = 1 << 2;

/// `union bpf_attr` for `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct TestRunAttr {
    pub prog_fd: u32,
    pub retval: u32,
    pub data_size_in: u32,
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    pub flags: u32,
    pub cpu: u32,
    pub batch_size: u32,
    pub pad: u32,
}

/// Runs `BPF_PROG_TEST_RUN` with `attr`; its pointers must point at live buffers of the sizes
/// given next to them.
pub fn test_run(attr: &mut TestRunAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid, initialised `repr(C)` `union bpf_attr` member for the
    // command, of the size passed; the caller keeps the buffers it points to alive.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            libc::c_long::from(BPF_PROG_TEST_RUN),
            std::ptr::from_mut(attr),
            size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attr_layout_matches_the_uapi_offsets() {
        assert_eq!(size_of::<TestRunAttr>(), 80);
        assert_eq!(std::mem::offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
    }
}
