//! The node's kernel outside BPF: interfaces ([`iface`]), routes, neighbours, the bridge's
//! FDB and addresses over rtnetlink ([`netlink`]), forwarding sysctls ([`sysctl`]), netfilter
//! ([`netfilter`]) and conntrack's timeouts ([`conntrack`]), xfrm policies ([`xfrm`]), clsact
//! filters and qdiscs ([`tc`]), the pin directory ([`bpffs`]), network namespaces ([`netns`])
//! and the kernel's release ([`release`]).
//!
//! Each module reads into (or writes from) the plain types of [`crate::model`]; none of them
//! decides anything: that is the reconciler's job.

pub mod bpffs;
pub mod conntrack;
mod dump;
pub mod iface;
pub mod netfilter;
pub mod netlink;
pub mod netns;
pub mod release;
pub mod sysctl;
pub mod tc;
pub mod xfrm;
