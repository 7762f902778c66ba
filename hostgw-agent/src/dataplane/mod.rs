//! Loading, attaching, pinning and detaching the eBPF programs.
//!
//! Owns the kernel objects hostgw creates: the maps (pinned as `<pin-dir>/<MAP>`), the program
//! links (pinned as `<pin-dir>/links/<program>@<interface>`) and, on kernels without tcx (or
//! with `--tc-attach clsact`), the clsact filters at hostgw's priority and handle, and the
//! clsact qdiscs it added. It never touches routes, neighbours or other programs' hooks.
//!
//! Maps are opened from their pins when they exist, so a restarted agent keeps the state the
//! running dataplane forwards with. A pinned link, or a filter of ours, found at attach time is
//! adopted: the running program stays, or with `--replace-programs` is replaced in place
//! (`BPF_LINK_UPDATE`, or a filter change at the same priority and handle). The hook is never
//! empty, and a restart or an upgrade loses no packet.
//!
//! - this module: loading, the [`Dataplane`] handle, detaching or keeping everything at exit;
//! - `hooks`: attaching to interfaces, adopting and releasing pinned links;
//! - [`maps`]: typed access to the trie, endpoint and state maps (shared with the inspection
//!   commands, which open the same maps from their pins);
//! - [`sys`]: the few raw `bpf(2)` calls aya does not offer;
//! - [`kfunc`]: preparing the object's conntrack kfunc calls for the running kernel;
//! - [`features`]: what the running kernel offers (tcx, the kfuncs, managed neighbours);
//! - [`log`]: the programs' log records, bridged into tracing.

pub mod features;
mod hooks;
pub mod kfunc;
pub mod load;
pub mod log;
pub mod maps;
pub mod sys;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    pin::PinError,
    programs::{Program, ProgramError},
};
use hostgw_common::names;
use ipnet::IpNet;

use self::hooks::{Hook, HookLink};
use crate::model::Link;

/// The eBPF object built by `build.rs`, embedded in the binary.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hostgw"));

/// Subdirectory of the pin directory that marks (one empty directory per interface) the
/// clsact qdiscs the agent added, so that detaching removes them again. bpffs holds no files.
const QDISCS_DIR: &str = "qdiscs";

/// Subdirectory of the pin directory that holds the program links.
const LINKS_DIR: &str = "links";

/// Why a dataplane operation failed. Each variant names the program, interface or path.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The eBPF object did not load (verifier, BTF, map creation or pin reuse).
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<aya::EbpfError>),
    /// The embedded object could not be prepared for this kernel.
    #[error("preparing the eBPF object for this kernel failed")]
    Object(#[source] Box<kfunc::KfuncError>),
    /// The object lacks a program the agent expects: the binary and object disagree.
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    /// A route trie entry whose next hop is of the other family than its CIDR.
    #[error("route trie entry {cidr} has a next hop of the other family ({node_ip})")]
    FamilyMismatch { cidr: IpNet, node_ip: IpAddr },
    /// The object lacks a map the agent expects: the binary and object disagree.
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    /// Reading or writing a map failed.
    #[error("updating map {map} failed")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The verifier rejected a program, or the kernel refused to load it.
    #[error("loading program {program} failed")]
    LoadProgram {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    /// Attaching a program to an interface failed in every mode tried.
    #[error("attaching {program} to {iface} failed")]
    Attach {
        program: &'static str,
        iface: String,
        #[source]
        source: Box<ProgramError>,
    },
    /// A pinned link exists but is not a link of the expected kind, or cannot be updated.
    #[error("the pinned link {path} cannot be adopted")]
    Adopt {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Pinning a link failed.
    #[error("pinning {path} failed")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<PinError>,
    },
    /// Another program's clsact filter sits at hostgw's priority and handle.
    #[error(
        "the clsact filter at hostgw's priority and handle on {iface} is {name:?}, not hostgw's: \
         remove it (tc filter del dev {iface} ingress pref 18503 handle 0x4847 bpf)"
    )]
    ClsactTaken { iface: String, name: String },
    /// A clsact qdisc the agent added could not be removed.
    #[error("removing the clsact qdisc of {iface} failed")]
    Qdisc {
        iface: String,
        #[source]
        source: io::Error,
    },
    /// The BTF of a module that defines kfuncs the programs call could not be opened.
    #[error("cannot open the BTF of the kernel module {module}")]
    ModuleBtf {
        module: String,
        #[source]
        source: io::Error,
    },
    /// The object could not be relocated for loading with an `fd_array`.
    #[error("relocating the eBPF object failed: {0}")]
    Relocate(String),
    /// `BPF_PROG_LOAD` with an `fd_array` failed (the error carries the verifier's log).
    #[error("loading program {program} with its module kfuncs failed")]
    LoadWithFdArray {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    /// A file below the pin directory could not be created or removed.
    #[error("{action} {path} failed")]
    PinDir {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The loaded programs and maps, and the hooks they are attached to.
#[derive(Debug)]
pub struct Dataplane {
    ebpf: Ebpf,
    /// Programs loaded outside `ebpf` (kfunc calls into module BTF), by name.
    programs: BTreeMap<&'static str, Program>,
    pin_dir: PathBuf,
    /// Keyed by the link's pin name, `<program>@<interface>`.
    hooks: BTreeMap<String, Hook>,
    /// The hooks on bridge ports (as opposed to the bridge and the uplink).
    port_hooks: BTreeSet<String>,
    /// Update adopted links to the embedded programs instead of keeping the running ones.
    replace_programs: bool,
    /// How TC programs may be attached.
    tc: TcPolicy,
}

/// How TC programs may be attached (`--tc-attach`): tcx links, clsact filters, or tcx first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcPolicy {
    pub tcx: bool,
    pub clsact: bool,
}

impl Dataplane {
    /// Loads the embedded object (its kfunc calls prepared for `kernel`) with `config` as its
    /// read-only configuration, reusing maps pinned in `pin_dir` and pinning new ones there.
    /// `pin_dir` must exist on a bpffs.
    pub fn load(
        pin_dir: &Path,
        config: &hostgw_common::Config,
        kernel: &kfunc::Kernel,
    ) -> Result<Self, DataplaneError> {
        let object = kfunc::PatchedObject::new(EBPF_OBJECT, kernel)
            .map_err(|e| DataplaneError::Object(Box::new(e)))?;
        let links = pin_dir.join(LINKS_DIR);
        fs::create_dir_all(&links).map_err(|source| DataplaneError::PinDir {
            action: "creating",
            path: links,
            source,
        })?;
        let map_pins: Vec<(&str, PathBuf)> = names::PINNED_MAPS
            .iter()
            .map(|name| (*name, pin_dir.join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        loader.override_global(names::CONFIG, config, true);
        for (name, path) in &map_pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(object.bytes())
            .map_err(|e| DataplaneError::Load(Box::new(e)))?;

        let programs = load::load_programs(&mut ebpf, object.bytes(), kernel)?;

        Ok(Self {
            ebpf,
            programs,
            pin_dir: pin_dir.to_path_buf(),
            hooks: BTreeMap::new(),
            port_hooks: BTreeSet::new(),
            replace_programs: false,
            tc: TcPolicy {
                tcx: true,
                clsact: true,
            },
        })
    }

    /// With `true`, links adopted from pins are updated to the embedded programs (one atomic
    /// `BPF_LINK_UPDATE` each); with `false` (the default) the running programs stay.
    pub fn set_replace_programs(&mut self, replace: bool) {
        self.replace_programs = replace;
    }

    /// How TC programs may be attached; by default a tcx link, else a clsact filter.
    pub fn set_tc_policy(&mut self, tc: TcPolicy) {
        self.tc = tc;
    }

    /// Detaches every hook and removes every pin this dataplane owns, then the pin directory
    /// itself when nothing else is left in it. Keeps going after an error and reports the
    /// first one.
    pub fn detach(self) -> Result<(), DataplaneError> {
        let Self {
            ebpf,
            pin_dir,
            hooks,
            ..
        } = self;
        let mut first_error = None;
        let mut record = |e: DataplaneError| {
            tracing::error!(error = %e, "detach");
            first_error.get_or_insert(e);
        };
        for (key, hook) in hooks {
            match hook.link {
                HookLink::Pinned { link, path } => {
                    if let Err(source) = remove_file_if_exists(&path) {
                        record(DataplaneError::PinDir {
                            action: "removing",
                            path,
                            source,
                        });
                    }
                    // Dropping the last reference to the link detaches the program.
                    drop(link);
                }
                HookLink::Netlink(link) => drop(link),
            }
            tracing::info!(hook = key, "detached");
        }
        // The clsact qdiscs the agent added go once nothing is left on them.
        if let Ok(entries) = fs::read_dir(pin_dir.join(QDISCS_DIR)) {
            for e in entries.filter_map(Result::ok) {
                if let Err(e) = release_qdisc(&pin_dir, &e.file_name().to_string_lossy()) {
                    record(e);
                }
            }
        }
        for name in names::PINNED_MAPS {
            let path = pin_dir.join(name);
            if let Err(source) = remove_file_if_exists(&path) {
                record(DataplaneError::PinDir {
                    action: "removing",
                    path,
                    source,
                });
            }
        }
        drop(ebpf);
        for dir in [
            pin_dir.join(LINKS_DIR),
            pin_dir.join(QDISCS_DIR),
            pin_dir.clone(),
        ] {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                    tracing::warn!(dir = %dir.display(), "left in place: it holds pins hostgw did not create");
                }
                Err(source) => record(DataplaneError::PinDir {
                    action: "removing",
                    path: dir,
                    source,
                }),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Leaves every hook attached and every pin in place, for a restarted agent to adopt.
    pub fn keep(self) {
        for (key, hook) in self.hooks {
            match hook.link {
                // The pin keeps the link alive; closing our descriptor changes nothing.
                HookLink::Pinned { link, .. } => drop(link),
                // A clsact filter is removed when its link is dropped: forget it instead.
                HookLink::Netlink(link) => std::mem::forget(link),
            }
            tracing::info!(hook = key, "left attached");
        }
    }
}

/// The program `name`: from `programs` (loaded outside aya's object) when it is there, else
/// from `ebpf`.
fn program<'a, T>(
    ebpf: &'a mut Ebpf,
    programs: &'a mut BTreeMap<&'static str, Program>,
    name: &'static str,
) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut Program>,
{
    match programs.get_mut(name) {
        Some(p) => Some(p),
        None => ebpf.program_mut(name),
    }
    .and_then(|p| p.try_into().ok())
    .ok_or(DataplaneError::MissingProgram(name))
}

fn map_error(map: &'static str, e: aya::maps::MapError) -> DataplaneError {
    DataplaneError::Map {
        map,
        source: Box::new(e),
    }
}

fn load_error(program: &'static str, e: ProgramError) -> DataplaneError {
    DataplaneError::LoadProgram {
        program,
        source: Box::new(e),
    }
}

fn attach_error(program: &'static str, iface: &Link, e: ProgramError) -> DataplaneError {
    DataplaneError::Attach {
        program,
        iface: iface.name.clone(),
        source: Box::new(e),
    }
}

fn adopt(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> DataplaneError {
    DataplaneError::Adopt {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the clsact qdisc the agent added to `iface` (the marker says it did) if no filter
/// is left on it, and the marker. An interface that is gone took its qdisc with it.
fn release_qdisc(pin_dir: &Path, iface: &str) -> Result<(), DataplaneError> {
    let marker = qdisc_marker(pin_dir, iface);
    if !marker.exists() {
        return Ok(());
    }
    let qdisc_error = |source| DataplaneError::Qdisc {
        iface: iface.to_owned(),
        source,
    };
    if let Some(ifindex) = ifindex_of(iface) {
        if crate::host::tc::filter_count(ifindex).map_err(qdisc_error)? == 0 {
            crate::host::tc::delete_clsact(ifindex).map_err(qdisc_error)?;
            tracing::info!(iface, "removed the clsact qdisc the agent added");
        } else {
            tracing::info!(
                iface,
                "left the clsact qdisc the agent added: it holds other filters"
            );
        }
    }
    fs::remove_dir(&marker).map_err(|source| DataplaneError::PinDir {
        action: "removing",
        path: marker,
        source,
    })
}

/// The marker that says the agent added the clsact qdisc of `iface`.
fn qdisc_marker(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(QDISCS_DIR).join(iface)
}

/// The ifindex of the interface called `name`, if there is one.
fn ifindex_of(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}
