//! A fake node for the init containers' scripts: its directories in a temporary directory,
//! fake `curl` and `ip` that log their arguments, and the Node object the fake API server
//! returns. The scripts run with `sh`, with the container's environment.

use std::{
    collections::BTreeMap,
    fs,
    path::PathBuf,
    process::{Command, Output},
};

use k8s_openapi::{
    api::core::v1::{Node, NodeSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde_json::Value;

use crate::{NODE_NAME, read};

/// A node in a temporary directory: CNI directories, the uplink in a fake sysfs, a service
/// account, a `/proc/sys/net`, and fake `curl` and `ip` that log their arguments (`ip` fails
/// on arguments that contain `$FAKE_IP_FAIL`). Removed on drop.
pub struct FakeNode {
    root: PathBuf,
}

impl FakeNode {
    pub fn new(test: &str, uplink: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("hostgw-manifests-{test}-{}", std::process::id()));
        let _ignored = fs::remove_dir_all(&root);
        let node = Self { root };
        for dir in ["bin", "net.d", "cni-bin", "sa", "proc-sys-net/ipv4"] {
            fs::create_dir_all(node.path(dir)).expect("creating the fake node");
        }
        node.write(&format!("sys/{uplink}/mtu"), "9000\n");
        node.write("sa/token", "the-token\n");
        node.write("sa/ca.crt", "the-ca\n");
        node.write("proc-sys-net/ipv4/ip_forward", "0\n");
        for plugin in ["bridge", "host-local", "portmap"] {
            node.executable(&format!("cni-bin/{plugin}"), "#!/bin/sh\nexit 0\n");
        }
        node.executable(
            "bin/curl",
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>\"$FAKE_LOG.curl\"\n\
             if [ -n \"${FAKE_CURL_FAIL:-}\" ]; then echo 'curl: (22) 403' >&2; exit 22; fi\n\
             cat \"$FAKE_NODE\"\n",
        );
        node.executable(
            "bin/ip",
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>\"$FAKE_LOG.ip\"\n\
             case \"$*\" in\n\
             '-4 -o addr show dev '*) cat \"$FAKE_IP_ADDRS\" 2>/dev/null ;;\n\
             '-6 -o addr show dev '*) cat \"$FAKE_IP6_ADDRS\" 2>/dev/null ;;\n\
             *\"${FAKE_IP_FAIL:-no such arguments}\"*)\n\
               echo 'RTNETLINK answers: Permission denied' >&2; exit 2 ;;\n\
             esac\n\
             exit 0\n",
        );
        node
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().expect("a parent")).expect("creating a directory");
        fs::write(&path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    fn executable(&self, rel: &str, content: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        self.write(rel, content);
        fs::set_permissions(self.path(rel), fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// The Node object the API server returns for a node with one pod CIDR (or none).
    pub fn serve_node(&self, pod_cidr: Option<&str>) {
        self.serve_node_spec(pod_cidr, pod_cidr.as_slice());
    }

    /// The Node object of a node with these pod CIDRs, `spec.podCIDR` being the first, as
    /// the API server keeps them.
    pub fn serve_node_cidrs(&self, pod_cidrs: &[&str]) {
        self.serve_node_spec(pod_cidrs.first().copied(), pod_cidrs);
    }

    /// The Node object the API server returns, pretty-printed as it does for curl, with an
    /// annotation that mentions other pod CIDRs in an escaped string. No `spec.podCIDRs`
    /// when `pod_cidrs` is empty.
    pub fn serve_node_spec(&self, pod_cidr: Option<&str>, pod_cidrs: &[&str]) {
        let node = Node {
            metadata: ObjectMeta {
                name: Some(NODE_NAME.to_owned()),
                annotations: Some(BTreeMap::from([(
                    "example.com/last-applied".to_owned(),
                    r#"{"spec":{"podCIDR":"192.0.2.0/24","podCIDRs":["192.0.2.0/24","2001:db8::/64"]}}"#
                        .to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: pod_cidr.map(str::to_owned),
                pod_cidrs: (!pod_cidrs.is_empty())
                    .then(|| pod_cidrs.iter().map(|&c| c.to_owned()).collect()),
                ..NodeSpec::default()
            }),
            status: None,
        };
        let json = serde_json::to_string_pretty(&node).expect("a Node serializes");
        self.write("node.json", &json);
    }

    /// Runs `script` with the container's environment, the service variables the kubelet
    /// adds, and the node's directories in place of the mounted ones.
    pub fn run(&self, script: &str, env: &BTreeMap<String, String>) -> Output {
        self.write("script.sh", script);
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned())
        );
        let out = Command::new("sh")
            .arg(self.path("script.sh"))
            .env_clear()
            .envs(env)
            .env("PATH", path)
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .env("CNI_NET_DIR", self.path("net.d"))
            .env("CNI_BIN_DIR", self.path("cni-bin"))
            .env("SYS_CLASS_NET", self.path("sys"))
            .env("SA_DIR", self.path("sa"))
            .env("PROC_SYS_NET", self.path("proc-sys-net"))
            .env("FAKE_LOG", self.path("log"))
            .env("FAKE_NODE", self.path("node.json"))
            .env("FAKE_IP_ADDRS", self.path("ip-addrs"))
            .env("FAKE_IP6_ADDRS", self.path("ip6-addrs"))
            .output()
            .expect("running sh");
        fs::remove_file(self.path("script.sh")).expect("removing the script");
        out
    }

    /// A host with IPv6: `net.ipv6.conf` with forwarding off, and `accept_ra` on each of
    /// `interfaces`.
    pub fn with_ipv6(&self, interfaces: &[(&str, &str)]) {
        self.write("proc-sys-net/ipv6/conf/all/forwarding", "0\n");
        self.write("proc-sys-net/ipv6/conf/all/disable_ipv6", "0\n");
        for (name, accept_ra) in interfaces {
            self.write(
                &format!("proc-sys-net/ipv6/conf/{name}/accept_ra"),
                &format!("{accept_ra}\n"),
            );
        }
    }

    /// A file of the fake node, without its trailing newline.
    pub fn read(&self, rel: &str) -> String {
        read(&self.path(rel)).trim_end().to_owned()
    }

    /// The lines a fake tool logged, and a fresh log.
    pub fn take_log(&self, tool: &str) -> Vec<String> {
        let path = self.path(&format!("log.{tool}"));
        let log = fs::read_to_string(&path).unwrap_or_default();
        let _ignored = fs::remove_file(&path);
        log.lines().map(str::to_owned).collect()
    }

    pub fn files(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path(rel))
            .expect("listing a fake directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        let _ignored = fs::remove_dir_all(&self.root);
    }
}

/// What a script wrote to standard error, for messages.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines a script wrote to standard error.
pub fn stderr_lines(out: &Output) -> Vec<String> {
    stderr(out).lines().map(str::to_owned).collect()
}

/// The last line a script wrote to standard error (a failing script's reason), or nothing.
pub fn stderr_last(out: &Output) -> String {
    stderr_lines(out).pop().unwrap_or_default()
}

/// The lines a script wrote to standard output.
pub fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The host-local ranges of the conflist install-cni wrote.
pub fn conflist_ranges(node: &FakeNode) -> Value {
    let conflist: Value =
        serde_json::from_str(&read(&node.path("net.d/10-hostgw.conflist"))).expect("JSON");
    conflist["plugins"][0]["ipam"]["ranges"].clone()
}

/// `ip -6 -o addr show` of a bridge with the `global` addresses and its link-local one.
pub fn ip6_addrs(bridge: &str, global: &[&str]) -> String {
    let line = |addr: &str, scope: &str| {
        format!(
            "7: {bridge}    inet6 {addr} scope {scope} \\       valid_lft forever preferred_lft forever\n"
        )
    };
    let mut out: String = global.iter().map(|a| line(a, "global nodad")).collect();
    out.push_str(&line("fe80::a8c1:abff:fe12:3456/64", "link"));
    out
}
