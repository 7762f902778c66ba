//! The `DaemonSet` against what the agent and its init containers do: the probes and the
//! port are the agent's HTTP endpoint, each container gets exactly its justified
//! capabilities, the host's bpffs holds the pin directory, the init scripts' paths are the
//! mounted ones, and the pods run on every node within their resources.

use std::{collections::BTreeSet, net::SocketAddr, path::Path};

use k8s_openapi::{
    api::core::v1::{Container, PodSpec, Probe, Volume},
    apimachinery::pkg::util::intstr::IntOrString,
};

use crate::{
    INIT_SCRIPTS,
    agent_cli::agent_args,
    deploy_dir,
    load::Manifests,
    read,
    text::{self, yaml_comment_capabilities},
};

/// The agent container's capabilities: each one is justified in a `# CAP_…:` comment.
const AGENT_CAPABILITIES: &[&str] = &["BPF", "NET_ADMIN", "PERFMON"];
/// The init containers' capabilities (sysctl writes, the pods' bridge).
const INIT_CAPABILITIES: &[&str] = &["NET_ADMIN"];

/// The port number a probe or a port reference names, looked up in the container's ports.
fn port_number(container: &Container, port: &IntOrString) -> u16 {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).expect("a port number"),
        IntOrString::String(name) => {
            let port = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("{}: no port named {name:?}", container.name));
            u16::try_from(port.container_port).expect("a port number")
        }
    }
}

fn check_probe(
    container: &Container,
    kind: &str,
    probe: Option<&Probe>,
    path: &str,
    addr: SocketAddr,
) {
    let probe = probe.unwrap_or_else(|| panic!("the agent has no {kind} probe"));
    let get = probe
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("the {kind} probe is not an HTTP GET"));
    assert_eq!(get.path.as_deref(), Some(path), "the {kind} probe's path");
    assert_eq!(
        port_number(container, &get.port),
        addr.port(),
        "the {kind} probe's port is --metrics-addr's ({addr})"
    );
    assert_eq!(
        get.host, None,
        "the {kind} probe goes to the pod's (the node's) address"
    );
    assert!(
        matches!(get.scheme.as_deref(), None | Some("HTTP")),
        "the agent serves plain HTTP"
    );
}

#[test]
fn probes_and_port_are_the_agents_http_endpoint() {
    let manifests = Manifests::load();
    let agent = manifests.agent();
    let addr = agent_args(&manifests).metrics_addr;
    assert!(
        addr.ip().is_unspecified(),
        "the kubelet probes the pod's address, the node's with hostNetwork: --metrics-addr must \
         listen on every address, not {addr}"
    );
    check_probe(
        agent,
        "liveness",
        agent.liveness_probe.as_ref(),
        "/healthz",
        addr,
    );
    check_probe(
        agent,
        "readiness",
        agent.readiness_probe.as_ref(),
        "/readyz",
        addr,
    );
    if agent.startup_probe.is_some() {
        check_probe(
            agent,
            "startup",
            agent.startup_probe.as_ref(),
            "/healthz",
            addr,
        );
    }
    let declared: Vec<u16> = agent
        .ports
        .iter()
        .flatten()
        .map(|p| u16::try_from(p.container_port).expect("a port number"))
        .collect();
    assert_eq!(declared, [addr.port()], "the agent's declared ports");

    let annotations = manifests
        .daemonset()
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref());
    if let Some(port) = annotations.and_then(|a| a.get("prometheus.io/port")) {
        assert_eq!(*port, addr.port().to_string(), "prometheus.io/port");
    }
}

/// Checks `container`'s security context: unprivileged, uid 0, every capability dropped but
/// `capabilities`, each of which `justified` (daemonset.yaml's `# CAP_…:` comments) holds.
fn check_security(container: &Container, capabilities: &[&str], justified: &BTreeSet<&str>) {
    let name = &container.name;
    let sc = container
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{name} has no securityContext"));
    assert_ne!(sc.privileged, Some(true), "{name} must not be privileged");
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{name}: allowPrivilegeEscalation"
    );
    assert_eq!(
        sc.run_as_user,
        Some(0),
        "{name}: capabilities reach uid 0 only"
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{name}: readOnlyRootFilesystem"
    );
    let caps = sc
        .capabilities
        .as_ref()
        .unwrap_or_else(|| panic!("{name} sets no capabilities"));
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{name} drops the runtime's default capabilities"
    );
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    let expected: BTreeSet<&str> = capabilities.iter().copied().collect();
    assert_eq!(added, expected, "{name}'s capabilities");
    for cap in &added {
        assert!(
            justified.contains(cap),
            "{name}: CAP_{cap} is not justified in a `# CAP_{cap}:` comment"
        );
    }
}

#[test]
fn containers_get_the_justified_capabilities_not_privileged() {
    let manifests = Manifests::load();
    let yaml = read(&deploy_dir().join("daemonset.yaml"));
    let justified = yaml_comment_capabilities(&yaml);
    check_security(manifests.agent(), AGENT_CAPABILITIES, &justified);
    for (name, _) in INIT_SCRIPTS {
        check_security(
            manifests.init_container(name),
            INIT_CAPABILITIES,
            &justified,
        );
    }
    assert_eq!(
        manifests.all_containers().count(),
        INIT_SCRIPTS.len() + 1,
        "every container is checked here"
    );

    let pod = manifests.pod();
    assert_eq!(
        pod.host_network,
        Some(true),
        "the agent works in the node's network namespace"
    );
    assert_ne!(pod.host_pid, Some(true), "hostPID is not needed");
    assert_ne!(pod.host_ipc, Some(true), "hostIPC is not needed");
}

/// The `DaemonSet` volume backed by the host path `path`.
fn host_path_volume<'a>(pod: &'a PodSpec, path: &str) -> &'a Volume {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == path))
        .unwrap_or_else(|| panic!("no hostPath volume for {path}"))
}

#[test]
fn bpffs_is_the_hosts_and_holds_the_pin_dir() {
    let manifests = Manifests::load();
    let pin_dir = agent_args(&manifests).pin_dir;
    let volume = host_path_volume(manifests.pod(), "/sys/fs/bpf");
    assert_eq!(
        volume.host_path.as_ref().and_then(|h| h.type_.as_deref()),
        Some("Directory"),
        "the host's bpffs must exist (systemd mounts it); an empty directory made for the pod \
         would not be one"
    );
    let mount = manifests
        .agent()
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .expect("the agent mounts the host's /sys/fs/bpf");
    assert_eq!(
        Some(Path::new(&mount.mount_path)),
        pin_dir.parent(),
        "the host's bpffs is mounted at --pin-dir's parent ({})",
        pin_dir.display()
    );
    assert_ne!(mount.read_only, Some(true), "the agent pins below it");
    assert_ne!(
        mount.mount_propagation.as_deref(),
        Some("Bidirectional"),
        "Bidirectional propagation requires a privileged container"
    );
    assert!(
        !pin_dir.starts_with("/sys/") && !pin_dir.starts_with("/proc/"),
        "the runtime's default AppArmor profile denies writes below /sys/fs/bpf and /proc/sys: \
         mount the host's paths elsewhere"
    );
}

#[test]
fn daemonset_runs_everywhere_within_its_resources() {
    let manifests = Manifests::load();
    let ds = manifests.daemonset();
    let spec = ds.spec.as_ref().expect("a spec");
    let selector = spec.selector.match_labels.as_ref().expect("matchLabels");
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .expect("template labels");
    for (k, v) in selector {
        assert_eq!(
            labels.get(k),
            Some(v),
            "the selector matches the pod template ({k})"
        );
    }

    let pod = manifests.pod();
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "a toleration of every taint: every node routes"
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );

    for container in manifests.all_containers() {
        let resources = container
            .resources
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no resources", container.name));
        for (kind, quantities) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for resource in ["cpu", "memory"] {
                assert!(
                    quantities
                        .as_ref()
                        .is_some_and(|q| q.contains_key(resource)),
                    "{}: no {resource} in {kind}",
                    container.name
                );
            }
        }
    }

    // Volumes and ConfigMaps that containers name exist.
    let volumes: BTreeSet<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for container in manifests.all_containers() {
        for mount in container.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(mount.name.as_str()),
                "{} mounts the missing volume {}",
                container.name,
                mount.name
            );
        }
    }
}

#[test]
fn scripts_use_the_paths_the_daemonset_mounts() {
    let manifests = Manifests::load();
    for (container, key) in INIT_SCRIPTS {
        let container = manifests.init_container(container);
        let script_volume = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| {
                container
                    .command
                    .iter()
                    .flatten()
                    .any(|c| Path::new(c) == Path::new(&m.mount_path).join(key))
            })
            .unwrap_or_else(|| panic!("{} does not run {key} from a mount", container.name));
        let cm = manifests.volume_config_map(&script_volume.name);
        assert_eq!(cm.metadata.name.as_deref(), Some("hostgw-node-init"));
    }

    let pod = manifests.pod();
    for (container, var, host_path) in [
        ("enable-forwarding", "PROC_SYS_NET", "/proc/sys/net"),
        ("install-cni", "CNI_NET_DIR", "/etc/cni/net.d"),
        ("install-cni", "CNI_BIN_DIR", "/opt/cni/bin"),
    ] {
        let key = INIT_SCRIPTS
            .iter()
            .find(|(c, _)| *c == container)
            .expect("a script")
            .1;
        let defaults = text::shell_defaults(manifests.script(key));
        let default = *defaults
            .get(var)
            .unwrap_or_else(|| panic!("{key} gives {var} no default"));
        let volume = host_path_volume(pod, host_path);
        let mount = manifests
            .init_container(container)
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
            .unwrap_or_else(|| panic!("{container} does not mount {host_path}"));
        assert_eq!(
            default, mount.mount_path,
            "{key}: {var} is where {host_path} is mounted"
        );
    }
}
