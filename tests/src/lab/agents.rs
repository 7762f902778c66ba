//! Agents: the nodes file the lab writes, the `hostgw-agent` process on each fast-path node
//! (start, wait until ready, restart, kill, logs) and what the agents installed (routes of
//! protocol `ROUTE_PROTO`, attached links and programs). It never touches a route or link the
//! agent did not make.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    process::{Command, ExitStatus},
    str::FromStr,
    time::{Duration, Instant},
};

use aya::programs::links::{FdLink, PinnedLink};

use super::{
    BRIDGE, Lab, Mode, NodeEntry, ROUTE_PROTO, UPLINK, check_interrupted, node_list_yaml, node_name,
};
use crate::{Agent, sh};

/// How long the lab waits for agents to attach and route at start-up and after a restart.
const AGENT_READY_TIMEOUT: Duration = Duration::from_mins(1);

impl Lab {
    // ---- the nodes file ----

    /// Replaces the nodes file with `entries`, atomically (a temporary file renamed over it, as
    /// a `ConfigMap` update does).
    pub fn write_nodes(&mut self, entries: &[NodeEntry]) {
        self.write_nodes_yaml(&node_list_yaml(entries));
        self.listed = entries.to_vec();
    }

    /// Replaces the nodes file with arbitrary text, atomically. The lab then assumes nothing
    /// about which nodes are listed.
    pub fn write_nodes_yaml(&mut self, yaml: &str) {
        let tmp = self.nodes_file.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &self.nodes_file).unwrap_or_else(|e| {
            panic!(
                "renaming {} to {}: {e}",
                tmp.display(),
                self.nodes_file.display()
            )
        });
        self.listed.clear();
    }

    /// Lists every lab node except node `i`.
    pub fn remove_node(&mut self, i: usize) {
        let entries: Vec<NodeEntry> = (1..=self.nodes.len())
            .filter(|&k| k != i)
            .map(NodeEntry::of)
            .collect();
        self.write_nodes(&entries);
    }

    /// Lists every lab node correctly again.
    pub fn restore_nodes(&mut self) {
        let entries: Vec<NodeEntry> = (1..=self.nodes.len()).map(NodeEntry::of).collect();
        self.write_nodes(&entries);
    }

    /// What the lab last wrote with [`Lab::write_nodes`] (empty after raw YAML).
    pub fn listed_nodes(&self) -> &[NodeEntry] {
        &self.listed
    }

    /// Whether node `i`'s own entry is listed, with a well-formed and correct side of either
    /// family.
    pub(super) fn well_formed_self(&self, i: usize) -> bool {
        let own = NodeEntry::of(i);
        self.listed.iter().any(|e| {
            e.name == own.name
                && (e.parsed().is_some_and(|p| Some(p) == own.parsed())
                    || e.parsed_v6().is_some_and(|p| Some(p) == own.parsed_v6()))
        })
    }

    /// The agent routes node `i` must have for the listed nodes: `CIDR → node IP` of every
    /// other well-formed entry.
    pub fn expected_agent_routes(&self, i: usize) -> BTreeMap<String, Ipv4Addr> {
        let own = node_name(i);
        self.listed
            .iter()
            .filter(|e| e.name != own)
            .filter_map(|e| {
                let (net, len, ip) = e.parsed()?;
                Some((format!("{net}/{len}"), ip))
            })
            .collect()
    }

    /// The IPv6 agent routes node `i` must have: `CIDR → node IP` of every other entry whose
    /// IPv6 side is well-formed (none in an IPv4-only lab, where no node has an IPv6 address).
    pub fn expected_agent_routes6(&self, i: usize) -> BTreeMap<String, Ipv6Addr> {
        let own = node_name(i);
        if !self.ipv6 {
            return BTreeMap::new();
        }
        self.listed
            .iter()
            .filter(|e| e.name != own)
            .filter_map(|e| {
                let (net, len, ip) = e.parsed_v6()?;
                Some((format!("{net}/{len}"), ip))
            })
            .collect()
    }

    // ---- agents ----

    fn agent_args(&self, i: usize) -> Vec<String> {
        let node = self.node(i);
        vec![
            "run".into(),
            "--netns".into(),
            node.netns().into(),
            "--uplink".into(),
            UPLINK.into(),
            "--bridge".into(),
            BRIDGE.into(),
            "--pin-dir".into(),
            node.pin_dir().to_str().expect("UTF-8 pin dir").into(),
            "--nodes-file".into(),
            self.nodes_file.to_str().expect("UTF-8 nodes file").into(),
            "--node-name".into(),
            node.name(),
            // Tests read the log event by event, field by field.
            "--log-format".into(),
            "json".into(),
        ]
        .into_iter()
        .chain(self.agent_extra.iter().cloned())
        .collect()
    }

    pub(super) fn spawn_agent(&mut self, i: usize) {
        self.spawn_agent_with(i, &[]);
    }

    fn spawn_agent_with(&mut self, i: usize, extra: &[&str]) {
        let args = self.agent_args(i);
        let args: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        let node = self.node_mut(i);
        let _ignored = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .and_then(|mut f| writeln!(f, "{RUN_MARKER} {}", args.join(" ")));
        node.agent = Some(Agent::start_with_log(&args, &node.log));
    }

    /// Waits until node `i`'s agent has attached (its process holds the link pinned at
    /// `<pin dir>/links/hostgw_ingress@eth0`, created or adopted) and its routes (protocol
    /// [`ROUTE_PROTO`]) are exactly [`Lab::expected_agent_routes`] and
    /// [`Lab::expected_agent_routes6`]. Panics with the agent's log on a timeout or an exit.
    pub fn wait_agent_ready(&mut self, i: usize) {
        let expected = self.expected_agent_routes(i);
        let expected6 = self.expected_agent_routes6(i);
        let netns = self.node(i).netns().to_owned();
        let uplink_pin = self.node(i).uplink_link_pin();
        let log = self.node(i).log.clone();
        let agent = self
            .node_mut(i)
            .agent
            .as_mut()
            .unwrap_or_else(|| panic!("node {i} runs no agent"));
        let pid = agent.pid().expect("a running agent has a pid");
        let what = format!(
            "the agent of n{i} to attach and install routes {expected:?} {expected6:?} (log {})",
            log.display()
        );
        agent.wait_until(AGENT_READY_TIMEOUT, &what, || {
            check_interrupted();
            // Attached by this process (a tcx link it holds), or as a clsact filter (kernels
            // without tcx), and ready: a round has applied the node list.
            let attached = pinned_link_id(&uplink_pin)
                .is_some_and(|id| held_link_ids(pid).contains(&id))
                || clsact_ingress_in(&netns);
            attached
                && agent_routes_in(&netns) == expected
                && agent_routes6_in(&netns) == expected6
                && ready_in(&netns)
        });
    }

    /// Waits up to `timeout` until every running agent whose own node is listed has exactly
    /// the routes the listed nodes call for.
    pub fn wait_routes_converged(&self, timeout: Duration) {
        let start = Instant::now();
        loop {
            check_interrupted();
            let pending: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| n.agent.is_some() && self.well_formed_self(n.index))
                .filter_map(|n| {
                    let want = self.expected_agent_routes(n.index);
                    let have = agent_routes_in(n.netns());
                    let want6 = self.expected_agent_routes6(n.index);
                    let have6 = agent_routes6_in(n.netns());
                    (have != want || have6 != want6).then(|| {
                        format!(
                            "n{}: has {have:?} {have6:?}, wants {want:?} {want6:?}",
                            n.index
                        )
                    })
                })
                .collect();
            if pending.is_empty() {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "routes not converged after {timeout:?}:\n{}\n{}",
                pending.join("\n"),
                self.all_agent_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Node `i`'s agent log, all runs (ANSI colours stripped).
    pub fn agent_log(&self, i: usize) -> String {
        let node = self.node(i);
        strip_ansi(&std::fs::read_to_string(&node.log).unwrap_or_default())
    }

    /// The events node `i`'s agents logged, over every run.
    pub fn agent_events(&self, i: usize) -> Vec<LogEvent> {
        log_events(&self.agent_log(i))
    }

    /// The events the current run of node `i`'s agent logged.
    pub fn agent_run_events(&self, i: usize) -> Vec<LogEvent> {
        let log = self.agent_log(i);
        log_events(log.rsplit(RUN_MARKER).next().unwrap_or_default())
    }

    /// Every agent's log, headed by its node, for failure messages.
    pub fn all_agent_logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let _ = writeln!(
                out,
                "==== agent log of n{} ====\n{}",
                n.index,
                self.agent_log(n.index)
            );
        }
        out
    }

    /// Sends `signal` to node `i`'s agent and waits (10 s at most) for it to exit.
    pub fn kill_agent(&mut self, i: usize, signal: i32) -> ExitStatus {
        let node = self.node_mut(i);
        let mut agent = node
            .agent
            .take()
            .unwrap_or_else(|| panic!("node {i} runs no agent"));
        agent.stop(signal, Duration::from_secs(10))
    }

    /// Starts node `i`'s agent again (stopping a running one with SIGTERM first) and waits
    /// until it is ready (see [`Lab::wait_agent_ready`]): after a SIGKILL, that means it has
    /// adopted the pinned links.
    pub fn restart_agent(&mut self, i: usize) {
        assert_eq!(
            self.mode,
            Mode::FastPath,
            "a kernel-only lab runs no agents"
        );
        self.restart_agent_with(i, &[]);
    }

    /// [`Lab::restart_agent`] with extra agent flags (e.g. `--replace-programs`).
    pub fn restart_agent_with(&mut self, i: usize, extra: &[&str]) {
        assert_eq!(
            self.mode,
            Mode::FastPath,
            "a kernel-only lab runs no agents"
        );
        if let Some(mut agent) = self.node_mut(i).agent.take() {
            agent.stop(libc::SIGTERM, Duration::from_secs(10));
        }
        self.spawn_agent_with(i, extra);
        self.wait_agent_ready(i);
    }

    /// Whether node `i`'s agent process is running.
    pub fn agent_running(&mut self, i: usize) -> bool {
        self.node_mut(i)
            .agent
            .as_mut()
            .is_some_and(Agent::is_running)
    }

    /// Process id of node `i`'s agent.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.node(i).agent.as_ref().and_then(Agent::pid)
    }

    // ---- looking at nodes ----

    /// Lines of `ip route show` on node `i`.
    pub fn routes(&self, i: usize) -> Vec<String> {
        ip_lines(self.node(i).netns(), &["route", "show"])
    }

    /// Node `i`'s IPv6 routing table (`ip -6 route show`), one route per line.
    pub fn routes6(&self, i: usize) -> Vec<String> {
        ip_lines(self.node(i).netns(), &["-6", "route", "show"])
    }

    /// Node `i`'s routes of protocol [`ROUTE_PROTO`]: `CIDR → via`.
    pub fn agent_routes(&self, i: usize) -> BTreeMap<String, Ipv4Addr> {
        agent_routes_in(self.node(i).netns())
    }

    /// Node `i`'s IPv6 routes of protocol [`ROUTE_PROTO`]: `CIDR → via`.
    pub fn agent_routes6(&self, i: usize) -> BTreeMap<String, Ipv6Addr> {
        agent_routes6_in(self.node(i).netns())
    }

    /// Node `i`'s sysctl `key` (e.g. `net.ipv6.conf.all.forwarding`).
    pub fn sysctl(&self, i: usize, key: &str) -> String {
        let out = sh(self.node(i).ns().command("sysctl").args(["-n", key]));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The id of the XDP program on node `i`'s uplink, if any.
    pub fn xdp_prog_id(&self, i: usize) -> Option<u32> {
        xdp_prog_id_in(self.node(i).netns())
    }

    /// The id of the link pinned at `<pin dir>/links/hostgw_ingress@eth0` on node `i`, if any
    /// (the same id means the same link).
    pub fn uplink_link_id(&self, i: usize) -> Option<u32> {
        pinned_link_id(&self.node(i).uplink_link_pin())
    }

    /// The id of the program on node `i`'s uplink: behind the pinned link (tcx), or else of
    /// hostgw's clsact filter there.
    pub fn uplink_prog_id(&self, i: usize) -> Option<u32> {
        if let Ok(pin) = PinnedLink::from_pin(self.node(i).uplink_link_pin()) {
            return FdLink::from(pin).info().ok().map(|info| info.program_id());
        }
        let filters = self.hook_filters(i, UPLINK);
        filters
            .first()
            .map(|f| u32::try_from(f.prog_id).expect("a program id fits u32"))
    }

    /// hostgw's clsact filters on `dev` of node `i` (none where the agent attached with tcx).
    pub fn hook_filters(&self, i: usize, dev: &str) -> Vec<crate::TcFilter> {
        crate::hostgw_filters(self.node(i).netns(), dev)
    }

    /// Ids of the BPF links node `i`'s agent process holds open.
    pub fn agent_link_ids(&self, i: usize) -> BTreeSet<u32> {
        self.agent_pid(i).map(held_link_ids).unwrap_or_default()
    }
}

/// Whether the uplink of the node in `netns` has hostgw's ingress program as a clsact filter.
fn clsact_ingress_in(netns: &str) -> bool {
    crate::hostgw_filters(netns, UPLINK)
        .iter()
        .any(|f| f.name == hostgw_common::names::PROG_INGRESS)
}

/// Whether the agent in `netns` answers `/readyz` with 200.
fn ready_in(netns: &str) -> bool {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        hostgw_agent::netns::enter(&netns).ok()?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 9403));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out.starts_with("HTTP/1.1 200"))
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or(false)
}

fn ip_lines(netns: &str, args: &[&str]) -> Vec<String> {
    let out = sh(Command::new("ip").arg("-n").arg(netns).args(args));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The IPv4 routes of protocol [`ROUTE_PROTO`] in namespace `netns`: CIDR → next hop.
pub fn agent_routes_in(netns: &str) -> BTreeMap<String, Ipv4Addr> {
    let proto = ROUTE_PROTO.to_string();
    parse_routes(&ip_lines(netns, &["route", "show", "proto", &proto]))
}

fn agent_routes6_in(netns: &str) -> BTreeMap<String, Ipv6Addr> {
    let proto = ROUTE_PROTO.to_string();
    parse_routes6(&ip_lines(netns, &["-6", "route", "show", "proto", &proto]))
}

/// `CIDR → via` of `ip -6 route` lines that have a gateway (`/128` added where `ip` leaves it
/// out).
pub fn parse_routes6(lines: &[String]) -> BTreeMap<String, Ipv6Addr> {
    parse_routes_of(lines, 128)
}

/// `CIDR → via` of `ip route` lines that have a gateway (`/32` added where `ip` leaves it out).
pub fn parse_routes(lines: &[String]) -> BTreeMap<String, Ipv4Addr> {
    parse_routes_of(lines, 32)
}

fn parse_routes_of<A: FromStr>(lines: &[String], host_len: u8) -> BTreeMap<String, A> {
    lines
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let dst = words.next()?;
            let via = words
                .clone()
                .zip(words.skip(1))
                .find(|(k, _)| *k == "via")
                .and_then(|(_, v)| v.parse().ok())?;
            let dst = if dst.contains('/') {
                dst.to_owned()
            } else {
                format!("{dst}/{host_len}")
            };
            Some((dst, via))
        })
        .collect()
}

/// The id of the BPF link pinned at `path`.
fn pinned_link_id(path: &Path) -> Option<u32> {
    let link = FdLink::from(PinnedLink::from_pin(path).ok()?);
    // Dropping the link closes our descriptor only: the pin keeps the link.
    link.info().ok().map(|info| info.id())
}

/// Ids of the BPF links process `pid` holds open (`link_id:` of its descriptors' fdinfo).
fn held_link_ids(pid: u32) -> BTreeSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return BTreeSet::new();
    };
    fds.filter_map(Result::ok)
        .filter(|fd| {
            // `anon_inode:bpf_link` when created, `anon_inode:bpf-link` when opened from a pin.
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                let target = target.as_os_str();
                target == "anon_inode:bpf_link" || target == "anon_inode:bpf-link"
            })
        })
        .filter_map(|fd| {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().display()))
                    .ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("link_id:"))?
                .trim()
                .parse()
                .ok()
        })
        .collect()
}

fn xdp_prog_id_in(netns: &str) -> Option<u32> {
    let out = sh(Command::new("ip").args(["-n", netns, "-j", "link", "show", "dev", UPLINK]));
    let links: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("`ip -j link` prints JSON");
    links[0]["xdp"]["prog"]["id"]
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
}

/// The line the lab writes into an agent's log before each start.
const RUN_MARKER: &str = "---- lab: starting hostgw-agent";

/// One event of an agent's JSON log (`--log-format json`).
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE`.
    pub level: String,
    pub target: String,
    /// The event's fields, `message` among them.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl LogEvent {
    pub fn message(&self) -> &str {
        self.field_str("message").unwrap_or_default()
    }

    /// A field's value when it is a string.
    pub fn field_str(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(serde_json::Value::as_str)
    }
}

/// The JSON events of a log; other lines (the lab's own markers) are skipped.
pub fn log_events(log: &str) -> Vec<LogEvent> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(LogEvent {
                level: v.get("level")?.as_str()?.to_owned(),
                target: v.get("target")?.as_str()?.to_owned(),
                fields: v.get("fields")?.as_object()?.clone(),
            })
        })
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn parses_routes_and_logs() {
        let routes6 = vec![
            "fd00:10:1:2::/64 via fd00:20:11::c dev eth0 proto 203 metric 1024 pref medium"
                .to_owned(),
            "fd00:10:1:1::/64 dev cni0 proto kernel metric 256 pref medium".to_owned(),
        ];
        assert_eq!(
            parse_routes6(&routes6),
            BTreeMap::from([(
                "fd00:10:1:2::/64".to_owned(),
                "fd00:20:11::c".parse().unwrap()
            )])
        );
        let routes = vec![
            "10.1.2.0/24 via 172.20.11.12 dev eth0 proto 203".to_owned(),
            "10.1.1.0/24 dev cni0 proto kernel scope link src 10.1.1.1".to_owned(),
            "10.9.9.9 via 172.20.11.13 dev eth0".to_owned(),
        ];
        let parsed = parse_routes(&routes);
        assert_eq!(parsed.len(), 2, "{parsed:?}");
        assert_eq!(parsed["10.1.2.0/24"], Ipv4Addr::new(172, 20, 11, 12));
        assert_eq!(parsed["10.9.9.9/32"], Ipv4Addr::new(172, 20, 11, 13));
    }
}
