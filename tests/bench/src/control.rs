//! The control-plane benchmark: the real agent fed a `NodeList` of thousands of synthetic
//! nodes, timed from its start to full convergence (every route and every route-trie entry in
//! place, next hops resolved), then from single-node edits of the nodes file to the route and
//! the trie entry being updated, and its peak RSS.
//!
//! One namespace plays the node: its uplink `eth0` (a veth whose peer stays in the same
//! namespace, so no frame ever leaves it) carries `172.21.0.1/16`; node `i` of the list is
//! `172.21.(i/250+1).(i%250+2)` with a permanent neighbour entry (the addresses do not exist,
//! and a resolved next hop is what a converged node has) and pod CIDR
//! `10.(100+i/256).(i%256).0/24`. Edits move one node's CIDR into the unused
//! `10.120.0.0/14`. The namespace, the pin directory and the scratch directory are removed on
//! drop; the agent is stopped with SIGTERM at the end of each run.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::maps::{LpmTrie, Map, MapData, lpm_trie::Key};
use hostgw_common::{ROUTE_F_RESOLVED, RouteV4, names};

use super::netlink::{self, Socket};
use hostgw_tests::{
    Agent, Netns, PinDir,
    lab::{NodeEntry, ROUTE_PROTO, node_list_yaml},
};

/// A failed control-plane measurement.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    /// A file could not be written.
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent did not get there in time.
    #[error("{what} not reached within {timeout:?}; agent log {log}")]
    Timeout {
        what: String,
        timeout: Duration,
        log: PathBuf,
    },
    /// The agent exited.
    #[error("the agent exited ({status}); log {log}")]
    AgentExited { status: String, log: PathBuf },
}

/// How long the agent gets to converge, and to apply one change.
const CONVERGE_TIMEOUT: Duration = Duration::from_mins(2);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// What one run measured.
#[derive(Debug, Clone)]
pub struct ControlRun {
    /// From starting the agent to every route and trie entry in place.
    pub converge_s: f64,
    /// From each edit of the nodes file to its route and trie entry, sorted, milliseconds.
    pub change_ms: Vec<f64>,
    /// `VmHWM` of the agent at the end of the run, MiB.
    pub peak_rss_mib: f64,
    /// The agent's own duration of each reconcile round it logged during the edits
    /// (`reconciled … ms=`), sorted, milliseconds: the part of an edit's latency spent
    /// planning and applying, as opposed to noticing and parsing the file.
    pub round_ms: Vec<f64>,
    /// Reading and parsing the nodes file once with the agent's own parser
    /// (`hostgw_agent::nodes::read_file`) in this process, milliseconds.
    pub parse_ms: f64,
}

/// The `ms=` of every `reconciled` line of an agent log from byte `from` on.
fn logged_rounds(log: &std::path::Path, from: usize) -> Vec<f64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut v: Vec<f64> = text
        .get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("reconciled"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Synthetic node `i`'s address.
fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 21, (i / 250 + 1) as u8, (i % 250 + 2) as u8)
}

fn node_mac(i: usize) -> String {
    format!("02:00:ac:15:{:02x}:{:02x}", i / 250 + 1, i % 250 + 2)
}

fn node_cidr(i: usize) -> (Ipv4Addr, String) {
    let net = Ipv4Addr::new(10, (100 + i / 256) as u8, (i % 256) as u8, 0);
    (net, format!("{net}/24"))
}

/// Edit `c`'s new CIDR, in `10.120.0.0/14`.
fn spare_cidr(c: usize) -> (Ipv4Addr, String) {
    let net = Ipv4Addr::new(10, (120 + c / 256) as u8, (c % 256) as u8, 0);
    (net, format!("{net}/24"))
}

/// The node namespace and what the agent is given.
#[derive(Debug)]
pub struct ControlNode {
    nodes: usize,
    pins: PinDir,
    dir: PathBuf,
    netns: Netns,
}

const SELF_NAME: &str = "cp";

impl ControlNode {
    /// Builds the namespace `hgw-<pid>-<name>-n1` for `nodes` synthetic nodes.
    pub fn new(name: &str, nodes: usize) -> Result<Self, ControlError> {
        assert!((1..=10_000).contains(&nodes), "1–10000 synthetic nodes");
        let netns = Netns::new(&format!("{name}-n1"));
        let dir = std::env::temp_dir().join(format!("hostgw-bench-{}-{name}", std::process::id()));
        let _ignored = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| ControlError::Write {
            path: dir.clone(),
            source,
        })?;
        let node = Self {
            nodes,
            pins: PinDir::new(&format!("{name}-n1")),
            dir,
            netns,
        };
        let ns = &node.netns;
        hostgw_tests::sh(ns.command("sysctl").args([
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv4.ip_forward=1",
        ]));
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
        ]);
        ns.ip(&["link", "set", "eth0", "address", "02:00:ac:15:00:01"]);
        ns.ip(&["addr", "add", "172.21.0.1/16", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0peer", "up"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["link", "add", "cni0", "type", "bridge"]);
        ns.ip(&["addr", "add", "10.99.0.1/24", "dev", "cni0"]);
        ns.ip(&["link", "set", "cni0", "up"]);
        let mut batch = String::new();
        for i in 0..nodes {
            let _ = writeln!(
                batch,
                "neigh replace {} lladdr {} dev eth0 nud permanent",
                node_ip(i),
                node_mac(i)
            );
        }
        let batch_file = node.dir.join("neighbours.batch");
        std::fs::write(&batch_file, batch).map_err(|source| ControlError::Write {
            path: batch_file.clone(),
            source,
        })?;
        ns.ip(&["-batch", batch_file.to_str().expect("UTF-8 temp dir")]);
        Ok(node)
    }

    fn entries(&self) -> Vec<NodeEntry> {
        let mut v = vec![NodeEntry {
            name: SELF_NAME.into(),
            pod_cidr: "10.99.0.0/24".into(),
            internal_ip: Some("172.21.0.1".into()),
            pod_cidr_v6: None,
            internal_ip_v6: None,
        }];
        v.extend((0..self.nodes).map(|i| NodeEntry {
            name: format!("s{i}"),
            pod_cidr: node_cidr(i).1,
            internal_ip: Some(node_ip(i).to_string()),
            pod_cidr_v6: None,
            internal_ip_v6: None,
        }));
        v
    }

    fn nodes_file(&self) -> PathBuf {
        self.dir.join("nodes.yaml")
    }

    /// Writes the nodes file atomically (a temporary file renamed over it) and returns the
    /// instant of the rename.
    fn write_nodes(&self, entries: &[NodeEntry]) -> Result<Instant, ControlError> {
        let path = self.nodes_file();
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, node_list_yaml(entries)).map_err(|source| ControlError::Write {
            path: tmp.clone(),
            source,
        })?;
        let at = Instant::now();
        std::fs::rename(&tmp, &path).map_err(|source| ControlError::Write { path, source })?;
        Ok(at)
    }

    /// One run: a cold start on the full list, then `changes` single-node edits.
    pub fn run(&self, changes: usize) -> Result<ControlRun, ControlError> {
        // A cold start: no routes of ours left from the previous run (the agent leaves its
        // routes on exit on purpose), no pins (it removes them on SIGTERM).
        let proto = ROUTE_PROTO.to_string();
        self.netns.ip(&["route", "flush", "proto", &proto]);
        let mut entries = self.entries();
        self.write_nodes(&entries)?;
        let log = self.dir.join("agent.log");
        let mut routes = Socket::route(self.netns.name())?;
        let nodes_file = self.nodes_file();
        let args = [
            "run",
            "--netns",
            self.netns.name(),
            "--uplink",
            "eth0",
            "--bridge",
            "cni0",
            "--pin-dir",
            self.pins.path().to_str().expect("UTF-8 pin dir"),
            "--nodes-file",
            nodes_file.to_str().expect("UTF-8 temp dir"),
            "--node-name",
            SELF_NAME,
        ];
        let started = Instant::now();
        let mut agent = Agent::start_with_log(&args, &log);
        let trie_pin = self.pins.path().join(names::ROUTES_V4);
        let want = self.nodes;
        let mut trie: Option<LpmTrie<MapData, [u8; 4], RouteV4>> = None;
        loop {
            if let Some(status) = exited(&mut agent) {
                return Err(ControlError::AgentExited { status, log });
            }
            if started.elapsed() > CONVERGE_TIMEOUT {
                return Err(ControlError::Timeout {
                    what: format!("{want} routes and trie entries"),
                    timeout: CONVERGE_TIMEOUT,
                    log,
                });
            }
            let n_routes = routes
                .routes(ROUTE_PROTO)?
                .iter()
                .filter(|r| r.gateway.is_some())
                .count();
            if n_routes == want {
                if trie.is_none() {
                    trie = open_trie(&trie_pin);
                }
                if let Some(t) = &trie {
                    let resolved = t
                        .iter()
                        .filter_map(Result::ok)
                        .filter(|(_, r)| r.flags & ROUTE_F_RESOLVED != 0)
                        .count();
                    if resolved == want {
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let converge_s = started.elapsed().as_secs_f64();
        let trie = trie.expect("converged with a trie");

        let log_mark = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        let mut change_ms = Vec::with_capacity(changes);
        for c in 0..changes {
            let k = (c * 47) % self.nodes;
            let (old_net, _) = node_cidr(k);
            let (new_net, new_cidr) = spare_cidr(c);
            entries[k + 1].pod_cidr.clone_from(&new_cidr);
            let at = self.write_nodes(&entries)?;
            let via = node_ip(k);
            loop {
                if let Some(status) = exited(&mut agent) {
                    return Err(ControlError::AgentExited { status, log });
                }
                if at.elapsed() > CHANGE_TIMEOUT {
                    return Err(ControlError::Timeout {
                        what: format!("node s{k} moved to {new_cidr}"),
                        timeout: CHANGE_TIMEOUT,
                        log,
                    });
                }
                let in_trie = |net: Ipv4Addr| trie.get(&Key::new(24, net.octets()), 0).is_ok();
                if in_trie(new_net) && !in_trie(old_net) {
                    let now = routes.routes(ROUTE_PROTO)?;
                    let has = |net: Ipv4Addr| {
                        now.iter()
                            .any(|r| r.dst == net && r.dst_len == 24 && r.gateway == Some(via))
                    };
                    if has(new_net) && !has(old_net) {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            change_ms.push(at.elapsed().as_secs_f64() * 1e3);
            // Changes are spaced out, as edits of a real node list are.
            std::thread::sleep(Duration::from_millis(20));
        }
        change_ms.sort_by(f64::total_cmp);

        let peak_rss_mib = agent.pid().map_or(0.0, |pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmHWM:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|v| v.parse::<f64>().ok())
                })
                .map_or(0.0, |kib| kib / 1024.0)
        });
        drop(trie);
        agent.terminate(Duration::from_secs(10));
        Ok(ControlRun {
            converge_s,
            change_ms,
            peak_rss_mib,
            round_ms: logged_rounds(&log, log_mark),
            parse_ms: {
                let t = Instant::now();
                let parsed =
                    hostgw_agent::nodes::read_file(&self.nodes_file(), "flannel.alpha.coreos.com");
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if parsed.map_or(true, |items| items.len() != self.nodes + 1) {
                    f64::NAN
                } else {
                    ms
                }
            },
        })
    }
}

impl Drop for ControlNode {
    fn drop(&mut self) {
        let _ignored = std::fs::remove_dir_all(&self.dir);
    }
}

fn exited(agent: &mut Agent) -> Option<String> {
    (!agent.is_running()).then(|| {
        agent
            .terminate(Duration::ZERO)
            .map_or_else(|| "gone".to_owned(), |s| s.to_string())
    })
}

fn open_trie(path: &std::path::Path) -> Option<LpmTrie<MapData, [u8; 4], RouteV4>> {
    let data = MapData::from_pin(path).ok()?;
    LpmTrie::try_from(Map::LpmTrie(data)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_addresses_are_distinct_and_stay_in_their_ranges() {
        let ips: std::collections::BTreeSet<Ipv4Addr> = (0..10_000).map(node_ip).collect();
        assert_eq!(ips.len(), 10_000);
        assert!(
            ips.iter()
                .all(|ip| ip.octets()[..2] == [172, 21] && ip.octets()[3] >= 2)
        );
        let cidrs: std::collections::BTreeSet<Ipv4Addr> =
            (0..5_000).map(|i| node_cidr(i).0).collect();
        assert_eq!(cidrs.len(), 5_000);
        assert!(cidrs.iter().all(|n| (100..120).contains(&n.octets()[1])));
        assert!((0..1000).all(|c| (120..124).contains(&spare_cidr(c).0.octets()[1])));
    }
}
