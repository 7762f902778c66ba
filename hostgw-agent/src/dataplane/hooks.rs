//! Attaching the programs to interfaces and adopting links an earlier run pinned: XDP native
//! then generic, TC through tcx then a clsact filter, the egress program on each bridge port.
//! Every hook is keyed by its pin name, `<program>@<interface>`.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use aya::programs::{
    ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode,
    links::{FdLink, LinkError, LinkOrder, PinnedLink},
    tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcError, TcHandle},
    xdp::XdpLink,
};
use hostgw_common::names;

use super::{
    Dataplane, DataplaneError, LINKS_DIR, adopt, attach_error, program, qdisc_marker,
    release_qdisc, remove_file_if_exists, sys::pinned_link_ifindex,
};
use crate::{host::tc as host_tc, model::Link};

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
pub(super) struct Hook {
    pub(super) link: HookLink,
    /// The interface it is attached to.
    pub(super) ifindex: u32,
}

#[derive(Debug)]
pub(super) enum HookLink {
    /// A bpf link, pinned: it outlives the agent.
    Pinned { link: FdLink, path: PathBuf },
    /// A clsact filter: detached when dropped.
    Netlink(SchedClassifierLink),
}

impl Dataplane {
    /// The egress hooks on bridge ports: port name → the ifindex the hook is on. The pin of a
    /// port hook that no hook of this dataplane holds (a port that went away while no agent
    /// ran) is listed with ifindex 0.
    pub fn port_hooks(&self) -> BTreeMap<String, u32> {
        let prefix = format!("{}@", names::PROG_EGRESS);
        let mut out: BTreeMap<String, u32> = self
            .port_hooks
            .iter()
            .filter_map(|key| {
                let hook = self.hooks.get(key)?;
                Some((key.strip_prefix(&prefix)?.to_owned(), hook.ifindex))
            })
            .collect();
        if let Ok(entries) = fs::read_dir(self.pin_dir.join(LINKS_DIR)) {
            for e in entries.filter_map(Result::ok) {
                let key = e.file_name().to_string_lossy().into_owned();
                if let Some(port) = key.strip_prefix(&prefix)
                    && !self.hooks.contains_key(&key)
                {
                    out.entry(port.to_owned()).or_insert(0);
                }
            }
        }
        out
    }

    /// Attaches the egress program to the bridge port `name` (ifindex `ifindex`), releasing a
    /// hook that name has on another interface first (the old link is defunct).
    pub fn attach_port(&mut self, name: &str, ifindex: u32) -> Result<(), DataplaneError> {
        let key = format!("{}@{name}", names::PROG_EGRESS);
        if self.hooks.get(&key).is_some_and(|h| h.ifindex != ifindex) {
            self.release(&key)?;
        }
        let port = Link {
            index: ifindex,
            name: name.to_owned(),
            ..Link::default()
        };
        self.attach_tc(names::PROG_EGRESS, &port)?;
        self.port_hooks.insert(key);
        Ok(())
    }

    /// Releases the egress hook of the bridge port `name` and removes its pin (also a pin
    /// left by an earlier run).
    pub fn detach_port(&mut self, name: &str) -> Result<(), DataplaneError> {
        let key = format!("{}@{name}", names::PROG_EGRESS);
        if self.hooks.contains_key(&key) {
            return self.release(&key);
        }
        let path = self.link_pin(&key);
        remove_file_if_exists(&path).map_err(|source| DataplaneError::PinDir {
            action: "removing",
            path,
            source,
        })
    }

    /// Detaches one hook and removes its pin.
    fn release(&mut self, key: &str) -> Result<(), DataplaneError> {
        let Some(hook) = self.hooks.remove(key) else {
            return Ok(());
        };
        self.port_hooks.remove(key);
        match hook.link {
            HookLink::Pinned { link, path } => {
                remove_file_if_exists(&path).map_err(|source| DataplaneError::PinDir {
                    action: "removing",
                    path,
                    source,
                })?;
                drop(link);
                Ok(())
            }
            HookLink::Netlink(link) => {
                drop(link);
                let iface = key.split_once('@').map_or(key, |(_, i)| i);
                release_qdisc(&self.pin_dir, iface)
            }
        }
    }

    /// The id of the program behind the hook `key` (`<program>@<interface>`).
    pub fn program_id(&self, key: &str) -> Option<u32> {
        match &self.hooks.get(key)?.link {
            HookLink::Pinned { link, .. } => link.info().ok().map(|i| i.program_id()),
            HookLink::Netlink(_) => {
                let name = key.split('@').next()?;
                let prog = self
                    .programs
                    .get(name)
                    .or_else(|| self.ebpf.program(name))?;
                prog.info().ok().map(|i| i.id())
            }
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
        let prog: &mut Xdp = program(&mut self.ebpf, &mut self.programs, name)?;

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

    /// Attaches the TC program `name` to the ingress of `iface`: a tcx link, else (or with
    /// `--tc-attach clsact`) a clsact filter. A link an earlier run pinned, or a filter it left,
    /// is adopted (and with `replace_programs`, updated to this program).
    pub fn attach_tc(
        &mut self,
        name: &'static str,
        iface: &Link,
    ) -> Result<AttachMode, DataplaneError> {
        if !self.tc.tcx {
            return self.attach_clsact(name, iface);
        }
        let key = format!("{name}@{}", iface.name);
        let path = self.link_pin(&key);
        let replace = self.replace_programs;
        let pinned = self.live_pin(&key, iface)?;
        let prog: &mut SchedClassifier = program(&mut self.ebpf, &mut self.programs, name)?;

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
            Err(tcx_error) if self.tc.clsact => {
                tracing::warn!(iface = iface.name, error = %tcx_error, "tcx attach failed, using a clsact filter");
                self.attach_clsact(name, iface)
            }
            Err(tcx_error) => Err(attach_error(name, iface, tcx_error)),
        }
    }

    /// Attaches the TC program `name` as a clsact filter at hostgw's priority and handle on the
    /// ingress of `iface`, adding the qdisc if there is none (and remembering that it did, so
    /// that detaching removes it). Our filter from an earlier run is adopted in place (with
    /// `replace_programs`, its program replaced atomically); filters of hostgw's programs at
    /// other places (older builds) are removed, so each hook has exactly one.
    fn attach_clsact(
        &mut self,
        name: &'static str,
        iface: &Link,
    ) -> Result<AttachMode, DataplaneError> {
        let key = format!("{name}@{}", iface.name);
        let tc_error = |e: std::io::Error| attach_error(name, iface, ProgramError::from(e));
        match tc::qdisc_add_clsact(&iface.name) {
            Ok(()) => {
                let marker = qdisc_marker(&self.pin_dir, &iface.name);
                fs::create_dir_all(&marker).map_err(|source| DataplaneError::PinDir {
                    action: "creating",
                    path: marker,
                    source,
                })?;
                tracing::info!(iface = iface.name, "added a clsact qdisc");
            }
            // A clsact qdisc is there already (ours from an earlier run, or anyone's).
            Err(TcError::AlreadyAttached) => {}
            Err(TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(attach_error(name, iface, ProgramError::from(e))),
        }
        let filters = host_tc::bpf_filters(iface.index, false).map_err(tc_error)?;
        let mut found = false;
        for f in &filters {
            if f.is_at_ours() {
                if f.name != name {
                    return Err(DataplaneError::ClsactTaken {
                        iface: iface.name.clone(),
                        name: f.name.clone(),
                    });
                }
                found = true;
            } else if f.name.starts_with("hostgw_") {
                host_tc::delete_filter(iface.index, f.priority, f.handle).map_err(tc_error)?;
                tracing::info!(
                    iface = iface.name,
                    filter = f.name,
                    pref = f.priority,
                    handle = f.handle,
                    "removed a filter of an earlier hostgw build"
                );
            }
        }
        let replace = self.replace_programs;
        let prog: &mut SchedClassifier = program(&mut self.ebpf, &mut self.programs, name)?;
        let link = if found {
            let link = SchedClassifierLink::attached(
                &iface.name,
                TcAttachType::Ingress,
                host_tc::PRIORITY,
                TcHandle::from(host_tc::HANDLE),
                None,
            )
            .map_err(tc_error)?;
            let link = if replace {
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| attach_error(name, iface, e))?;
                prog.take_link(id)
                    .map_err(|e| attach_error(name, iface, e))?
            } else {
                link
            };
            tracing::info!(hook = key, replaced = replace, "adopted the clsact filter");
            link
        } else {
            let id = prog
                .attach_with_options(
                    &iface.name,
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions {
                        priority: host_tc::PRIORITY,
                        handle: TcHandle::from(host_tc::HANDLE),
                        classid: None,
                    }),
                )
                .map_err(|e| attach_error(name, iface, e))?;
            tracing::info!(hook = key, mode = %AttachMode::Clsact, "attached");
            prog.take_link(id)
                .map_err(|e| attach_error(name, iface, e))?
        };
        self.insert(key, HookLink::Netlink(link), iface);
        Ok(AttachMode::Clsact)
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
