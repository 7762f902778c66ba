//! A round against a fake kernel: the [`Host`] is a model of the node that applies each
//! [`Op`] to itself, so a round can be checked without netlink or root. Each test starts from
//! a converged node and changes one thing.

use std::net::IpAddr;

use clap::Parser as _;
use hostgw_common::{
    CtTimeouts, Endpoint, ROUTE_F_RESOLVED, STATE_F_CT_GATE, STATE_F_FORWARD_V4,
    STATE_F_FORWARD_V6, State,
};
use ipnet::IpNet;
use tokio::sync::watch;

mod node_list;
mod node_state;

use super::*;
use crate::{
    cli::{Cli, Command},
    inspect::metrics::Metrics,
    model::{ConntrackTimeouts, Forwarding, Link, NeighState, Neighbour, Route, TrieRoute},
    source::NodeInfo,
};

const UPLINK: u32 = 2;
const BRIDGE: u32 = 5;
const UPLINK_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x43];
const BRIDGE_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];

/// The node as the fake kernel holds it, and every operation applied to it.
struct Fake {
    node: Observed,
    applied: Vec<Op>,
    /// Operations of this kind fail (the kernel refuses them).
    refuse: Option<fn(&Op) -> bool>,
}

impl Host for Fake {
    async fn observe(
        &mut self,
        uplink: &str,
        bridge: &str,
        nat: bool,
    ) -> Result<Observed, ReconcileError> {
        assert_eq!(
            (uplink, bridge),
            ("eth0", "cni0"),
            "observed the configured interfaces"
        );
        let mut o = self.node.clone();
        if !nat {
            o.netfilter = None;
        }
        Ok(o)
    }

    async fn apply(&mut self, op: &Op) -> Result<(), ReconcileError> {
        self.applied.push(op.clone());
        if self.refuse.is_some_and(|refuse| refuse(op)) {
            return Err(ReconcileError::Kernel(KernelError::MixedFamilies {
                cidr: net("0.0.0.0/0"),
                via: ip("::1"),
            }));
        }
        let n = &mut self.node;
        match op.clone() {
            Op::AttachPort { name, ifindex } => {
                n.port_hooks.insert(name, ifindex);
            }
            Op::DetachPort { name } => {
                n.port_hooks.remove(&name);
            }
            Op::WriteSysctl { key, to, .. } => match key.as_str() {
                "net/ipv6/conf/all/forwarding" => n.forwarding.v6_all = Some(to.to_owned()),
                "net/ipv6/conf/eth0/accept_ra" => {
                    n.forwarding.uplink_accept_ra = Some(to.to_owned());
                }
                other => panic!("unexpected sysctl {other}"),
            },
            Op::SetState { state } => n.state = state,
            Op::SetHook { ifindex, flags, .. } => {
                n.hooks.insert(ifindex, flags);
            }
            Op::DeleteHook { ifindex } => {
                n.hooks.remove(&ifindex);
            }
            // A managed entry the kernel has yet to resolve.
            Op::ResolveNeighbour { ip, ifindex } => n.neighbours.push(Neighbour {
                ip,
                ifindex,
                mac: None,
                state: NeighState::Unresolved,
                ours: true,
                managed: true,
            }),
            // `ip route replace`: the route for the prefix (same metric) is replaced.
            Op::ReplaceRoute { cidr, via, oif } => {
                n.routes.retain(|r| !(r.cidr == cidr && r.metric.is_none()));
                n.routes.push(Route {
                    cidr,
                    via: Some(via),
                    oif: Some(oif),
                    metric: None,
                    mtu: None,
                });
            }
            Op::PutTrie { cidr, route } => {
                n.trie.insert(cidr, route);
            }
            Op::PutEndpoint { ip, endpoint } => {
                n.endpoints.insert(ip, endpoint);
            }
            Op::DeleteTrie { cidr } => {
                n.trie.remove(&cidr);
            }
            Op::DeleteEndpoint { ip } => {
                n.endpoints.remove(&ip);
            }
            Op::DeleteRoute { route } => n.routes.retain(|r| *r != route),
            Op::DeleteNeighbour { neighbour } => n.neighbours.retain(|x| x.ip != neighbour.ip),
        }
        Ok(())
    }
}

impl Fake {
    /// A node with uplink `eth0`, bridge `cni0` with one pod (`10.1.79.3` on `veth10`), IPv4
    /// forwarding on, IPv6 forwarding off, no NAT, and nothing of hostgw's yet.
    fn new() -> Self {
        let mut node = Observed {
            uplink: link(UPLINK, "eth0", UPLINK_MAC, None),
            bridge: link(BRIDGE, "cni0", BRIDGE_MAC, None),
            uplink_addrs: vec![net("172.20.11.43/24"), net("fd00:20::43/64")],
            bridge_nets: vec![net("10.1.79.1/24")],
            forwarding: Forwarding {
                v4_bridge: Some("1".into()),
                v4_uplink: Some("1".into()),
                v6_all: Some("0".into()),
                uplink_accept_ra: Some("1".into()),
                ..Forwarding::default()
            },
            netfilter: Some(Ok(Netfilter::default())),
            ..Observed::default()
        };
        add_pod(&mut node, 10, 3);
        Self {
            node,
            applied: Vec::new(),
            refuse: None,
        }
    }

    /// Runs a round and returns the operations it applied.
    async fn round(&mut self, r: &mut Reconciler) -> Vec<Op> {
        self.applied.clear();
        let round = r.round(self).await.expect("round");
        assert_eq!(round.ops, self.applied.len(), "every planned op is applied");
        std::mem::take(&mut self.applied)
    }

    /// The kernel resolves every pending next hop: MAC `02:00:00:00:00:<last byte>`.
    fn resolve(&mut self) {
        for n in &mut self.node.neighbours {
            if n.state == NeighState::Unresolved {
                n.mac = Some(mac(last(n.ip)));
                n.state = NeighState::Valid;
            }
        }
    }
}

fn link(index: u32, name: &str, mac: [u8; 6], controller: Option<u32>) -> Link {
    Link {
        index,
        name: name.to_owned(),
        mac,
        mtu: 1500,
        controller,
        is_veth: controller.is_some(),
    }
}

/// A pod `10.1.79.<host>` with MAC `02:00:00:00:00:<host>` behind port `veth<port>`.
fn add_pod(node: &mut Observed, port: u32, host: u8) {
    if !node.ports.iter().any(|p| p.index == port) {
        node.ports
            .push(link(port, &format!("veth{port}"), mac(0x80), Some(BRIDGE)));
    }
    node.bridge_neighbours.push(Neighbour {
        ip: ip(&format!("10.1.79.{host}")),
        ifindex: BRIDGE,
        mac: Some(mac(host)),
        state: NeighState::Valid,
        ours: false,
        managed: false,
    });
    node.fdb.insert(mac(host), port);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn mac(last: u8) -> [u8; 6] {
    [2, 0, 0, 0, 0, last]
}

fn last(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(a) => a.octets()[3],
        IpAddr::V6(a) => a.octets()[15],
    }
}

fn node(name: &str, cidrs: &[&str], ips: &[&str]) -> Item {
    Item::Node(NodeInfo {
        name: name.into(),
        pod_cidrs: cidrs.iter().map(|s| (*s).to_owned()).collect(),
        internal_ips: ips.iter().map(|s| (*s).to_owned()).collect(),
    })
}

fn config(extra: &[&str]) -> Config {
    let mut args = vec![
        "hostgw-agent",
        "run",
        "--uplink",
        "eth0",
        "--node-name",
        "me",
    ];
    args.extend_from_slice(extra);
    let Command::Run(args) = Cli::try_parse_from(args).expect("parses").command else {
        panic!("not run");
    };
    Config::try_from(args).expect("valid")
}

/// This node and two others, IPv4 only.
fn cluster() -> Vec<Item> {
    vec![
        node("me", &["10.1.79.0/24"], &["172.20.11.43"]),
        node("b", &["10.1.27.0/24"], &["172.20.11.42"]),
        node("c", &["10.1.28.0/24"], &["172.20.11.44"]),
    ]
}

type NodeList = watch::Sender<Option<Arc<Vec<Item>>>>;

/// A reconciler with `items` as its node list, and a fake node it has converged.
async fn converged(items: Vec<Item>, extra: &[&str]) -> (Reconciler, NodeList, Fake) {
    let (tx, rx) = watch::channel(Some(Arc::new(items)));
    let mut r = Reconciler::new(config(extra), Some(rx));
    let mut fake = Fake::new();
    fake.round(&mut r).await;
    fake.resolve();
    fake.round(&mut r).await;
    assert_eq!(fake.round(&mut r).await, vec![], "converged");
    (r, tx, fake)
}

fn trie(via: &str) -> TrieRoute {
    TrieRoute {
        node_ip: ip(via),
        ifindex: UPLINK,
        mtu: 1500,
        flags: ROUTE_F_RESOLVED,
        node_mac: mac(last(ip(via))),
        uplink_mac: UPLINK_MAC,
    }
}

/// A trie entry whose next hop the kernel has yet to resolve.
fn unresolved(via: &str) -> TrieRoute {
    TrieRoute {
        flags: 0,
        node_mac: [0; 6],
        ..trie(via)
    }
}

/// The endpoint of pod `10.1.79.<host>` behind port `veth<port>`.
fn endpoint(port: u32, host: u8) -> Endpoint {
    Endpoint {
        ifindex: port,
        mac: mac(host),
        pad: [0; 2],
    }
}

fn state(flags: u32) -> State {
    State {
        flags,
        bridge_mac: BRIDGE_MAC,
        uplink_mac: UPLINK_MAC,
        ct: CtTimeouts::default(),
        fib_mtu: 0,
        pad: 0,
    }
}

fn route(cidr: &str, via: &str) -> Route {
    Route {
        cidr: net(cidr),
        via: Some(ip(via)),
        oif: Some(UPLINK),
        metric: None,
        mtu: None,
    }
}

#[tokio::test]
async fn a_round_from_nothing_plans_every_write_in_order_then_nothing() {
    let (tx, rx) = watch::channel(Some(Arc::new(cluster())));
    let mut r = Reconciler::new(config(&[]), Some(rx));
    let mut fake = Fake::new();
    assert_eq!(
        fake.round(&mut r).await,
        vec![
            Op::AttachPort {
                name: "veth10".into(),
                ifindex: 10
            },
            Op::SetState {
                state: state(STATE_F_FORWARD_V4)
            },
            Op::ResolveNeighbour {
                ip: ip("172.20.11.42"),
                ifindex: UPLINK
            },
            Op::ResolveNeighbour {
                ip: ip("172.20.11.44"),
                ifindex: UPLINK
            },
            Op::ReplaceRoute {
                cidr: net("10.1.27.0/24"),
                via: ip("172.20.11.42"),
                oif: UPLINK
            },
            Op::ReplaceRoute {
                cidr: net("10.1.28.0/24"),
                via: ip("172.20.11.44"),
                oif: UPLINK
            },
            Op::PutTrie {
                cidr: net("10.1.27.0/24"),
                route: unresolved("172.20.11.42")
            },
            Op::PutTrie {
                cidr: net("10.1.28.0/24"),
                route: unresolved("172.20.11.44")
            },
            Op::PutEndpoint {
                ip: ip("10.1.79.3"),
                endpoint: endpoint(10, 3),
            },
        ]
    );
    // Managed entries the kernel has not resolved yet: nothing to do.
    assert_eq!(fake.round(&mut r).await, vec![]);
    // Resolved: the MACs go into the trie.
    fake.resolve();
    assert_eq!(
        fake.round(&mut r).await,
        vec![
            Op::PutTrie {
                cidr: net("10.1.27.0/24"),
                route: trie("172.20.11.42")
            },
            Op::PutTrie {
                cidr: net("10.1.28.0/24"),
                route: trie("172.20.11.44")
            },
        ]
    );
    assert_eq!(fake.round(&mut r).await, vec![], "converged");
    drop(tx);
}

#[tokio::test]
async fn a_node_added_removed_or_changed_plans_exactly_its_routes() {
    let (mut r, tx, mut fake) = converged(cluster(), &[]).await;

    let mut items = cluster();
    items.push(node("d", &["10.1.29.0/24"], &["172.20.11.45"]));
    tx.send_replace(Some(Arc::new(items)));
    let ops = fake.round(&mut r).await;
    assert_eq!(
        ops,
        vec![
            Op::ResolveNeighbour {
                ip: ip("172.20.11.45"),
                ifindex: UPLINK
            },
            Op::ReplaceRoute {
                cidr: net("10.1.29.0/24"),
                via: ip("172.20.11.45"),
                oif: UPLINK
            },
            Op::PutTrie {
                cidr: net("10.1.29.0/24"),
                route: unresolved("172.20.11.45"),
            },
        ]
    );
    fake.resolve();
    fake.round(&mut r).await;

    // c leaves: its trie entry, then its route, then our neighbour entry go.
    let items: Vec<Item> = cluster()
        .into_iter()
        .take(2)
        .chain([node("d", &["10.1.29.0/24"], &["172.20.11.45"])])
        .collect();
    tx.send_replace(Some(Arc::new(items.clone())));
    let c_neighbour = fake
        .node
        .neighbours
        .iter()
        .find(|n| n.ip == ip("172.20.11.44"))
        .cloned()
        .expect("c's next hop");
    assert_eq!(
        fake.round(&mut r).await,
        vec![
            Op::DeleteTrie {
                cidr: net("10.1.28.0/24")
            },
            Op::DeleteRoute {
                route: route("10.1.28.0/24", "172.20.11.44")
            },
            Op::DeleteNeighbour {
                neighbour: c_neighbour
            },
        ]
    );
    assert_eq!(fake.round(&mut r).await, vec![]);

    // d is re-addressed: a new next hop and route, the trie entry follows, the old hop goes.
    let mut moved = items;
    moved[2] = node("d", &["10.1.29.0/24"], &["172.20.11.46"]);
    tx.send_replace(Some(Arc::new(moved)));
    let old = fake
        .node
        .neighbours
        .iter()
        .find(|n| n.ip == ip("172.20.11.45"))
        .cloned()
        .expect("d's next hop");
    assert_eq!(
        fake.round(&mut r).await,
        vec![
            Op::ResolveNeighbour {
                ip: ip("172.20.11.46"),
                ifindex: UPLINK
            },
            Op::ReplaceRoute {
                cidr: net("10.1.29.0/24"),
                via: ip("172.20.11.46"),
                oif: UPLINK
            },
            Op::PutTrie {
                cidr: net("10.1.29.0/24"),
                route: unresolved("172.20.11.46"),
            },
            // The replaced route is gone already; deleting it again finds nothing.
            Op::DeleteRoute {
                route: route("10.1.29.0/24", "172.20.11.45")
            },
            Op::DeleteNeighbour { neighbour: old },
        ]
    );
    fake.resolve();
    fake.round(&mut r).await;
    assert_eq!(fake.round(&mut r).await, vec![], "converged");
    assert_eq!(fake.node.routes.len(), 2, "{:?}", fake.node.routes);
}

#[tokio::test]
async fn a_changed_mac_rewrites_only_that_trie_entry() {
    let (mut r, _tx, mut fake) = converged(cluster(), &[]).await;
    let b = fake
        .node
        .neighbours
        .iter_mut()
        .find(|n| n.ip == ip("172.20.11.42"))
        .expect("b's next hop");
    b.mac = Some(mac(0x99));
    assert_eq!(
        fake.round(&mut r).await,
        vec![Op::PutTrie {
            cidr: net("10.1.27.0/24"),
            route: TrieRoute {
                node_mac: mac(0x99),
                ..trie("172.20.11.42")
            },
        }]
    );
    assert_eq!(fake.round(&mut r).await, vec![]);
}

#[tokio::test]
async fn ports_added_and_removed_attach_and_release_their_hooks() {
    let (mut r, _tx, mut fake) = converged(cluster(), &[]).await;
    add_pod(&mut fake.node, 11, 4);
    assert_eq!(
        fake.round(&mut r).await,
        vec![
            Op::AttachPort {
                name: "veth11".into(),
                ifindex: 11
            },
            Op::PutEndpoint {
                ip: ip("10.1.79.4"),
                endpoint: endpoint(11, 4),
            },
        ]
    );
    // veth10 goes: its hook is released and its pod leaves the endpoint table.
    fake.node.ports.retain(|p| p.index != 10);
    assert_eq!(
        fake.round(&mut r).await,
        vec![
            Op::DetachPort {
                name: "veth10".into()
            },
            Op::DeleteEndpoint {
                ip: ip("10.1.79.3")
            },
        ]
    );
    // A port re-created under the same name (a new ifindex) gets a new hook.
    fake.node.ports[0].index = 12;
    fake.node.fdb.insert(mac(4), 12);
    let ops = fake.round(&mut r).await;
    assert_eq!(
        ops[0],
        Op::AttachPort {
            name: "veth11".into(),
            ifindex: 12
        },
        "{ops:?}"
    );
    // A pin left by an earlier run for a port that is gone is removed.
    fake.round(&mut r).await;
    fake.node.port_hooks.insert("veth77".into(), 0);
    assert_eq!(
        fake.round(&mut r).await,
        vec![Op::DetachPort {
            name: "veth77".into()
        }]
    );
    assert_eq!(fake.round(&mut r).await, vec![]);
}

#[tokio::test]
async fn without_a_node_list_only_ports_state_and_endpoints_are_planned() {
    let mut r = Reconciler::new(config(&[]), None);
    let mut fake = Fake::new();
    // Routes of ours from an earlier run stay until a node list says otherwise.
    fake.node.routes.push(route("10.1.27.0/24", "172.20.11.42"));
    let ops = fake.round(&mut r).await;
    assert_eq!(
        ops,
        vec![
            Op::AttachPort {
                name: "veth10".into(),
                ifindex: 10
            },
            Op::SetState {
                state: state(STATE_F_FORWARD_V4)
            },
            Op::PutEndpoint {
                ip: ip("10.1.79.3"),
                endpoint: endpoint(10, 3),
            },
        ]
    );
    assert_eq!(fake.round(&mut r).await, vec![]);
}

#[tokio::test]
async fn a_refused_operation_is_counted_and_retried_while_the_rest_applies() {
    let (tx, rx) = watch::channel(Some(Arc::new(cluster())));
    let mut r = Reconciler::new(config(&[]), Some(rx));
    let mut fake = Fake::new();
    fake.refuse = Some(
        |op| matches!(op, Op::ReplaceRoute { cidr, .. } if cidr.to_string() == "10.1.27.0/24"),
    );
    let round = r.round(&mut fake).await.expect("round");
    assert_eq!(round.errors, 1);
    assert_eq!(
        fake.node.routes,
        vec![route("10.1.28.0/24", "172.20.11.44")]
    );
    fake.refuse = None;
    fake.applied.clear();
    let round = r.round(&mut fake).await.expect("round");
    assert_eq!((round.ops, round.errors), (1, 0));
    assert_eq!(
        fake.applied,
        vec![Op::ReplaceRoute {
            cidr: net("10.1.27.0/24"),
            via: ip("172.20.11.42"),
            oif: UPLINK
        }]
    );
    drop(tx);
}

#[tokio::test]
async fn skips_and_routes_are_exported_by_family() {
    let cli = Cli::try_parse_from([
        "hostgw-agent",
        "run",
        "--uplink",
        "eth0",
        "--node-name",
        "me",
    ])
    .expect("parses");
    let Command::Run(args) = cli.command else {
        panic!("not run");
    };
    let config = Config::try_from(args).expect("valid");
    let mut r = Reconciler::new(config, None);
    let items = [
        node(
            "me",
            &["10.1.79.0/24", "fd00:10:79::/64"],
            &["172.20.11.43"],
        ),
        node(
            "b",
            &["10.1.27.0/24", "fd00:10:27::/64"],
            &["172.20.11.42", "fd00:20::42"],
        ),
        node("c", &["10.1.28.0/24"], &["172.20.11.44"]),
        node("d", &["10.1.29.0/24"], &["172.20.11.45"]),
        Item::Malformed {
            name: "broken".into(),
            error: "bad".into(),
        },
    ];
    let local = Local {
        node_name: "me".into(),
        uplink_addrs: vec![
            "172.20.11.43/24".parse().unwrap(),
            "fd00:20::43/64".parse().unwrap(),
        ],
        ..Local::default()
    };
    let d = desired::desired(&items, &local);
    r.report_skips(&d);
    assert_eq!(
        r.skipped_by_reason,
        BTreeMap::from([
            (("malformed_object", "any"), 1),
            (("no_pod_cidr", "ipv6"), 2),
        ])
    );
    let m = Metrics::new("/nonexistent/hostgw".into());
    let round = Round {
        routes_v4: d.routes_of(Family::V4),
        routes_v6: d.routes_of(Family::V6),
        ..Round::default()
    };
    r.record(&m, &Ok(round));
    let text = m.encode();
    for line in [
        "hostgw_nodes_skipped{reason=\"no_pod_cidr\",family=\"ipv6\"} 2",
        "hostgw_nodes_skipped{reason=\"malformed_object\",family=\"any\"} 1",
        "hostgw_nodes_programmed{family=\"ipv4\"} 3",
        "hostgw_nodes_programmed{family=\"ipv6\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
    }
    assert_eq!(m.last().expect("recorded").routes, 4);
    assert_eq!(m.last().expect("recorded").skipped, 3);
}
