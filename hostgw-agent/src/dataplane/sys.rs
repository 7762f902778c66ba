//! The raw `bpf(2)` calls aya does not offer, typed with the kernel's own definitions (aya-obj's
//! generated bindings): opening a pinned object, and reading which interface a link is on.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};

/// The ifindex a pinned XDP or tcx link is attached to; 0 once its interface is gone.
pub fn pinned_link_ifindex(path: &Path) -> io::Result<u32> {
    let fd = obj_get(path)?;
    let info = link_info(&fd)?;
    // SAFETY: the kernel filled the union member that `type_` names.
    unsafe {
        match info.type_ {
            t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => {
                Ok(info.__bindgen_anon_1.xdp.ifindex)
            }
            t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => {
                Ok(info.__bindgen_anon_1.tcx.ifindex)
            }
            t => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is a link of type {t}, not XDP or tcx", path.display()),
            )),
        }
    }
}

/// `BPF_OBJ_GET`: a new descriptor for the object pinned at `path`.
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: bpf_attr is plain data; all zero is the kernel's default for every field.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    let fd = bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `BPF_OBJ_GET_INFO_BY_FD` on a link.
fn link_info(fd: &OwnedFd) -> io::Result<bpf_link_info> {
    // SAFETY: bpf_link_info is plain data; the kernel fills what it knows.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above, for bpf_attr.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size_of::<bpf_link_info>() as u32;
    attr.info.info = (&raw mut info) as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}

fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid bpf_attr for `cmd` whose pointers (a path, an info buffer)
    // outlive the call; the kernel reads and writes at most `size_of::<bpf_attr>()` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            std::ptr::from_mut(attr),
            size_of::<bpf_attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
