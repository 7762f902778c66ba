//! Loading the programs into the kernel. Where every kfunc the programs call is in vmlinux (or
//! none is usable), aya loads them. Where conntrack is a module (Debian, Ubuntu, RHEL), the
//! calls go into the module's BTF, which needs the module BTF's fd in the program's
//! `fd_array` at the slot the call's `off` names; aya 0.14 cannot pass an `fd_array`. Then the
//! programs are loaded here, with as little of our own as possible: aya creates (and pins) the
//! maps as always, aya-obj relocates a copy of the same object against them, `BPF_PROG_LOAD`
//! runs with the `fd_array`, and the loaded programs are handed back to aya (through a
//! transient pin), which attaches them like any other.

use std::{
    collections::{BTreeMap, HashSet},
    os::fd::{AsFd as _, AsRawFd, RawFd},
    path::Path,
};

use aya::{
    Ebpf,
    maps::Map,
    programs::{Program, SchedClassifier, Xdp},
};
use aya_obj::{generated::bpf_prog_type, programs::XdpAttachType};
use hostgw_common::names;

use super::{DataplaneError, kfunc::Kernel, load_error, program, sys};
use crate::host::bpffs::BPFFS_ROOT;

/// The programs and their types.
const PROGRAMS: [(&str, bpf_prog_type); 3] = [
    (names::PROG_EGRESS, bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS),
    (names::PROG_INGRESS, bpf_prog_type::BPF_PROG_TYPE_SCHED_CLS),
    (names::PROG_XDP, bpf_prog_type::BPF_PROG_TYPE_XDP),
];

/// Loads the programs of `object` (the bytes `ebpf` was loaded from, kfunc calls prepared for
/// `kernel`). Returns the programs loaded outside `ebpf`, by name: none when aya loaded them
/// in place.
pub fn load_programs(
    ebpf: &mut Ebpf,
    object: &[u8],
    kernel: &Kernel,
) -> Result<BTreeMap<&'static str, Program>, DataplaneError> {
    let modules = kernel.modules();
    if !kernel.has_conntrack_lookup() || modules.is_empty() {
        let mut none = BTreeMap::new();
        for name in [names::PROG_EGRESS, names::PROG_INGRESS] {
            let prog: &mut SchedClassifier = program(ebpf, &mut none, name)?;
            prog.load().map_err(|e| load_error(name, e))?;
        }
        let xdp: &mut Xdp = program(ebpf, &mut none, names::PROG_XDP)?;
        xdp.load().map_err(|e| load_error(names::PROG_XDP, e))?;
        return Ok(none);
    }
    tracing::info!(modules = ?modules, "conntrack kfuncs are in module BTF: loading with an fd_array");
    let btfs = modules
        .iter()
        .map(|m| {
            sys::module_btf(m).map_err(|source| DataplaneError::ModuleBtf {
                module: (*m).to_owned(),
                source,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Slot 0 is vmlinux's (a call with `off` 0); the modules follow in `Kernel::modules` order.
    let fd_array: Vec<i32> = std::iter::once(-1)
        .chain(btfs.iter().map(AsRawFd::as_raw_fd))
        .collect();

    let relocate = |e: &dyn std::fmt::Display| DataplaneError::Relocate(e.to_string());
    let mut obj = aya_obj::Object::parse(object).map_err(|e| relocate(&e))?;
    let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    let defs = obj.maps.clone();
    let fds = ebpf
        .maps()
        .map(|(name, map)| map_fd(map).map(|fd| (name.to_owned(), fd)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| DataplaneError::Relocate("a map of an unexpected type".to_owned()))?;
    obj.relocate_maps(
        fds.iter()
            .filter_map(|(name, fd)| defs.get(name).map(|def| (name.as_str(), *fd, def))),
        &text,
    )
    .map_err(|e| relocate(&e))?;
    obj.relocate_calls(&text).map_err(|e| relocate(&e))?;

    let mut out = BTreeMap::new();
    for (name, prog_type) in PROGRAMS {
        let prog = obj
            .programs
            .get(name)
            .ok_or(DataplaneError::MissingProgram(name))?;
        let func = obj
            .functions
            .get(&prog.function_key())
            .ok_or(DataplaneError::MissingProgram(name))?;
        let fd = sys::prog_load(&sys::ProgLoad {
            prog_type: prog_type as u32,
            name,
            insns: &func.instructions,
            license: &prog.license,
            fd_array: &fd_array,
        })
        .map_err(|source| DataplaneError::LoadWithFdArray {
            program: name,
            source,
        })?;
        out.insert(name, hand_to_aya(name, prog_type, &fd)?);
    }
    Ok(out)
}

/// An aya program for the loaded program `fd`, through a transient pin (aya takes programs
/// loaded elsewhere only from a pin).
fn hand_to_aya(
    name: &'static str,
    prog_type: bpf_prog_type,
    fd: &std::os::fd::OwnedFd,
) -> Result<Program, DataplaneError> {
    let pin = Path::new(BPFFS_ROOT).join(format!("hostgw-load-{}-{name}", std::process::id()));
    let pinned = |source| DataplaneError::LoadWithFdArray {
        program: name,
        source,
    };
    sys::obj_pin(fd, &pin).map_err(pinned)?;
    let program = if prog_type == bpf_prog_type::BPF_PROG_TYPE_XDP {
        Xdp::from_pin(&pin, XdpAttachType::Interface).map(Program::Xdp)
    } else {
        SchedClassifier::from_pin(&pin).map(Program::SchedClassifier)
    };
    std::fs::remove_file(&pin).map_err(pinned)?;
    program.map_err(|e| load_error(name, e))
}

/// The descriptor of a map, of the kinds the object has.
fn map_fd(map: &Map) -> Option<RawFd> {
    let (Map::Array(data)
    | Map::HashMap(data)
    | Map::LpmTrie(data)
    | Map::PerCpuArray(data)
    | Map::PerCpuHashMap(data)
    | Map::RingBuf(data)
    | Map::LruHashMap(data)
    | Map::PerfEventArray(data)) = map
    else {
        return None;
    };
    Some(data.fd().as_fd().as_raw_fd())
}
