//! hostgw-agent: keeps a node's host-gw dataplane in the kernel.
//!
//! # Layout
//!
//! A reconcile round flows one way, and so do the imports:
//!
//! ```text
//!   source ──► reconcile::desired ─┐
//!   (nodes file, Kubernetes)        ├─► reconcile::plan ──► Host::apply
//!   Host::observe (host, dataplane) ┘    (pure: Vec<Op>)    (host, dataplane)
//! ```
//!
//! - [`model`]: the plain domain types every layer shares (family, link, route, neighbour,
//!   trie entry, forwarding and NAT facts). Imports nothing of the crate.
//! - `source`: where the node list comes from (a watched `NodeList` file or the Kubernetes
//!   API), published as the full current list.
//! - `reconcile`: one round is observe → desired → plan → apply; desired and plan are pure,
//!   and every kernel write is an `Op` carried out behind the `Host` trait.
//! - `host`: the node's kernel outside BPF: interfaces, routes and neighbours over rtnetlink,
//!   sysctls, netfilter NAT, the pin directory, network namespaces.
//! - `dataplane`: the BPF side: loading (with conntrack kfuncs patched in), attaching, adopting
//!   pins, typed map access.
//! - [`inspect`]: the operator's view (`routes`, `endpoints`, `stats`, `status`), metrics and
//!   the HTTP endpoint. Reads pins and the kernel only.
//! - `daemon`: [`run`] ties them together: set up, reconcile until `shutdown`, detach (or, with
//!   `--keep-dataplane`, leave the dataplane forwarding for the next agent to adopt).
//!
//! Both address families take the same path: desired state, plan and apply are keyed by
//! `IpNet`/`IpAddr`, and each family's trie and endpoint map is picked at apply time.

pub mod cli;
mod config;
mod daemon;
mod dataplane;
mod host;
pub mod inspect;
pub mod model;
mod reconcile;
pub mod source;

pub use config::Config;
pub use daemon::{Error, run, shutdown_signal};
pub use dataplane::{EBPF_OBJECT, kfunc, load::load_programs};
pub use host::{conntrack::kernel_hz, netns};
pub use reconcile::desired;
pub use source::nodes;
