//! What the running kernel offers the dataplane, read from its BTF without trying anything:
//! tcx links, the conntrack kfuncs and where they live, and managed neighbour entries. The
//! agent logs it at start and `status` shows it; what the agent then attached (tcx or clsact,
//! XDP native or generic) is in `status`'s program list.

use std::path::Path;

use serde::Serialize;

use super::kfunc::{self, VMLINUX_BTF};

/// The kernel's optional features the dataplane uses (the minimum kernel is
/// [`crate::host::release::MINIMUM`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Features {
    /// tcx links for the TC programs (Linux 6.6, `struct tcx_entry`); without them the agent
    /// attaches clsact filters.
    pub tcx: bool,
    /// Where the conntrack gate's kfuncs (`bpf_skb_ct_lookup` …) are.
    pub conntrack_kfuncs: ConntrackKfuncs,
    /// Managed neighbour entries, which the kernel keeps resolved (Linux 5.16,
    /// `neigh_managed_work`); without them the agent asks for a resolution once per node.
    pub managed_neighbours: bool,
}

/// Where the conntrack kfuncs are, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum ConntrackKfuncs {
    /// Built into the kernel.
    Vmlinux,
    /// In these modules' BTF (`nf_conntrack` on Debian, Ubuntu and RHEL).
    Modules(Vec<String>),
    /// `nf_conntrack` is a module and not loaded.
    NotLoaded,
    /// Not in this kernel (older than 6.0, or built without them).
    Missing,
}

impl std::fmt::Display for ConntrackKfuncs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Vmlinux => f.write_str("vmlinux"),
            Self::Modules(m) => write!(f, "module {}", m.join(", ")),
            Self::NotLoaded => f.write_str("nf_conntrack not loaded"),
            Self::Missing => f.write_str("missing"),
        }
    }
}

impl From<ConntrackKfuncs> for String {
    fn from(k: ConntrackKfuncs) -> Self {
        k.to_string()
    }
}

impl ConntrackKfuncs {
    /// From what [`kfunc::read_kernel`] found; `nf_conntrack_loaded` says whether
    /// `/sys/module/nf_conntrack` exists.
    pub fn of(kernel: &kfunc::Kernel, nf_conntrack_loaded: bool) -> Self {
        if kernel.has_conntrack_lookup() {
            let modules = kernel.modules();
            if modules.is_empty() {
                Self::Vmlinux
            } else {
                Self::Modules(modules.into_iter().map(str::to_owned).collect())
            }
        } else if nf_conntrack_loaded {
            Self::Missing
        } else {
            Self::NotLoaded
        }
    }
}

impl Features {
    /// The running kernel's, given what [`kfunc::read_kernel`] found. Without vmlinux BTF
    /// everything reads as missing.
    pub fn probe(kernel: &kfunc::Kernel) -> Self {
        let defined = kfunc::defines(
            Path::new(VMLINUX_BTF),
            &["tcx_entry"],
            &["neigh_managed_work"],
        )
        .unwrap_or_default();
        let has = |i: usize| defined.get(i).copied().unwrap_or(false);
        Self {
            tcx: has(0),
            conntrack_kfuncs: ConntrackKfuncs::of(
                kernel,
                Path::new("/sys/module/nf_conntrack").exists(),
            ),
            managed_neighbours: has(1),
        }
    }

    /// The running kernel's, read from its BTF.
    pub fn read() -> Self {
        Self::probe(&kfunc::read_kernel(Path::new(VMLINUX_BTF)).unwrap_or_default())
    }
}

impl std::fmt::Display for Features {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "tcx {}, conntrack kfuncs {}, managed neighbours {}",
            yes(self.tcx),
            self.conntrack_kfuncs,
            yes(self.managed_neighbours)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_kfuncs_say_where_they_are() {
        let found = kfunc::read_kernel(Path::new(VMLINUX_BTF)).expect("this kernel has BTF");
        let mut module = found.clone();
        for f in hostgw_common::kfunc::ALL {
            module
                .func_modules
                .insert(f.1.to_owned(), "nf_conntrack".to_owned());
        }
        assert_eq!(
            ConntrackKfuncs::of(&module, true).to_string(),
            "module nf_conntrack"
        );
        let none = kfunc::Kernel::default();
        assert_eq!(
            ConntrackKfuncs::of(&none, false),
            ConntrackKfuncs::NotLoaded
        );
        assert_eq!(ConntrackKfuncs::of(&none, true), ConntrackKfuncs::Missing);
        assert_eq!(
            serde_json::to_value(ConntrackKfuncs::NotLoaded).expect("JSON"),
            "nf_conntrack not loaded"
        );
    }

    /// What the BTF says matches the release the features came with.
    #[test]
    fn the_running_kernels_features_match_its_release() {
        let release = crate::host::release::running().expect("osrelease");
        let version = crate::host::release::version(&release).expect("a version");
        let f = Features::read();
        assert_eq!(f.tcx, version >= (6, 6), "{release}: {f}");
        assert_eq!(f.managed_neighbours, version >= (5, 16), "{release}: {f}");
    }
}
