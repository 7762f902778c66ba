//! The Kubernetes manifests in `deploy/`, checked offline: every document of every file the
//! kustomization lists deserializes into its k8s-openapi type with no field left over, the
//! `DaemonSet` starts the agent with a command line and environment `hostgw-agent run` accepts,
//! and the probes, capabilities, volumes and RBAC agree with what the agent does. The init
//! containers' scripts run against a fake node in a temporary directory. No cluster, no root,
//! no network.
//!
//! Layout:
//!
//! - [`load`]: reading `deploy/` into typed objects, strictly (no field left over), and the
//!   kustomization's list of files;
//! - [`text`]: the few files that are not YAML objects, parsed into their parts: the init
//!   scripts' variables, `# CAP_…:` comments, the Dockerfile's instructions;
//! - [`agent_cli`]: the agent's command line and environment as the kubelet builds them,
//!   parsed by the agent's own clap definition;
//! - [`daemonset`]: probes, capabilities, volumes, scheduling and resources;
//! - [`rbac`] and [`images`]: the agent's API access, and the image the `Dockerfile` builds;
//! - [`fake_node`], [`enable_forwarding`] and [`install_cni`]: the init containers' scripts,
//!   run on a fake node.

mod agent_cli;
mod daemonset;
mod enable_forwarding;
mod fake_node;
mod images;
mod install_cni;
mod load;
mod rbac;
mod text;

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The node name the downward API hands the pod (`spec.nodeName`) in these checks.
const NODE_NAME: &str = "node-a";
/// The agent container's name in the `DaemonSet`.
const AGENT: &str = "agent";
/// The init containers and the script each runs from the `hostgw-node-init` `ConfigMap`.
const INIT_SCRIPTS: &[(&str, &str)] = &[
    ("enable-forwarding", "enable-forwarding.sh"),
    ("install-cni", "install-cni.sh"),
];
/// `hostgw-config` keys named like the agent's variables that only the init scripts read
/// (the agent gets them too, and clap ignores variables no flag names).
const INIT_ONLY_VARIABLES: &[&str] = &["HOSTGW_IPV6_FORWARDING"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
