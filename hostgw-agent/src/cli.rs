//! The command line: clap definitions only. [`crate::Config`] validates what is parsed here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// hostgw: eBPF host-gw forwarding for Kubernetes nodes on one L2 segment.
#[derive(Debug, Parser)]
#[command(name = "hostgw-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load and attach the programs, keep the maps in sync, until SIGTERM or
    /// SIGINT.
    Run(RunArgs),
    /// The route trie joined with the kernel: each pod CIDR's next hop, its MAC, the kernel
    /// route and neighbour entry, and any mismatch.
    Routes(InspectArgs),
    /// The local endpoint table: pod address, MAC and veth.
    Endpoints(InspectArgs),
    /// Every datapath counter by hook and reason, summed over CPUs.
    Stats(StatsArgs),
    /// Programs attached and how, map fill levels, node state, and the running agent's report.
    Status(InspectArgs),
}

/// Where to inspect.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The pin directory of the dataplane to inspect.
    #[arg(long, env = "HOSTGW_PIN_DIR", default_value = "/sys/fs/bpf/hostgw")]
    pub pin_dir: PathBuf,

    /// Enter this network namespace first (a name under /run/netns).
    #[arg(long, env = "HOSTGW_NETNS")]
    pub netns: Option<String>,

    /// The agent's HTTP endpoint, asked for its own status.
    #[arg(long, env = "HOSTGW_METRICS_ADDR", default_value = "0.0.0.0:9403")]
    pub metrics_addr: std::net::SocketAddr,

    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// `stats` options.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub inspect: InspectArgs,

    /// Print per-second rates every second, until interrupted.
    #[arg(long)]
    pub watch: bool,

    /// Also print counters that are zero.
    #[arg(long)]
    pub all: bool,
}

/// How inspection commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The node's interface on the shared L2 segment (where other nodes are reached).
    #[arg(long, env = "HOSTGW_UPLINK")]
    pub uplink: String,

    /// The bridge the pods' veths are attached to.
    #[arg(long, env = "HOSTGW_BRIDGE", default_value = "cni0")]
    pub bridge: String,

    /// Directory on a bpf filesystem where maps and links are pinned.
    #[arg(long, env = "HOSTGW_PIN_DIR", default_value = "/sys/fs/bpf/hostgw")]
    pub pin_dir: PathBuf,

    /// Enter this network namespace (a name under /run/netns, as `ip netns add` makes) before
    /// doing anything, keeping the host's mount namespace and its bpf filesystem.
    #[arg(long, env = "HOSTGW_NETNS")]
    pub netns: Option<String>,

    /// On exit, leave the programs attached and the maps and links pinned, so the dataplane
    /// keeps forwarding and a restarted agent adopts it.
    #[arg(long, env = "HOSTGW_KEEP_DATAPLANE")]
    pub keep_dataplane: bool,

    /// Do not ask the kernel FIB on a route-trie miss: hand such packets to the stack.
    #[arg(long, env = "HOSTGW_NO_FIB_FALLBACK")]
    pub no_fib_fallback: bool,

    /// This node's name, as in its Node object: its pod CIDRs are local, every other node's
    /// are routed to. Defaults to the host name.
    #[arg(long, env = "HOSTGW_NODE_NAME")]
    pub node_name: Option<String>,

    /// The cluster's pod network, at most one per family (flannel's `Network` and
    /// `IPv6Network`; repeat the flag, or separate with commas): a Node's pod CIDR outside it
    /// is refused. Without one of a family, that family's pod CIDRs may be anywhere that is
    /// not refused anyway (default routes, link-local, loopback, multicast, the node network).
    #[arg(
        long = "cluster-cidr",
        env = "HOSTGW_CLUSTER_CIDR",
        value_delimiter = ','
    )]
    pub cluster_cidrs: Vec<ipnet::IpNet>,

    /// The Services' range(s) (`--service-cluster-ip-range`): a Node's pod CIDR overlapping
    /// one is refused. Repeat the flag or separate with commas.
    #[arg(
        long = "service-cidr",
        env = "HOSTGW_SERVICE_CIDR",
        value_delimiter = ','
    )]
    pub service_cidrs: Vec<ipnet::IpNet>,

    /// Read the nodes from this file: a v1 `NodeList` in YAML or JSON, as `kubectl get
    /// nodes -o yaml` prints it. The file is watched; edits apply without a restart.
    /// Without it the nodes come from the Kubernetes API (in-cluster configuration, or
    /// `--kubeconfig`).
    #[arg(long, env = "HOSTGW_NODES_FILE")]
    pub nodes_file: Option<PathBuf>,

    /// Kubeconfig file for the Kubernetes API; in a pod the in-cluster configuration is used.
    /// Ignored when `--nodes-file` is given.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Prefix of the node annotations read as in flannel: `<prefix>/public-ip-overwrite`,
    /// else `<prefix>/public-ip`, replaces the IPv4 `InternalIP` as the node's next hop, and
    /// `<prefix>/public-ipv6-overwrite`, else `<prefix>/public-ipv6`, the IPv6 one.
    #[arg(
        long,
        env = "HOSTGW_KUBE_ANNOTATION_PREFIX",
        default_value = "flannel.alpha.coreos.com"
    )]
    pub kube_annotation_prefix: String,

    /// Address of the HTTP endpoint: `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "HOSTGW_METRICS_ADDR", default_value = "0.0.0.0:9403")]
    pub metrics_addr: std::net::SocketAddr,

    /// When adopting programs a previous agent left attached (pinned links), replace them
    /// with this binary's programs, atomically per hook. Without it the running programs stay.
    #[arg(long, env = "HOSTGW_REPLACE_PROGRAMS")]
    pub replace_programs: bool,

    /// Whether to attach the XDP program to the uplink. It only forwards transit traffic
    /// (with `XDP_TX`); everything else it hands to TC. `auto` attaches it except on a veth
    /// uplink, where it could not transmit and where attaching XDP makes the peer give up
    /// GSO, costing TCP throughput.
    #[arg(long, env = "HOSTGW_XDP", value_enum, default_value_t = XdpAttach::Auto)]
    pub xdp: XdpAttach,

    /// How to attach the TC programs. `auto` uses tcx links where the kernel has them (6.6 and
    /// later) and clsact filters elsewhere; `clsact` always uses filters (next to tools that
    /// manage tc filters themselves). Filters are hostgw's by their priority and handle
    /// (`pref 18503 handle 0x4847`, named after the program) and replaced in place on restart.
    #[arg(long, env = "HOSTGW_TC_ATTACH", value_enum, default_value_t = TcAttach::Auto)]
    pub tc_attach: TcAttach,

    /// Whether a flow must be established in netfilter's conntrack, without NAT, before the
    /// programs forward it. `auto` turns it on while the node has NAT rules (kube-proxy,
    /// masquerade) and off on a pure routing node.
    #[arg(long, env = "HOSTGW_CONNTRACK_GATE", value_enum, default_value_t = GateMode::Auto)]
    pub conntrack_gate: GateMode,

    /// Log lines as text or as JSON objects.
    #[arg(long, env = "HOSTGW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds between full resyncs, on top of the ones events trigger.
    #[arg(long, env = "HOSTGW_RESYNC_SECONDS", default_value_t = 30)]
    pub resync_seconds: u64,
}

/// `--conntrack-gate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GateMode {
    /// On while netfilter acts on forwarded traffic: nftables `nat` chains or base chains on the
    /// forward path, or legacy iptables tables; re-checked on every nftables change.
    Auto,
    /// Always on.
    On,
    /// Always off: every routed flow may take the fast path.
    Off,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `--tc-attach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TcAttach {
    /// A tcx link, else a clsact filter.
    Auto,
    /// A tcx link; fail where the kernel has none.
    Tcx,
    /// A clsact filter.
    Clsact,
}

/// `--xdp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum XdpAttach {
    /// Attach, except on a veth uplink.
    Auto,
    /// Attach (native mode, else generic).
    On,
    /// Do not attach.
    Off,
}
