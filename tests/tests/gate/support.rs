//! The lab, netfilter rulesets shaped like kube-proxy's, and the gate: its bit in `STATE`,
//! what the agent logged, restarts with another mode.

use super::*;

pub(super) fn lab(name: &str) -> Lab {
    Lab::start(name, &Spec::new(NODES, PODS, Mode::FastPath))
}

pub(super) fn assert_pings(lab: &Lab, stats: PingStats, count: u32, what: &str) {
    assert!(
        stats.sent == count && stats.received == count,
        "{what}: {stats:?} of {count}\n{}",
        lab.all_agent_logs()
    );
}

/// Pings both ways between pod `a` and pod `b` through the kernel, so that neighbours are
/// resolved and both nodes have learned both pods' endpoints.
pub(super) fn warm_up(lab: &Lab, a: (usize, usize), b: (usize, usize)) {
    warm_up_over(lab, Family::V4, a, b);
}

/// [`warm_up`] over IPv6.
pub(super) fn warm_up6(lab: &Lab, a: (usize, usize), b: (usize, usize)) {
    warm_up_over(lab, Family::V6, a, b);
}

pub(super) fn warm_up_over(lab: &Lab, family: Family, a: (usize, usize), b: (usize, usize)) {
    let (pa, pb) = (lab.pod(a.0, a.1), lab.pod(b.0, b.1));
    let s = lab.ping(pa, pb.addr(family), 3, Duration::from_millis(100));
    assert_pings(
        lab,
        s,
        3,
        &format!("warm-up {} → {}", pa.label(), pb.label()),
    );
    let s = lab.ping(pb, pa.addr(family), 3, Duration::from_millis(100));
    assert_pings(
        lab,
        s,
        3,
        &format!("warm-up {} → {}", pb.label(), pa.label()),
    );
}

// ---- netfilter ----

/// Loads `ruleset` into node `i`'s nftables with `nft -f` (the file goes to the lab's scratch
/// directory, removed with the lab).
pub(super) fn nft(lab: &Lab, i: usize, ruleset: &str) {
    static FILES: AtomicUsize = AtomicUsize::new(0);
    let path = lab.dir().join(format!(
        "ruleset-n{i}-{}.nft",
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, ruleset).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let mut cmd = lab.node(i).ns().command("nft");
    cmd.arg("-f").arg(&path);
    let out = lab::output_within(&mut cmd, Duration::from_secs(10));
    assert!(
        out.status.success(),
        "nft -f on n{i} failed: {}\n{ruleset}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kube-proxy's `ClusterIP` rules, reduced to one service: DNAT in `prerouting` (the traffic
/// comes from a local pod through the bridge) of `VIP:SVC_PORT` to `backend:BACKEND_PORT`,
/// TCP and UDP.
pub(super) fn cluster_ip_rules(backend: Ipv4Addr) -> String {
    format!(
        "table ip kube-proxy {{\n\
         \tchain services {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tip daddr {VIP} tcp dport {SVC_PORT} dnat to {backend}:{BACKEND_PORT}\n\
         \t\tip daddr {VIP} udp dport {SVC_PORT} dnat to {backend}:{BACKEND_PORT}\n\
         \t}}\n\
         }}\n"
    )
}

/// [`cluster_ip_rules`] for an IPv6 service: an `ip6` nat table.
pub(super) fn cluster_ip6_rules(backend: Ipv6Addr) -> String {
    format!(
        "table ip6 kube-proxy {{\n\
         \tchain services {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tip6 daddr {VIP6} tcp dport {SVC_PORT} dnat to [{backend}]:{BACKEND_PORT}\n\
         \t\tip6 daddr {VIP6} udp dport {SVC_PORT} dnat to [{backend}]:{BACKEND_PORT}\n\
         \t}}\n\
         }}\n"
    )
}

/// A `NodePort` service with `externalTrafficPolicy: Local`: DNAT of `node_ip:NODE_PORT` to a
/// backend on this node, and no SNAT (the backend sees the client's address).
pub(super) fn node_port_rules(node_ip: Ipv4Addr, backend: Ipv4Addr) -> String {
    format!(
        "table ip kube-proxy {{\n\
         \tchain nodeports {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tip daddr {node_ip} tcp dport {NODE_PORT} dnat to {backend}:{BACKEND_PORT}\n\
         \t\tip daddr {node_ip} udp dport {NODE_PORT} dnat to {backend}:{BACKEND_PORT}\n\
         \t}}\n\
         }}\n"
    )
}

/// The CNI's masquerade: pod traffic leaving the pod network through the uplink.
pub(super) fn masquerade_rules() -> String {
    format!(
        "table ip cni-masquerade {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr 10.1.0.0/16 ip daddr != 10.1.0.0/16 oifname \"{}\" masquerade\n\
         \t}}\n\
         }}\n",
        lab::UPLINK
    )
}

// ---- the gate's state ----

/// The gate bit of node `i`'s `STATE` map, as the programs read it.
pub(super) fn gate_bit(lab: &Lab, i: usize) -> bool {
    let path = lab.node(i).pin_dir().join(names::STATE);
    let data =
        MapData::from_pin(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let map = Map::from_map_data(data).unwrap_or_else(|e| panic!("STATE of n{i}: {e}"));
    let state: Array<MapData, State> =
        Array::try_from(map).unwrap_or_else(|e| panic!("STATE of n{i} is not an array: {e}"));
    let state = state
        .get(&0, 0)
        .unwrap_or_else(|e| panic!("reading STATE of n{i}: {e}"));
    state.flags & STATE_F_CT_GATE != 0
}

/// The `on` field of the last "conntrack gate" event the current run of node `i`'s agent
/// logged.
pub(super) fn gate_logged(lab: &Lab, i: usize) -> Option<bool> {
    lab.agent_run_events(i)
        .iter()
        .filter(|e| e.message() == "conntrack gate")
        .filter_map(|e| e.fields.get("on").and_then(serde_json::Value::as_bool))
        .next_back()
}

/// Whether node `i`'s agent logged the netfilter it found with `chains` nft NAT chains.
pub(super) fn nat_logged(lab: &Lab, i: usize, chains: u64) -> bool {
    lab.agent_events(i).iter().any(|e| {
        e.message() == "netfilter on the forward path"
            && e.fields
                .get("nft_nat_chains")
                .and_then(serde_json::Value::as_u64)
                == Some(chains)
    })
}

/// Waits until node `i`'s agent has logged the gate as `on` and the programs see it so.
pub(super) fn wait_gate(lab: &Lab, i: usize, on: bool, timeout: Duration) {
    wait_for(
        timeout,
        || {
            format!(
                "n{i}'s conntrack gate to be on={on} (logged {:?}, STATE bit {})\n{}",
                gate_logged(lab, i),
                gate_bit(lab, i),
                lab.agent_log(i)
            )
        },
        || (gate_logged(lab, i) == Some(on) && gate_bit(lab, i) == on).then_some(()),
    );
}

/// Restarts node `i`'s agent with `--conntrack-gate mode` and waits until the gate is `on`.
pub(super) fn restart_with_gate(lab: &mut Lab, i: usize, mode: &str, on: bool) {
    lab.restart_agent_with(i, &["--conntrack-gate", mode]);
    wait_gate(lab, i, on, GATE_TIMEOUT);
}

/// A netlink event on node `i` (a route added and deleted), which makes its agent run a round.
pub(super) fn poke_agent(lab: &Lab, i: usize) {
    let ns = lab.node(i).ns();
    ns.ip(&["route", "add", "blackhole", "192.0.2.77/32"]);
    ns.ip(&["route", "del", "blackhole", "192.0.2.77/32"]);
}

/// What moved on node `i`'s programs since `before`, for messages.
pub(super) fn moved(lab: &Lab, i: usize, before: &Counters) -> String {
    format!(
        "n{i} counters that moved: {:?}",
        lab.fast_path_counters(i).since(before).nonzero()
    )
}

// ---- echo servers and clients ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Proto {
    Tcp,
    Udp,
}
