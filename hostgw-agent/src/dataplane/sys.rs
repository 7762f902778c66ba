//! The raw `bpf(2)` calls aya does not offer, typed with the kernel's own definitions (aya-obj's
//! generated bindings): opening and pinning objects, reading which interface a link is on,
//! finding a module's BTF, and `BPF_PROG_LOAD` with an `fd_array` (for kfunc calls into a
//! module's BTF).

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

use aya_obj::generated::{bpf_attr, bpf_btf_info, bpf_cmd, bpf_insn, bpf_link_info, bpf_link_type};

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

/// The BTF object of the kernel module `module` (`/sys/kernel/btf/<module>`), opened.
pub fn module_btf(module: &str) -> io::Result<OwnedFd> {
    let mut id = 0;
    loop {
        // SAFETY: bpf_attr is plain data; all zero is the kernel's default for every field.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_6.__bindgen_anon_1.start_id = id;
        if let Err(e) = bpf(bpf_cmd::BPF_BTF_GET_NEXT_ID, &mut attr) {
            return Err(if e.raw_os_error() == Some(libc::ENOENT) {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no BTF of the module {module} is loaded"),
                )
            } else {
                e
            });
        }
        // SAFETY: the kernel wrote the next id into the union member it reads back.
        id = unsafe { attr.__bindgen_anon_6.next_id };
        // SAFETY: as above.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_6.__bindgen_anon_1.btf_id = id;
        let Ok(fd) = bpf(bpf_cmd::BPF_BTF_GET_FD_BY_ID, &mut attr) else {
            continue; // unloaded meanwhile
        };
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut name = [0u8; 64];
        // SAFETY: bpf_btf_info is plain data.
        let mut info: bpf_btf_info = unsafe { std::mem::zeroed() };
        info.name = name.as_mut_ptr() as u64;
        info.name_len = name.len() as u32;
        obj_info(&fd, &raw mut info, size_of::<bpf_btf_info>())?;
        let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        if info.kernel_btf != 0 && &name[..len] == module.as_bytes() {
            return Ok(fd);
        }
    }
}

/// `BPF_OBJ_PIN`: pins `fd` at `path` on a bpffs.
pub fn obj_pin(fd: &OwnedFd, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    attr.__bindgen_anon_4.bpf_fd = fd.as_raw_fd() as u32;
    bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(drop)
}

/// What [`prog_load`] loads.
pub struct ProgLoad<'a> {
    pub prog_type: u32,
    pub name: &'a str,
    pub insns: &'a [bpf_insn],
    pub license: &'a std::ffi::CStr,
    /// `fd_array[i]` for a kfunc call whose `off` is `i`; slot 0 is unused.
    pub fd_array: &'a [i32],
}

/// `BPF_PROG_LOAD` with an `fd_array`. On failure the error carries the verifier's log.
pub fn prog_load(p: &ProgLoad<'_>) -> io::Result<OwnedFd> {
    let mut log = vec![0u8; 4 << 20];
    let mut name = [0 as std::ffi::c_char; 16];
    for (d, s) in name.iter_mut().zip(p.name.bytes().take(15)) {
        *d = s as std::ffi::c_char;
    }
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    // SAFETY: writing plain fields of the union member BPF_PROG_LOAD reads.
    unsafe {
        let a = &mut attr.__bindgen_anon_3;
        a.prog_type = p.prog_type;
        a.insn_cnt = p.insns.len() as u32;
        a.insns = p.insns.as_ptr() as u64;
        a.license = p.license.as_ptr() as u64;
        a.log_level = 1;
        a.log_size = log.len() as u32;
        a.log_buf = log.as_mut_ptr() as u64;
        a.prog_name = name;
        a.fd_array = p.fd_array.as_ptr() as u64;
    }
    match bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr) {
        // SAFETY: the kernel returned a new descriptor that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: String = text
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            Err(io::Error::new(
                e.kind(),
                format!("{e}; verifier log (end):\n{tail}"),
            ))
        }
    }
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info` of `len` bytes.
fn obj_info<T>(fd: &OwnedFd, info: *mut T, len: usize) -> io::Result<()> {
    // SAFETY: as above.
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = len as u32;
    attr.info.info = info as u64;
    bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr).map(drop)
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
