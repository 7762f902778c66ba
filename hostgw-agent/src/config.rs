//! The validated configuration of `hostgw-agent run`.

use std::path::PathBuf;

use ipnet::IpNet;

use crate::cli::RunArgs;

/// What was wrong with the command line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An interface name the kernel would not accept.
    #[error(
        "--{flag}: {name:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or whitespace)"
    )]
    InterfaceName { flag: &'static str, name: String },
    /// The uplink and the bridge are the same interface.
    #[error(
        "--uplink and --bridge both name {0:?}; the uplink is the node's interface on the shared L2 segment, the bridge holds the pods"
    )]
    SameInterface(String),
    /// The pin directory is not absolute.
    #[error(
        "--pin-dir: {0:?} must be an absolute path on a bpf filesystem, such as /sys/fs/bpf/hostgw"
    )]
    PinDirRelative(PathBuf),
    /// A network namespace name that is not a plain file name under /run/netns.
    #[error("--netns: {0:?} is not a network namespace name (a file name under /run/netns)")]
    NetnsName(String),
    /// No node name given and the host name cannot be read.
    #[error("--node-name: not given, and the host name cannot be read ({0}); pass --node-name")]
    NodeName(String),
    /// A node name that cannot be a Kubernetes object name.
    #[error(
        "--node-name: {0:?} is not a valid node name (lowercase letters, digits, '-' and '.', at most 253)"
    )]
    NodeNameInvalid(String),
    /// An annotation prefix that cannot prefix a Kubernetes annotation key.
    #[error(
        "--kube-annotation-prefix: {0:?} is not a DNS subdomain such as flannel.alpha.coreos.com"
    )]
    AnnotationPrefix(String),
    /// A resync interval of zero.
    #[error("--resync-seconds: must be at least 1")]
    Resync,
    /// A CIDR flag value with host bits set.
    #[error("--{flag}: {cidr} has host bits set; did you mean {}?", cidr.trunc())]
    CidrHostBits { flag: &'static str, cidr: IpNet },
    /// Two cluster CIDRs of one family.
    #[error("--cluster-cidr: {0} and {1} are both of one family; give at most one per family")]
    ClusterCidrTwice(IpNet, IpNet),
}

/// The daemon's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub uplink: String,
    pub bridge: String,
    pub pin_dir: PathBuf,
    pub netns: Option<String>,
    pub keep_dataplane: bool,
    pub fib_fallback: bool,
    pub node_name: String,
    pub nodes_file: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub kube_annotation_prefix: String,
    pub metrics_addr: std::net::SocketAddr,
    pub replace_programs: bool,
    pub conntrack_gate: crate::cli::GateMode,
    pub xdp: crate::cli::XdpAttach,
    pub tc_attach: crate::cli::TcAttach,
    pub resync: std::time::Duration,
    /// `--cluster-cidr`: at most one per family.
    pub cluster_cidrs: Vec<IpNet>,
    /// `--service-cidr`.
    pub service_cidrs: Vec<IpNet>,
}

impl TryFrom<RunArgs> for Config {
    type Error = ConfigError;

    fn try_from(args: RunArgs) -> Result<Self, Self::Error> {
        check_ifname("uplink", &args.uplink)?;
        check_ifname("bridge", &args.bridge)?;
        if args.uplink == args.bridge {
            return Err(ConfigError::SameInterface(args.uplink));
        }
        if !args.pin_dir.is_absolute() {
            return Err(ConfigError::PinDirRelative(args.pin_dir));
        }
        if let Some(netns) = &args.netns
            && (netns.is_empty() || netns.contains('/') || netns == "." || netns == "..")
        {
            return Err(ConfigError::NetnsName(netns.clone()));
        }
        let node_name = match args.node_name {
            Some(n) => n,
            None => hostname().map_err(|e| ConfigError::NodeName(e.to_string()))?,
        };
        let valid = !node_name.is_empty()
            && node_name.len() <= 253
            && node_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !valid {
            return Err(ConfigError::NodeNameInvalid(node_name));
        }
        let prefix = &args.kube_annotation_prefix;
        let prefix_ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !prefix_ok {
            return Err(ConfigError::AnnotationPrefix(prefix.clone()));
        }
        if args.resync_seconds == 0 {
            return Err(ConfigError::Resync);
        }
        for (flag, cidrs) in [
            ("cluster-cidr", &args.cluster_cidrs),
            ("service-cidr", &args.service_cidrs),
        ] {
            if let Some(cidr) = cidrs.iter().find(|c| c.trunc() != **c) {
                return Err(ConfigError::CidrHostBits { flag, cidr: *cidr });
            }
        }
        for (i, a) in args.cluster_cidrs.iter().enumerate() {
            if let Some(b) = args.cluster_cidrs[i + 1..].iter().find(|b| {
                matches!(
                    (a, b),
                    (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
                )
            }) {
                return Err(ConfigError::ClusterCidrTwice(*a, *b));
            }
        }
        Ok(Self {
            node_name,
            nodes_file: args.nodes_file,
            kubeconfig: args.kubeconfig,
            kube_annotation_prefix: args.kube_annotation_prefix,
            metrics_addr: args.metrics_addr,
            replace_programs: args.replace_programs,
            conntrack_gate: args.conntrack_gate,
            xdp: args.xdp,
            tc_attach: args.tc_attach,
            resync: std::time::Duration::from_secs(args.resync_seconds),
            cluster_cidrs: args.cluster_cidrs,
            service_cidrs: args.service_cidrs,
            uplink: args.uplink,
            bridge: args.bridge,
            pin_dir: args.pin_dir,
            netns: args.netns,
            keep_dataplane: args.keep_dataplane,
            fib_fallback: !args.no_fib_fallback,
        })
    }
}

/// The host name, as Kubernetes names the node by default.
fn hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).to_lowercase())
}

/// Checks a name the way the kernel's `dev_valid_name` does.
fn check_ifname(flag: &'static str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(ConfigError::InterfaceName {
            flag,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(["hostgw-agent", "run"].iter().chain(args))
            .expect("arguments parse");
        let Command::Run(run) = cli.command else {
            panic!("not a run command");
        };
        Config::try_from(run)
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(&["--uplink", "eth0", "--node-name", "n1"]).expect("valid");
        assert_eq!(c.node_name, "n1");
        assert_eq!(c.nodes_file, None);
        assert_eq!(c.resync, std::time::Duration::from_secs(30));
        assert_eq!(c.uplink, "eth0");
        assert_eq!(c.bridge, "cni0");
        assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/hostgw"));
        assert!(c.fib_fallback);
        assert!(!c.keep_dataplane);
        assert_eq!(c.netns, None);

        let c = parse(&[
            "--uplink",
            "eth1",
            "--bridge",
            "br0",
            "--pin-dir",
            "/sys/fs/bpf/x",
            "--netns",
            "node1",
            "--keep-dataplane",
            "--no-fib-fallback",
            "--node-name",
            "n2",
            "--nodes-file",
            "/etc/hostgw/nodes.yaml",
            "--replace-programs",
        ])
        .expect("valid");
        assert_eq!(c.bridge, "br0");
        assert_eq!(c.netns.as_deref(), Some("node1"));
        assert!(c.keep_dataplane);
        assert!(!c.fib_fallback);
        assert!(c.replace_programs);
        assert_eq!(c.nodes_file, Some(PathBuf::from("/etc/hostgw/nodes.yaml")));
    }

    #[test]
    fn cluster_and_service_cidrs() {
        let c = parse(&[
            "--uplink",
            "eth0",
            "--node-name",
            "n1",
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10::/56",
            "--service-cidr",
            "10.96.0.0/12",
        ])
        .expect("valid");
        let nets = |v: &[&str]| v.iter().map(|s| s.parse().unwrap()).collect::<Vec<IpNet>>();
        assert_eq!(c.cluster_cidrs, nets(&["10.244.0.0/16", "fd00:10::/56"]));
        assert_eq!(c.service_cidrs, nets(&["10.96.0.0/12"]));
        let e = parse(&["--uplink", "eth0", "--cluster-cidr", "10.244.1.0/16"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--cluster-cidr: 10.244.1.0/16 has host bits set; did you mean 10.244.0.0/16?"
        );
        let e = parse(&[
            "--uplink",
            "eth0",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--cluster-cidr",
            "10.245.0.0/16",
        ])
        .unwrap_err();
        assert!(matches!(e, ConfigError::ClusterCidrTwice(..)), "{e}");
        let e = parse(&["--uplink", "eth0", "--service-cidr", "10.96.0.1/12"]).unwrap_err();
        assert!(e.to_string().starts_with("--service-cidr:"), "{e}");
    }

    #[test]
    fn bad_input_names_the_flag() {
        let e = parse(&["--uplink", "a-very-long-interface-name"]).unwrap_err();
        assert!(e.to_string().starts_with("--uplink:"), "{e}");
        let e = parse(&["--uplink", "eth0", "--bridge", "br/0"]).unwrap_err();
        assert!(e.to_string().starts_with("--bridge:"), "{e}");
        let e = parse(&["--uplink", "eth0", "--bridge", "eth0"]).unwrap_err();
        assert!(matches!(e, ConfigError::SameInterface(_)), "{e}");
        let e = parse(&["--uplink", "eth0", "--pin-dir", "pins"]).unwrap_err();
        assert!(e.to_string().starts_with("--pin-dir:"), "{e}");
        let e = parse(&["--uplink", "eth0", "--netns", "../x"]).unwrap_err();
        assert!(e.to_string().starts_with("--netns:"), "{e}");
        let e = parse(&["--uplink", "eth0", "--node-name", "Node_1"]).unwrap_err();
        assert!(e.to_string().starts_with("--node-name:"), "{e}");
        let e = parse(&[
            "--uplink",
            "eth0",
            "--node-name",
            "n",
            "--resync-seconds",
            "0",
        ])
        .unwrap_err();
        assert!(e.to_string().starts_with("--resync-seconds:"), "{e}");
    }
}
