//! Loading, attaching, pinning and detaching the eBPF programs.
//!
//! Owns the kernel objects hostgw creates: the maps (pinned as `<pin-dir>/<MAP>`), the program
//! links (pinned as `<pin-dir>/links/<program>@<interface>`) and, on kernels without tcx, the
//! clsact filters. It never touches routes, neighbours or other programs' hooks.
//!
//! Maps are opened from their pins when they exist, so a restarted agent keeps the state the
//! running dataplane forwards with. A pinned link found at attach time is updated in place to
//! the embedded program (`BPF_LINK_UPDATE`): the hook is never empty, and a restart or an
//! upgrade loses no packet.

pub mod kfunc;
pub mod log;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    pin::PinError,
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, LinkError, LinkOrder, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError},
        xdp::XdpLink,
    },
};
use hostgw_common::{Endpoint, RouteV4, RouteV6, names};
use ipnet::IpNet;

use crate::model::{Family, Link, TrieRoute};

/// The eBPF object built by `build.rs`, embedded in the binary.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hostgw"));

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
    /// A file below the pin directory could not be created or removed.
    #[error("{action} {path} failed")]
    PinDir {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How a program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// XDP in the driver.
    XdpNative,
    /// XDP on the generic (skb) path.
    XdpGeneric,
    /// TC through a tcx link.
    Tcx,
    /// TC through a clsact qdisc filter (kernels before 6.6); cannot be pinned.
    Clsact,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::XdpNative => "xdp native",
            Self::XdpGeneric => "xdp generic",
            Self::Tcx => "tcx",
            Self::Clsact => "clsact",
        })
    }
}

/// One attached program.
#[derive(Debug)]
struct Hook {
    link: HookLink,
    /// The interface it is attached to.
    ifindex: u32,
}

#[derive(Debug)]
enum HookLink {
    /// A bpf link, pinned: it outlives the agent.
    Pinned { link: FdLink, path: PathBuf },
    /// A clsact filter: detached when dropped.
    Netlink(SchedClassifierLink),
}

/// The loaded programs and maps, and the hooks they are attached to.
#[derive(Debug)]
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// Keyed by the link's pin name, `<program>@<interface>`.
    hooks: BTreeMap<String, Hook>,
    /// The hooks on bridge ports (as opposed to the bridge and the uplink).
    port_hooks: BTreeSet<String>,
    /// Update adopted links to the embedded programs instead of keeping the running ones.
    replace_programs: bool,
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

        for name in [names::PROG_EGRESS, names::PROG_INGRESS] {
            let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
            prog.load().map_err(|e| load_error(name, e))?;
        }
        let xdp: &mut Xdp = program(&mut ebpf, names::PROG_XDP)?;
        xdp.load().map_err(|e| load_error(names::PROG_XDP, e))?;

        Ok(Self {
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
            hooks: BTreeMap::new(),
            port_hooks: BTreeSet::new(),
            replace_programs: false,
        })
    }

    /// With `true`, links adopted from pins are updated to the embedded programs (one atomic
    /// `BPF_LINK_UPDATE` each); with `false` (the default) the running programs stay.
    pub fn set_replace_programs(&mut self, replace: bool) {
        self.replace_programs = replace;
    }

    /// Writes the node state the programs read (forwarding on or off).
    pub fn set_state(&mut self, state: hostgw_common::State) -> Result<(), DataplaneError> {
        let map = self
            .ebpf
            .map_mut(names::STATE)
            .ok_or(DataplaneError::MissingMap(names::STATE))?;
        let mut array: aya::maps::Array<_, hostgw_common::State> =
            aya::maps::Array::try_from(map).map_err(|e| map_error(names::STATE, e))?;
        array
            .set(0, state, 0)
            .map_err(|e| map_error(names::STATE, e))
    }

    /// The route tries' entries, both families.
    pub fn trie(&self) -> Result<BTreeMap<IpNet, TrieRoute>, DataplaneError> {
        let mut out = BTreeMap::new();
        for family in Family::ALL {
            let name = trie_map(family);
            out.extend(read_trie(self.map(name)?, family).map_err(|e| map_error(name, e))?);
        }
        Ok(out)
    }

    /// Adds or replaces a route trie entry in the trie of `cidr`'s family.
    pub fn put_trie(&mut self, cidr: IpNet, route: TrieRoute) -> Result<(), DataplaneError> {
        let name = trie_map(Family::of_net(cidr));
        let mismatch = || DataplaneError::FamilyMismatch {
            cidr,
            node_ip: route.node_ip,
        };
        match cidr {
            IpNet::V4(c) => {
                let mut trie: aya::maps::LpmTrie<_, [u8; 4], RouteV4> =
                    aya::maps::LpmTrie::try_from(self.map_mut(name)?)
                        .map_err(|e| map_error(name, e))?;
                let key =
                    aya::maps::lpm_trie::Key::new(u32::from(c.prefix_len()), c.network().octets());
                trie.insert(&key, route.to_v4().ok_or_else(mismatch)?, 0)
            }
            IpNet::V6(c) => {
                let mut trie: aya::maps::LpmTrie<_, [u8; 16], RouteV6> =
                    aya::maps::LpmTrie::try_from(self.map_mut(name)?)
                        .map_err(|e| map_error(name, e))?;
                let key =
                    aya::maps::lpm_trie::Key::new(u32::from(c.prefix_len()), c.network().octets());
                trie.insert(&key, route.to_v6().ok_or_else(mismatch)?, 0)
            }
        }
        .map_err(|e| map_error(name, e))
    }

    /// Removes a route trie entry; a missing one is not an error.
    pub fn delete_trie(&mut self, cidr: IpNet) -> Result<(), DataplaneError> {
        let name = trie_map(Family::of_net(cidr));
        let removed = match cidr {
            IpNet::V4(c) => {
                let mut trie: aya::maps::LpmTrie<_, [u8; 4], RouteV4> =
                    aya::maps::LpmTrie::try_from(self.map_mut(name)?)
                        .map_err(|e| map_error(name, e))?;
                trie.remove(&aya::maps::lpm_trie::Key::new(
                    u32::from(c.prefix_len()),
                    c.network().octets(),
                ))
            }
            IpNet::V6(c) => {
                let mut trie: aya::maps::LpmTrie<_, [u8; 16], RouteV6> =
                    aya::maps::LpmTrie::try_from(self.map_mut(name)?)
                        .map_err(|e| map_error(name, e))?;
                trie.remove(&aya::maps::lpm_trie::Key::new(
                    u32::from(c.prefix_len()),
                    c.network().octets(),
                ))
            }
        };
        match removed {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other.map_err(|e| map_error(name, e)),
        }
    }

    /// The endpoint tables' entries, both families.
    pub fn endpoints(&self) -> Result<BTreeMap<IpAddr, Endpoint>, DataplaneError> {
        let mut out = BTreeMap::new();
        for family in Family::ALL {
            let name = endpoint_map(family);
            out.extend(read_endpoints(self.map(name)?, family).map_err(|e| map_error(name, e))?);
        }
        Ok(out)
    }

    /// Adds or replaces an endpoint in the table of `ip`'s family.
    pub fn put_endpoint(&mut self, ip: IpAddr, ep: Endpoint) -> Result<(), DataplaneError> {
        let name = endpoint_map(Family::of(ip));
        match ip {
            IpAddr::V4(a) => {
                aya::maps::HashMap::<_, [u8; 4], Endpoint>::try_from(self.map_mut(name)?)
                    .and_then(|mut m| m.insert(a.octets(), ep, 0))
            }
            IpAddr::V6(a) => {
                aya::maps::HashMap::<_, [u8; 16], Endpoint>::try_from(self.map_mut(name)?)
                    .and_then(|mut m| m.insert(a.octets(), ep, 0))
            }
        }
        .map_err(|e| map_error(name, e))
    }

    /// Removes an endpoint; a missing one is not an error.
    pub fn delete_endpoint(&mut self, ip: IpAddr) -> Result<(), DataplaneError> {
        let name = endpoint_map(Family::of(ip));
        let removed = match ip {
            IpAddr::V4(a) => {
                aya::maps::HashMap::<_, [u8; 4], Endpoint>::try_from(self.map_mut(name)?)
                    .and_then(|mut m| m.remove(&a.octets()))
            }
            IpAddr::V6(a) => {
                aya::maps::HashMap::<_, [u8; 16], Endpoint>::try_from(self.map_mut(name)?)
                    .and_then(|mut m| m.remove(&a.octets()))
            }
        };
        match removed {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other.map_err(|e| map_error(name, e)),
        }
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DataplaneError> {
        self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }

    /// Keeps the egress program on exactly the bridge's current ports: attaches it to new
    /// ones and releases the hooks (and pins) of ports that are gone. Returns the names of the
    /// ports newly attached; a port that cannot be attached is logged and left for the next
    /// call.
    pub fn sync_ports(&mut self, ports: &[Link]) -> Result<Vec<String>, DataplaneError> {
        let prefix = format!("{}@", names::PROG_EGRESS);
        let want: BTreeSet<String> = ports
            .iter()
            .map(|p| format!("{prefix}{}", p.name))
            .collect();
        let mut attached = Vec::new();
        for port in ports {
            let key = format!("{prefix}{}", port.name);
            match self.hooks.get(&key) {
                Some(h) if h.ifindex == port.index => continue,
                // The name now belongs to another interface: the old link is defunct.
                Some(_) => self.release(&key)?,
                None => {}
            }
            // A port can vanish between the listing and the attach (a pod going away): that
            // port is skipped, the others are attached, and the next round tries again.
            if let Err(error) = self.attach_tc(names::PROG_EGRESS, port) {
                tracing::warn!(port = port.name, %error, "egress program not attached; retried next round");
                continue;
            }
            self.port_hooks.insert(key);
            attached.push(port.name.clone());
        }
        let gone: Vec<String> = self
            .hooks
            .keys()
            .filter(|k| k.starts_with(&prefix) && !want.contains(*k))
            .filter(|k| self.port_hooks.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.release(&key)?;
        }
        // Pins of ports that went away while no agent ran.
        let dir = self.pin_dir.join(LINKS_DIR);
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix)
                    && !want.contains(&name)
                    && !self.hooks.contains_key(&name)
                {
                    remove_file_if_exists(&e.path()).map_err(|source| DataplaneError::PinDir {
                        action: "removing",
                        path: e.path(),
                        source,
                    })?;
                    tracing::info!(pin = name, "removed the pin of a port that is gone");
                }
            }
        }
        Ok(attached)
    }

    /// Detaches one hook and removes its pin.
    fn release(&mut self, key: &str) -> Result<(), DataplaneError> {
        let Some(hook) = self.hooks.remove(key) else {
            return Ok(());
        };
        self.port_hooks.remove(key);
        if let HookLink::Pinned { link, path } = hook.link {
            remove_file_if_exists(&path).map_err(|source| DataplaneError::PinDir {
                action: "removing",
                path,
                source,
            })?;
            drop(link);
        }
        tracing::info!(hook = key, "released: the port is gone");
        Ok(())
    }

    /// The id of the program behind the hook `key` (`<program>@<interface>`).
    pub fn program_id(&self, key: &str) -> Option<u32> {
        match &self.hooks.get(key)?.link {
            HookLink::Pinned { link, .. } => link.info().ok().map(|i| i.program_id()),
            HookLink::Netlink(_) => None,
        }
    }

    fn link_pin(&self, key: &str) -> PathBuf {
        self.pin_dir.join(LINKS_DIR).join(key)
    }

    /// Opens the link pinned as `key`, if there is one that is still attached to `iface`. A
    /// pin whose link lost its interface (the interface was deleted, maybe recreated under
    /// the same name) is removed, which releases the link.
    fn live_pin(&self, key: &str, iface: &Link) -> Result<Option<PinnedLink>, DataplaneError> {
        let path = self.link_pin(key);
        let Some(pinned) = open_pinned(&path)? else {
            return Ok(None);
        };
        match pinned_link_ifindex(&path) {
            Ok(ifindex) if ifindex == iface.index => Ok(Some(pinned)),
            found => {
                tracing::info!(pin = %path.display(), ?found, want = iface.index, "removing a pin whose link is not on the interface");
                drop(pinned);
                remove_file_if_exists(&path).map_err(|source| DataplaneError::PinDir {
                    action: "removing",
                    path,
                    source,
                })?;
                Ok(None)
            }
        }
    }

    /// Attaches the XDP program to `iface`: native mode, else generic. A link an earlier run
    /// pinned is adopted (and with `replace_programs`, updated to this program).
    pub fn attach_xdp(&mut self, iface: &Link) -> Result<AttachMode, DataplaneError> {
        let name = names::PROG_XDP;
        let key = format!("{name}@{}", iface.name);
        let path = self.link_pin(&key);
        let replace = self.replace_programs;
        let pinned = self.live_pin(&key, iface)?;
        let prog: &mut Xdp = program(&mut self.ebpf, name)?;

        if let Some(pinned) = pinned {
            let link = if replace {
                let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| adopt(&path, e))?;
                let id = prog.attach_to_link(link).map_err(|e| adopt(&path, e))?;
                FdLink::try_from(prog.take_link(id).map_err(|e| adopt(&path, e))?)
                    .map_err(|e| adopt(&path, e))?
            } else {
                FdLink::from(pinned)
            };
            // The mode is the one the earlier run chose; the kernel keeps it across updates.
            let mode = AttachMode::XdpNative;
            tracing::info!(hook = key, replaced = replace, "adopted the pinned link");
            self.insert(key, HookLink::Pinned { link, path }, iface);
            return Ok(mode);
        }

        let (id, mode) = match prog.attach(&iface.name, XdpMode::Driver) {
            Ok(id) => (id, AttachMode::XdpNative),
            Err(native) => {
                tracing::warn!(iface = iface.name, error = %native, "native XDP failed, using generic XDP");
                let id = prog
                    .attach(&iface.name, XdpMode::Skb)
                    .map_err(|e| attach_error(name, iface, e))?;
                (id, AttachMode::XdpGeneric)
            }
        };
        let link = prog
            .take_link(id)
            .map_err(|e| attach_error(name, iface, e))?;
        let link = FdLink::try_from(link).map_err(|e| adopt(&path, e))?;
        self.insert_pinned(key, mode, link, path, iface)?;
        Ok(mode)
    }

    /// Removes the XDP link an earlier run pinned on `iface`, if any, which detaches it (for
    /// an agent now configured without XDP).
    pub fn forget_xdp(&mut self, iface: &Link) -> Result<(), DataplaneError> {
        let path = self.link_pin(&format!("{}@{}", names::PROG_XDP, iface.name));
        if path.exists() {
            remove_file_if_exists(&path).map_err(|source| DataplaneError::PinDir {
                action: "removing",
                path: path.clone(),
                source,
            })?;
            tracing::info!(pin = %path.display(), "XDP link of an earlier run removed");
        }
        Ok(())
    }

    /// Attaches the TC program `name` to the ingress of `iface`: a tcx link, else a clsact
    /// filter. A link an earlier run pinned is adopted (and with `replace_programs`, updated
    /// to this program).
    pub fn attach_tc(
        &mut self,
        name: &'static str,
        iface: &Link,
    ) -> Result<AttachMode, DataplaneError> {
        let key = format!("{name}@{}", iface.name);
        let path = self.link_pin(&key);
        let replace = self.replace_programs;
        let pinned = self.live_pin(&key, iface)?;
        let prog: &mut SchedClassifier = program(&mut self.ebpf, name)?;

        if let Some(pinned) = pinned {
            let link = if replace {
                let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                    .map_err(|e| adopt(&path, e))?;
                let id = prog.attach_to_link(link).map_err(|e| adopt(&path, e))?;
                FdLink::try_from(prog.take_link(id).map_err(|e| adopt(&path, e))?)
                    .map_err(|e| adopt(&path, e))?
            } else {
                FdLink::from(pinned)
            };
            tracing::info!(hook = key, replaced = replace, "adopted the pinned link");
            self.insert(key, HookLink::Pinned { link, path }, iface);
            return Ok(AttachMode::Tcx);
        }

        let tcx = prog.attach_with_options(
            &iface.name,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        );
        match tcx {
            Ok(id) => {
                let link = prog
                    .take_link(id)
                    .map_err(|e| attach_error(name, iface, e))?;
                let link = FdLink::try_from(link).map_err(|e| adopt(&path, e))?;
                self.insert_pinned(key, AttachMode::Tcx, link, path, iface)?;
                Ok(AttachMode::Tcx)
            }
            Err(tcx_error) => {
                tracing::warn!(iface = iface.name, error = %tcx_error, "tcx attach failed, using a clsact filter");
                match tc::qdisc_add_clsact(&iface.name) {
                    Ok(()) | Err(TcError::AlreadyAttached) => {}
                    Err(e) => return Err(attach_error(name, iface, ProgramError::from(e))),
                }
                let id = prog
                    .attach_with_options(
                        &iface.name,
                        TcAttachType::Ingress,
                        TcAttachOptions::Netlink(NlOptions::default()),
                    )
                    .map_err(|e| attach_error(name, iface, e))?;
                let link = prog
                    .take_link(id)
                    .map_err(|e| attach_error(name, iface, e))?;
                self.insert(key, HookLink::Netlink(link), iface);
                Ok(AttachMode::Clsact)
            }
        }
    }

    fn insert(&mut self, key: String, link: HookLink, iface: &Link) {
        self.hooks.insert(
            key,
            Hook {
                link,
                ifindex: iface.index,
            },
        );
    }

    fn insert_pinned(
        &mut self,
        key: String,
        mode: AttachMode,
        link: FdLink,
        path: PathBuf,
        iface: &Link,
    ) -> Result<(), DataplaneError> {
        let pinned = link.pin(&path).map_err(|e| DataplaneError::Pin {
            path: path.clone(),
            source: Box::new(e),
        })?;
        tracing::info!(hook = key, %mode, pin = %path.display(), "attached");
        let link = HookLink::Pinned {
            link: pinned.into(),
            path,
        };
        self.insert(key, link, iface);
        Ok(())
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
        for dir in [pin_dir.join(LINKS_DIR), pin_dir.clone()] {
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

/// The route trie map of `family`.
pub fn trie_map(family: Family) -> &'static str {
    match family {
        Family::V4 => names::ROUTES_V4,
        Family::V6 => names::ROUTES_V6,
    }
}

/// The endpoint map of `family`.
pub fn endpoint_map(family: Family) -> &'static str {
    match family {
        Family::V4 => names::ENDPOINTS_V4,
        Family::V6 => names::ENDPOINTS_V6,
    }
}

/// The entries of a route trie map of `family` (as loaded, or opened from its pin). A key
/// whose prefix is longer than the address cannot be inserted, so is never found.
pub fn read_trie(
    map: &aya::maps::Map,
    family: Family,
) -> Result<Vec<(IpNet, TrieRoute)>, aya::maps::MapError> {
    let mut out = Vec::new();
    match family {
        Family::V4 => {
            let trie: aya::maps::LpmTrie<_, [u8; 4], RouteV4> = aya::maps::LpmTrie::try_from(map)?;
            for entry in &trie {
                let (key, route) = entry?;
                if let Ok(net) = IpNet::new(IpAddr::from(key.data()), key.prefix_len() as u8) {
                    out.push((net, route.into()));
                }
            }
        }
        Family::V6 => {
            let trie: aya::maps::LpmTrie<_, [u8; 16], RouteV6> = aya::maps::LpmTrie::try_from(map)?;
            for entry in &trie {
                let (key, route) = entry?;
                if let Ok(net) = IpNet::new(IpAddr::from(key.data()), key.prefix_len() as u8) {
                    out.push((net, route.into()));
                }
            }
        }
    }
    Ok(out)
}

/// The entries of an endpoint map of `family` (as loaded, or opened from its pin).
pub fn read_endpoints(
    map: &aya::maps::Map,
    family: Family,
) -> Result<Vec<(IpAddr, Endpoint)>, aya::maps::MapError> {
    match family {
        Family::V4 => aya::maps::HashMap::<_, [u8; 4], Endpoint>::try_from(map)?
            .iter()
            .map(|e| e.map(|(k, v)| (IpAddr::from(k), v)))
            .collect(),
        Family::V6 => aya::maps::HashMap::<_, [u8; 16], Endpoint>::try_from(map)?
            .iter()
            .map(|e| e.map(|(k, v)| (IpAddr::from(k), v)))
            .collect(),
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DataplaneError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
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

/// Opens the link pinned at `path`, if there is one.
fn open_pinned(path: &Path) -> Result<Option<PinnedLink>, DataplaneError> {
    if !path.exists() {
        return Ok(None);
    }
    PinnedLink::from_pin(path)
        .map(Some)
        .map_err(|e: LinkError| adopt(path, e))
}

/// The ifindex a pinned XDP or tcx link is attached to; 0 once its interface is gone.
fn pinned_link_ifindex(path: &Path) -> io::Result<u32> {
    use std::{
        ffi::CString,
        os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _},
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // union bpf_attr for BPF_OBJ_GET: pathname, bpf_fd, file_flags.
    let mut attr = [0u64; 16];
    attr[0] = c.as_ptr() as u64;
    // SAFETY: `attr` is a zeroed bpf_attr large enough for the command, pointing at a valid
    // NUL-terminated path that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            attr.as_mut_ptr(),
            size_of_val(&attr),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then the union (8-aligned) whose xdp and tcx
    // members start with the ifindex.
    let mut info = [0u32; 32];
    let mut attr = [0u64; 16];
    attr[0] = u64::from(std::os::fd::AsRawFd::as_raw_fd(&fd) as u32)
        | ((size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: `attr` describes `info`, a writable buffer of the length given.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            size_of_val(&attr),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info[4])
}

fn remove_file_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
