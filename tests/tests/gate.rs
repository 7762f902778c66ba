//! End-to-end tests of the conntrack gate (`--conntrack-gate`) with real netfilter rules shaped
//! like kube-proxy's, on a 2-node × 2-pod lab (see `hostgw_tests::lab`): node A is `n1`, node
//! B is `n2`.
//!
//! - a `ClusterIP`: DNAT on A, in `prerouting`, of a virtual IP:port to a pod on B (TCP, UDP);
//! - a `NodePort` with `externalTrafficPolicy: Local`: DNAT on B of B's own address and a node
//!   port to a pod on B, no SNAT, reached from a pod on A;
//! - masquerade on A of pod traffic to an address outside the pod network, served by an
//!   "internet" namespace on the nodes' switch that has no route back to the pods;
//! - plain pod-to-pod flows with the gate on: on the fast path after their first packets;
//! - the `ClusterIP` with the gate off on A: the replies skip the un-DNAT, the service breaks;
//! - `--conntrack-gate auto` following NAT rules as they appear and go;
//! - IPv6: an IPv6 `ClusterIP` (an `ip6` nat table), pod-to-pod IPv6 flows and `ICMPv6`, gated
//!   as their IPv4 siblings are.
//!
//! Every exchange is a request/response echo: the client must get each reply from the address
//! it sent to (the virtual IP, the node port, the internet address), which is what NAT undone
//! in the stack guarantees and a fast-pathed reply would break. Servers and clients are
//! sockets on threads moved into the namespaces; every wait is bounded. Each test builds its
//! own lab under a name of its own, so tests run in parallel.
//!
//! Conntrack only tracks in a network namespace whose netfilter rules need it (a `nat` chain
//! does): a node with the gate on and no such rules has no entries, so the gate lets nothing
//! through. Where a test expects a node's plain flows on the fast path with the gate on, that
//! node carries the service rules, as every node of a kube-proxy cluster does.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{
        IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, SocketAddrV4, SocketAddrV6, TcpListener,
        TcpStream, UdpSocket,
    },
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use hostgw_common::{
    STATE_F_CT_GATE, State,
    counters::{family, hook, reason},
    names,
};
use hostgw_tests::{
    Netns,
    lab::{self, Counters, Family, Lab, Mode, PingStats, Spec, wait_for},
};

const NODES: usize = 2;
const PODS: usize = 2;

/// The `ClusterIP` service: `VIP:SVC_PORT` → the backend pod's `BACKEND_PORT`.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SVC_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
/// The IPv6 `ClusterIP`, to the backend pod's IPv6 address.
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
/// The `NodePort` service's port on node B.
const NODE_PORT: u16 = 30080;
/// The "internet" namespace: its address on the nodes' switch, and the public address it
/// serves (on its loopback), outside the pod network and the nodes' subnet.
const INTERNET_UPLINK: Ipv4Addr = Ipv4Addr::new(172, 20, 11, 200);
const INTERNET_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const INTERNET_NET: &str = "198.51.100.0/24";

/// Request/response rounds per exchange.
const ROUNDS: usize = 20;
/// How long a UDP client waits for each reply.
const UDP_REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Connect, read and write timeout of TCP clients and of the servers' connections.
const TCP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an agent gets to apply a `--conntrack-gate` after a (re)start.
const GATE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `--conntrack-gate auto` may take to follow NAT rules after a netlink event: a
/// round runs on the event, and in any case every 30 s.
const AUTO_TIMEOUT: Duration = Duration::from_secs(35);

fn lab(name: &str) -> Lab {
    Lab::start(name, &Spec::new(NODES, PODS, Mode::FastPath))
}

fn assert_pings(lab: &Lab, stats: PingStats, count: u32, what: &str) {
    assert!(
        stats.sent == count && stats.received == count,
        "{what}: {stats:?} of {count}\n{}",
        lab.all_agent_logs()
    );
}

/// Pings both ways between pod `a` and pod `b` through the kernel, so that neighbours are
/// resolved and both nodes have learned both pods' endpoints.
fn warm_up(lab: &Lab, a: (usize, usize), b: (usize, usize)) {
    warm_up_over(lab, Family::V4, a, b);
}

/// [`warm_up`] over IPv6.
fn warm_up6(lab: &Lab, a: (usize, usize), b: (usize, usize)) {
    warm_up_over(lab, Family::V6, a, b);
}

fn warm_up_over(lab: &Lab, family: Family, a: (usize, usize), b: (usize, usize)) {
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
fn nft(lab: &Lab, i: usize, ruleset: &str) {
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
fn cluster_ip_rules(backend: Ipv4Addr) -> String {
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
fn cluster_ip6_rules(backend: Ipv6Addr) -> String {
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
fn node_port_rules(node_ip: Ipv4Addr, backend: Ipv4Addr) -> String {
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
fn masquerade_rules() -> String {
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
fn gate_bit(lab: &Lab, i: usize) -> bool {
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
fn gate_logged(lab: &Lab, i: usize) -> Option<bool> {
    lab.agent_run_events(i)
        .iter()
        .filter(|e| e.message() == "conntrack gate")
        .filter_map(|e| e.fields.get("on").and_then(serde_json::Value::as_bool))
        .next_back()
}

/// Whether node `i`'s agent logged the netfilter NAT it found with `chains` nft NAT chains.
fn nat_logged(lab: &Lab, i: usize, chains: u64) -> bool {
    lab.agent_events(i).iter().any(|e| {
        e.message() == "netfilter NAT"
            && e.fields
                .get("nft_nat_chains")
                .and_then(serde_json::Value::as_u64)
                == Some(chains)
    })
}

/// Waits until node `i`'s agent has logged the gate as `on` and the programs see it so.
fn wait_gate(lab: &Lab, i: usize, on: bool, timeout: Duration) {
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
fn restart_with_gate(lab: &mut Lab, i: usize, mode: &str, on: bool) {
    lab.restart_agent_with(i, &["--conntrack-gate", mode]);
    wait_gate(lab, i, on, GATE_TIMEOUT);
}

/// A netlink event on node `i` (a route added and deleted), which makes its agent run a round.
fn poke_agent(lab: &Lab, i: usize) {
    let ns = lab.node(i).ns();
    ns.ip(&["route", "add", "blackhole", "192.0.2.77/32"]);
    ns.ip(&["route", "del", "blackhole", "192.0.2.77/32"]);
}

/// What moved on node `i`'s programs since `before`, for messages.
fn moved(lab: &Lab, i: usize, before: &Counters) -> String {
    format!(
        "n{i} counters that moved: {:?}",
        lab.fast_path_counters(i).since(before).nonzero()
    )
}

// ---- echo servers and clients ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// A TCP and a UDP echo server on `addr` inside a namespace, on their own threads; stopped and
/// joined on drop. Each remembers the peers it served.
struct EchoServer {
    what: String,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<(Proto, SocketAddr)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    fn start(netns: &str, addr: impl Into<SocketAddr>) -> Self {
        let addr = addr.into();
        let mut server = Self {
            what: format!("echo server on {addr} in {netns}"),
            stop: Arc::new(AtomicBool::new(false)),
            peers: Arc::new(Mutex::new(Vec::new())),
            threads: Vec::new(),
        };
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        for proto in [Proto::Tcp, Proto::Udp] {
            let (netns, stop, peers, ready) = (
                netns.to_owned(),
                Arc::clone(&server.stop),
                Arc::clone(&server.peers),
                ready_tx.clone(),
            );
            server.threads.push(std::thread::spawn(move || {
                if let Err(e) = hostgw_agent::netns::enter(&netns) {
                    let _ignored = ready.send(Err(format!("entering {netns}: {e}")));
                    return;
                }
                match proto {
                    Proto::Tcp => serve_tcp(addr, &stop, &peers, &ready),
                    Proto::Udp => serve_udp(addr, &stop, &peers, &ready),
                }
            }));
        }
        for _ in 0..2 {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{}: {e}", server.what),
                Err(e) => panic!("{}: not listening: {e}", server.what),
            }
        }
        server
    }

    /// The peers served over `proto`.
    fn peers(&self, proto: Proto) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .expect("peers lock")
            .iter()
            .filter(|(p, _)| *p == proto)
            .map(|(_, a)| *a)
            .collect()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                eprintln!("warning: a thread of the {} panicked", self.what);
            }
        }
    }
}

fn serve_tcp(
    addr: SocketAddr,
    stop: &AtomicBool,
    peers: &Mutex<Vec<(Proto, SocketAddr)>>,
    ready: &mpsc::Sender<Result<(), String>>,
) {
    let listener = match TcpListener::bind(addr).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            let _ignored = ready.send(Err(format!("TCP bind: {e}")));
            return;
        }
    };
    let _ignored = ready.send(Ok(()));
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                peers.lock().expect("peers lock").push((Proto::Tcp, peer));
                // One connection at a time, each bounded by its idle timeout.
                if let Err(e) = echo_connection(stream, stop) {
                    eprintln!("echo server: TCP connection from {peer}: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => eprintln!("echo server: accept: {e}"),
        }
    }
}

fn echo_connection(mut stream: TcpStream, stop: &AtomicBool) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(TCP_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_TIMEOUT))?;
    let mut buf = [0; 4096];
    while !stop.load(Ordering::Relaxed) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n])?;
    }
    Ok(())
}

fn serve_udp(
    addr: SocketAddr,
    stop: &AtomicBool,
    peers: &Mutex<Vec<(Proto, SocketAddr)>>,
    ready: &mpsc::Sender<Result<(), String>>,
) {
    let socket = match UdpSocket::bind(addr).and_then(|s| {
        s.set_read_timeout(Some(Duration::from_millis(20)))?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ignored = ready.send(Err(format!("UDP bind: {e}")));
            return;
        }
    };
    let _ignored = ready.send(Ok(()));
    let mut buf = [0; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                peers.lock().expect("peers lock").push((Proto::Udp, peer));
                // A reply that cannot be routed (no way back) is the client's failure to see.
                if let Err(e) = socket.send_to(&buf[..n], peer) {
                    eprintln!("echo server: UDP reply to {peer}: {e}");
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => eprintln!("echo server: UDP receive: {e}"),
        }
    }
}

/// What a UDP client got back for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UdpReply {
    /// The echo, from this address.
    From(SocketAddr),
    /// No echo within [`UDP_REPLY_TIMEOUT`].
    Nothing,
}

/// From one unconnected UDP socket in namespace `netns`, sends `rounds` datagrams to `to`,
/// each after the previous one's echo (or its timeout); where each echo came from. The socket
/// is unconnected so that an echo from an unexpected address is seen, not filtered out.
fn udp_exchange(netns: &str, to: impl Into<SocketAddr>, rounds: usize) -> Vec<UdpReply> {
    let (netns, to) = (netns.to_owned(), to.into());
    std::thread::spawn(move || {
        hostgw_agent::netns::enter(&netns).unwrap_or_else(|e| panic!("entering {netns}: {e}"));
        let any: IpAddr = if to.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let socket = UdpSocket::bind((any, 0)).expect("binding a UDP client socket");
        let mut buf = [0; 2048];
        (0..rounds)
            .map(|k| {
                let msg = format!("udp {k:04}");
                socket
                    .send_to(msg.as_bytes(), to)
                    .unwrap_or_else(|e| panic!("UDP send to {to} from {netns}: {e}"));
                let deadline = Instant::now() + UDP_REPLY_TIMEOUT;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return UdpReply::Nothing;
                    }
                    socket
                        .set_read_timeout(Some(left))
                        .expect("setting a read timeout");
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) if &buf[..n] == msg.as_bytes() => {
                            return UdpReply::From(from);
                        }
                        // A late echo of an earlier datagram.
                        Ok(_) => {}
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            return UdpReply::Nothing;
                        }
                        Err(e) => panic!("UDP receive from {to} in {netns}: {e}"),
                    }
                }
            })
            .collect()
    })
    .join()
    .expect("the UDP client thread panicked")
}

/// Connects from namespace `netns` to `to` and makes `rounds` request/response round trips
/// on the one connection, each echo checked. `Err` says which step failed.
fn tcp_exchange(netns: &str, to: impl Into<SocketAddr>, rounds: usize) -> Result<(), String> {
    let (netns, to) = (netns.to_owned(), to.into());
    std::thread::spawn(move || -> Result<(), String> {
        hostgw_agent::netns::enter(&netns).map_err(|e| format!("entering {netns}: {e}"))?;
        let mut stream = TcpStream::connect_timeout(&to, TCP_TIMEOUT)
            .map_err(|e| format!("connect to {to}: {e}"))?;
        stream
            .set_read_timeout(Some(TCP_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TCP_TIMEOUT)))
            .map_err(|e| format!("socket options: {e}"))?;
        let mut buf = [0; 16];
        for k in 0..rounds {
            let msg = format!("tcp {k:04}\n");
            stream
                .write_all(msg.as_bytes())
                .map_err(|e| format!("round {k}: write: {e}"))?;
            let echo = &mut buf[..msg.len()];
            stream
                .read_exact(echo)
                .map_err(|e| format!("round {k}: read: {e}"))?;
            if echo != msg.as_bytes() {
                return Err(format!(
                    "round {k}: echo {:?}, sent {msg:?}",
                    String::from_utf8_lossy(echo)
                ));
            }
        }
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        Ok(())
    })
    .join()
    .expect("the TCP client thread panicked")
}

/// Asserts every round of a UDP exchange was echoed from `from`.
fn assert_udp_from(lab: &Lab, replies: &[UdpReply], from: impl Into<SocketAddr>, what: &str) {
    let from = from.into();
    let wrong: Vec<(usize, UdpReply)> = replies
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, r)| *r != UdpReply::From(from))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} echoes did not come from {from}: {wrong:?}\n{}",
        wrong.len(),
        replies.len(),
        lab.all_agent_logs()
    );
}

/// Asserts that a server saw every client of `proto` at address `ip` (no SNAT, or the
/// expected SNAT), and at least one.
fn assert_peers(server: &EchoServer, proto: Proto, ip: impl Into<IpAddr>, what: &str) {
    let (peers, ip) = (server.peers(proto), ip.into());
    assert!(
        !peers.is_empty() && peers.iter().all(|p| p.ip() == ip),
        "{what}: the server saw {proto:?} clients {peers:?}, expected all from {ip}"
    );
}

// ---- the tests ----

/// A `ClusterIP` on node A (DNAT of the virtual IP to a pod on node B) works for TCP and UDP
/// with the gate on: every reply reaches the client from the virtual IP, because the gate sends
/// the replies of the flow DNAT rewrote through A's stack (`ct_nat`), where the DNAT is
/// undone. To node B, which has the same service rules (as every node of a cluster does) but
/// does not NAT this flow, it is a plain flow between pods: on the fast path after its first
/// packet.
#[test]
fn cluster_ip_dnat_works_with_the_gate_on() {
    let mut lab = lab("gclip");
    let backend = lab.pod(2, 1).ip();
    for i in [1, 2] {
        nft(&lab, i, &cluster_ip_rules(backend));
        restart_with_gate(&mut lab, i, "on", true);
    }
    let server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    let client = lab.pod(1, 1);
    let vip = SocketAddrV4::new(VIP, SVC_PORT);

    for proto in [Proto::Udp, Proto::Tcp] {
        let before = [1, 2].map(|i| lab.fast_path_counters(i));
        match proto {
            Proto::Udp => {
                let replies = udp_exchange(client.netns(), vip, ROUNDS);
                assert_udp_from(&lab, &replies, vip, "UDP to the ClusterIP");
            }
            Proto::Tcp => {
                let result = tcp_exchange(client.netns(), vip, ROUNDS);
                assert!(
                    result.is_ok(),
                    "TCP to the ClusterIP: {result:?}\n{}\n{}",
                    moved(&lab, 1, &before[0]),
                    lab.all_agent_logs()
                );
            }
        }
        assert_peers(&server, proto, client.ip(), "ClusterIP, no SNAT");
        let [a, b] = [1, 2].map(|i| lab.fast_path_counters(i).since(&before[i - 1]));
        println!(
            "ClusterIP {proto:?}: n1 {:?}\n    n2 {:?}",
            a.nonzero(),
            b.nonzero()
        );
        // Every reply (UDP: one per round; TCP: at least the SYN-ACK and one per round)
        // reached A's uplink and was handed to the stack for the un-DNAT.
        let nat = a.get(hook::INGRESS_TC, reason::CT_NAT);
        assert!(
            nat >= ROUNDS as u64,
            "ClusterIP {proto:?}: n1 gated {nat} replies as NAT for {ROUNDS} rounds\n{}",
            moved(&lab, 1, &before[0])
        );
        assert_eq!(
            a.get(hook::INGRESS_TC, reason::FAST_INGRESS),
            0,
            "ClusterIP {proto:?}: n1 fast-pathed a reply of the DNATed flow"
        );
        // B sees a plain pod-to-pod flow: after its first packet, fast both ways.
        let est = b.reason(reason::CT_ESTABLISHED);
        assert!(
            est >= ROUNDS as u64,
            "ClusterIP {proto:?}: n2 forwarded only {est} packets of the flow as established\n{}",
            moved(&lab, 2, &before[1])
        );
    }
}

/// A `NodePort` on node B with `externalTrafficPolicy: Local` (DNAT of B's address and port to a
/// local pod, no SNAT), reached from a pod on node A, works with the gate on: the backend's
/// replies belong to a flow with DNAT on B (`ct_nat` on B's egress hook), un-NATed by B's
/// stack, and reach the client from B's address and the node port.
#[test]
fn node_port_local_dnat_works_with_the_gate_on() {
    let mut lab = lab("gnodeport");
    restart_with_gate(&mut lab, 1, "on", true);
    restart_with_gate(&mut lab, 2, "on", true);
    let node_b = lab.node(2).uplink_ip();
    let backend = lab.pod(2, 1).ip();
    nft(&lab, 2, &node_port_rules(node_b, backend));
    let server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    let client = lab.pod(1, 1);
    let node_port = SocketAddrV4::new(node_b, NODE_PORT);

    for proto in [Proto::Udp, Proto::Tcp] {
        let before = lab.fast_path_counters(2);
        match proto {
            Proto::Udp => {
                let replies = udp_exchange(client.netns(), node_port, ROUNDS);
                assert_udp_from(&lab, &replies, node_port, "UDP to the NodePort");
            }
            Proto::Tcp => {
                let result = tcp_exchange(client.netns(), node_port, ROUNDS);
                assert!(
                    result.is_ok(),
                    "TCP to the NodePort: {result:?}\n{}\n{}",
                    moved(&lab, 2, &before),
                    lab.all_agent_logs()
                );
            }
        }
        // externalTrafficPolicy: Local keeps the client's address.
        assert_peers(&server, proto, client.ip(), "NodePort (Local), no SNAT");
        let b = lab.fast_path_counters(2).since(&before);
        println!("NodePort {proto:?}: n2 {:?}", b.nonzero());
        let nat = b.get(hook::EGRESS, reason::CT_NAT);
        assert!(
            nat >= ROUNDS as u64,
            "NodePort {proto:?}: n2 gated {nat} replies as NAT for {ROUNDS} rounds\n{}",
            moved(&lab, 2, &before)
        );
        assert_eq!(
            b.get(hook::EGRESS, reason::FAST_EGRESS),
            0,
            "NodePort {proto:?}: n2 fast-pathed a reply of the DNATed flow"
        );
    }
}

/// An "internet" namespace on the nodes' switch, serving [`INTERNET_IP`]; it knows the nodes'
/// subnet and nothing of the pod network, so only masqueraded traffic gets answers.
struct Internet {
    // Declared first: the server's threads leave before the namespace goes.
    server: EchoServer,
    _netns: Netns,
}

impl Internet {
    fn attach(lab: &Lab, name: &str) -> Self {
        let netns = Netns::new(name);
        let port = "port-inet";
        sh_ip(
            lab.switch_netns(),
            &[
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                netns.name(),
            ],
        );
        sh_ip(
            lab.switch_netns(),
            &["link", "set", port, "master", lab::SWITCH_BRIDGE],
        );
        sh_ip(lab.switch_netns(), &["link", "set", port, "up"]);
        netns.ip(&[
            "addr",
            "add",
            &format!("{INTERNET_UPLINK}/24"),
            "dev",
            "eth0",
        ]);
        netns.ip(&["link", "set", "eth0", "up"]);
        netns.ip(&["addr", "add", &format!("{INTERNET_IP}/32"), "dev", "lo"]);
        let server = EchoServer::start(netns.name(), SocketAddrV4::new(INTERNET_IP, BACKEND_PORT));
        Self {
            server,
            _netns: netns,
        }
    }
}

fn sh_ip(netns: &str, args: &[&str]) {
    hostgw_tests::sh(
        std::process::Command::new("ip")
            .arg("-n")
            .arg(netns)
            .args(args),
    );
}

/// Masquerade on node A of pod traffic leaving the pod network works with the gate on: the
/// flow's later packets are gated as NAT (`ct_nat` on A's egress hook) and masqueraded by the
/// stack, so the internet (no route to the pods) answers A's address, which A un-NATs.
#[test]
fn masquerade_to_the_internet_works_with_the_gate_on() {
    let mut lab = lab("gmasq");
    restart_with_gate(&mut lab, 1, "on", true);
    let internet = Internet::attach(&lab, "gmasq-inet");
    lab.node(1).ns().ip(&[
        "route",
        "add",
        INTERNET_NET,
        "via",
        &INTERNET_UPLINK.to_string(),
        "dev",
        lab::UPLINK,
    ]);
    let client = lab.pod(1, 1);
    let target = SocketAddrV4::new(INTERNET_IP, BACKEND_PORT);

    // Without masquerade the internet cannot answer: the test would see it if it did.
    let replies = udp_exchange(client.netns(), target, 3);
    assert!(
        replies.iter().all(|r| *r == UdpReply::Nothing),
        "the internet answered a pod without masquerade: {replies:?}"
    );
    let seen = internet.server.peers(Proto::Udp);
    assert!(
        seen.len() == 3 && seen.iter().all(|p| p.ip() == IpAddr::V4(client.ip())),
        "without masquerade the internet should have seen the 3 datagrams from the pod itself: \
         {seen:?}"
    );

    nft(&lab, 1, &masquerade_rules());
    for proto in [Proto::Udp, Proto::Tcp] {
        let seen_before = internet.server.peers(proto).len();
        let before = lab.fast_path_counters(1);
        match proto {
            Proto::Udp => {
                let replies = udp_exchange(client.netns(), target, ROUNDS);
                assert_udp_from(&lab, &replies, target, "UDP to the internet");
            }
            Proto::Tcp => {
                let result = tcp_exchange(client.netns(), target, ROUNDS);
                assert!(
                    result.is_ok(),
                    "TCP to the internet: {result:?}\n{}\n{}",
                    moved(&lab, 1, &before),
                    lab.all_agent_logs()
                );
            }
        }
        let seen: Vec<SocketAddr> = internet.server.peers(proto)[seen_before..].to_vec();
        assert!(
            !seen.is_empty()
                && seen
                    .iter()
                    .all(|p| p.ip() == IpAddr::V4(lab.node(1).uplink_ip())),
            "masquerade {proto:?}: the internet saw {seen:?}, expected n1's address"
        );
        let a = lab.fast_path_counters(1).since(&before);
        println!("masquerade {proto:?}: n1 {:?}", a.nonzero());
        // The first packet has no entry yet; every later one leaving the pod is SNATed.
        let nat = a.get(hook::EGRESS, reason::CT_NAT);
        assert!(
            nat >= ROUNDS as u64 - 1,
            "masquerade {proto:?}: n1 gated {nat} packets as NAT for {ROUNDS} rounds\n{}",
            moved(&lab, 1, &before)
        );
        assert_eq!(
            a.fast(),
            0,
            "masquerade {proto:?}: n1 fast-pathed packets of the masqueraded flow"
        );
    }
}

/// With the gate on, on nodes that have kube-proxy-like NAT rules (which NAT none of these
/// flows), a plain pod-to-pod TCP flow between nodes takes the fast path after its first
/// packet: the programs forward (and count as established) nearly everything, the kernel
/// forwards a handful. UDP too. ICMP, which the kernel's lookup cannot check, goes through the
/// stack.
#[test]
fn pod_to_pod_flows_take_the_fast_path_with_the_gate_on() {
    let mut lab = lab("gfast");
    for i in [1, 2] {
        // kube-proxy's rules are everywhere in a real cluster.
        nft(&lab, i, &cluster_ip_rules(lab.pod(2, 1).ip()));
        restart_with_gate(&mut lab, i, "on", true);
    }
    warm_up(&lab, (1, 1), (2, 2));

    let before = [1, 2].map(|i| (lab.fast_path_counters(i), lab.snmp_forwarded(i)));
    let bytes = 16 << 20;
    let t = lab.tcp_transfer(lab.pod(1, 1), lab.pod(2, 2), bytes);
    assert_eq!(t.bytes, bytes);
    for i in [1, 2] {
        let (c, f) = &before[i - 1];
        let c = lab.fast_path_counters(i).since(c);
        let forw = lab.snmp_forwarded(i) - f;
        let (fast, est, new) = (
            c.fast(),
            c.reason(reason::CT_ESTABLISHED),
            c.reason(reason::CT_NEW),
        );
        println!(
            "TCP n1p1 → n2p2, {bytes} bytes, {:.0} Mbit/s: n{i} fast {fast}, established {est}, \
             ct_new {new}, kernel forwarded {forw}; {:?}",
            t.mbit_per_s(),
            c.nonzero()
        );
        assert!(
            fast >= 200 && est >= fast * 9 / 10,
            "n{i}: the programs forwarded {fast} packets of the transfer, {est} of them as \
             established flows\n{}",
            lab.agent_log(i)
        );
        assert!(
            forw * 20 < fast && forw < 20,
            "n{i}: the kernel forwarded {forw} packets of the transfer (programs: {fast})"
        );
        assert!(
            new < 10,
            "n{i}: {new} packets of one flow had no conntrack entry"
        );
    }

    // UDP: the first datagram creates the entry, every later one and every reply is fast.
    let server = EchoServer::start(
        lab.pod(2, 2).netns(),
        SocketAddrV4::new(lab.pod(2, 2).ip(), BACKEND_PORT),
    );
    let before = [1, 2].map(|i| lab.fast_path_counters(i));
    let to = SocketAddrV4::new(lab.pod(2, 2).ip(), BACKEND_PORT);
    let replies = udp_exchange(lab.pod(1, 1).netns(), to, 50);
    assert_udp_from(&lab, &replies, to, "UDP n1p1 → n2p2");
    assert_peers(&server, Proto::Udp, lab.pod(1, 1).ip(), "UDP pod to pod");
    for i in [1, 2] {
        let c = lab.fast_path_counters(i).since(&before[i - 1]);
        let est = c.reason(reason::CT_ESTABLISHED);
        println!("UDP n1p1 → n2p2, 50 rounds: n{i} {:?}", c.nonzero());
        assert!(
            est >= 2 * 50 - 2,
            "n{i}: {est} of 100 datagrams forwarded as established\n{:?}",
            c.nonzero()
        );
    }

    // ICMP: every echo and reply through the stack, counted as a protocol the gate cannot see.
    let before = [1, 2].map(|i| (lab.fast_path_counters(i), lab.snmp_forwarded(i)));
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(2, 2).ip(),
        20,
        Duration::from_millis(20),
    );
    assert_pings(&lab, s, 20, "ping n1p1 → n2p2");
    for i in [1, 2] {
        let (c, f) = &before[i - 1];
        let c = lab.fast_path_counters(i).since(c);
        let forw = lab.snmp_forwarded(i) - f;
        println!(
            "ping n1p1 → n2p2, 20: n{i} kernel forwarded {forw}; {:?}",
            c.nonzero()
        );
        assert!(
            c.reason(reason::CT_PROTO) >= 40 && c.fast() == 0 && forw >= 40,
            "n{i}: ICMP should go through the stack: ct_proto {}, fast {}, kernel forwarded {forw}",
            c.reason(reason::CT_PROTO),
            c.fast()
        );
    }
}

/// Why the gate exists: with it off on node A, the `ClusterIP`'s replies are fast-pathed
/// straight into the client pod, skipping A's stack and so the un-DNAT. The client gets its UDP
/// echoes from the backend's address instead of the virtual IP (or not at all), and its TCP
/// connection never opens (the SYN-ACK comes from an address it never called). The same
/// exchanges with the gate on, first, show the service itself is sound.
#[test]
fn without_the_gate_cluster_ip_replies_skip_the_un_dnat() {
    let mut lab = lab("goff");
    restart_with_gate(&mut lab, 1, "on", true);
    let backend = lab.pod(2, 1).ip();
    nft(&lab, 1, &cluster_ip_rules(backend));
    let _server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    let client = lab.pod(1, 1).netns().to_owned();
    let vip = SocketAddrV4::new(VIP, SVC_PORT);

    // The control: the gate on.
    let replies = udp_exchange(&client, vip, 5);
    assert_udp_from(
        &lab,
        &replies,
        vip,
        "control, gate on: UDP to the ClusterIP",
    );
    let result = tcp_exchange(&client, vip, 5);
    assert!(
        result.is_ok(),
        "control, gate on: TCP to the ClusterIP: {result:?}"
    );

    restart_with_gate(&mut lab, 1, "off", false);
    // Endpoints are learned (pinned maps survive the restart); make sure of it.
    warm_up(&lab, (1, 1), (2, 1));
    let before = lab.fast_path_counters(1);
    let replies = udp_exchange(&client, vip, 5);
    let udp = lab.fast_path_counters(1).since(&before);
    println!(
        "gate off, UDP to the ClusterIP: client saw {replies:?}; n1 {:?}",
        udp.nonzero()
    );
    assert!(
        replies.iter().all(|r| *r != UdpReply::From(vip.into())),
        "gate off: a UDP echo came back from the ClusterIP: {replies:?}"
    );
    let backend_addr = SocketAddr::from(SocketAddrV4::new(backend, BACKEND_PORT));
    assert!(
        replies
            .iter()
            .all(|r| matches!(r, UdpReply::Nothing) || *r == UdpReply::From(backend_addr)),
        "gate off: UDP echoes from an unexpected address: {replies:?}"
    );
    // The mechanism: n1's ingress hook delivered the replies to the pod itself.
    assert!(
        udp.get(hook::INGRESS_TC, reason::FAST_INGRESS) >= 5 && udp.reason(reason::CT_NAT) == 0,
        "gate off: n1 should have fast-pathed the 5 replies: {:?}",
        udp.nonzero()
    );

    let before = lab.fast_path_counters(1);
    let result = tcp_exchange(&client, vip, 5);
    let tcp = lab.fast_path_counters(1).since(&before);
    println!(
        "gate off, TCP to the ClusterIP: {result:?}; n1 {:?}",
        tcp.nonzero()
    );
    assert!(
        result.is_err(),
        "gate off: TCP to the ClusterIP worked, the fast path must have been skipped: {:?}",
        tcp.nonzero()
    );
    assert!(
        tcp.get(hook::INGRESS_TC, reason::FAST_INGRESS) >= 1,
        "gate off: n1 should have fast-pathed the SYN-ACK: {:?}",
        tcp.nonzero()
    );
}

/// `--conntrack-gate auto` (the default) turns the gate on by itself when NAT rules appear on
/// the node, at the next round of its agent, and off again when they go.
#[test]
fn auto_gate_follows_nat_rules() {
    let lab = lab("gauto");
    for i in [1, 2] {
        wait_gate(&lab, i, false, GATE_TIMEOUT);
    }
    let backend = lab.pod(2, 1).ip();
    nft(&lab, 1, &cluster_ip_rules(backend));
    let start = Instant::now();
    poke_agent(&lab, 1);
    wait_gate(&lab, 1, true, AUTO_TIMEOUT);
    println!(
        "auto: n1's gate went on {:?} after the rules",
        start.elapsed()
    );
    assert!(
        nat_logged(&lab, 1, 1),
        "n1 did not log the NAT it found:\n{}",
        lab.agent_log(1)
    );
    // Node B has no NAT: its gate stays off.
    assert_eq!(gate_logged(&lab, 2), Some(false), "n2's gate");
    assert!(!gate_bit(&lab, 2), "n2's STATE gate bit");

    let _server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV4::new(backend, BACKEND_PORT),
    );
    warm_up(&lab, (1, 1), (2, 1));
    let vip = SocketAddrV4::new(VIP, SVC_PORT);
    let before = lab.fast_path_counters(1);
    let replies = udp_exchange(lab.pod(1, 1).netns(), vip, ROUNDS);
    assert_udp_from(&lab, &replies, vip, "auto gate: UDP to the ClusterIP");
    let result = tcp_exchange(lab.pod(1, 1).netns(), vip, ROUNDS);
    assert!(
        result.is_ok(),
        "auto gate: TCP to the ClusterIP: {result:?}"
    );
    let nat = lab
        .fast_path_counters(1)
        .since(&before)
        .get(hook::INGRESS_TC, reason::CT_NAT);
    assert!(
        nat >= 2 * ROUNDS as u64,
        "auto gate: n1 gated {nat} replies as NAT"
    );

    // The rules go: so does the gate.
    nft(&lab, 1, "delete table ip kube-proxy\n");
    let start = Instant::now();
    poke_agent(&lab, 1);
    wait_gate(&lab, 1, false, AUTO_TIMEOUT);
    println!(
        "auto: n1's gate went off {:?} after the rules",
        start.elapsed()
    );
    assert!(
        nat_logged(&lab, 1, 0),
        "n1 did not log that the NAT went:\n{}",
        lab.agent_log(1)
    );
}

/// The gate applies to IPv6 as to IPv4, with kube-proxy's IPv6 rules (an `ip6` nat table) on
/// both nodes: an IPv6 `ClusterIP` works for UDP and TCP (its replies are handed to A's stack
/// as NAT flows), a pod-to-pod IPv6 TCP transfer is forwarded as an established flow after its
/// first packets, and `ICMPv6` goes through the stack as a protocol the gate cannot look up.
#[test]
fn ipv6_flows_are_gated_like_ipv4_ones() {
    let mut lab = lab("gv6");
    let backend = lab.pod(2, 1).ip6();
    for i in [1, 2] {
        nft(&lab, i, &cluster_ip6_rules(backend));
        restart_with_gate(&mut lab, i, "on", true);
    }
    let server = EchoServer::start(
        lab.pod(2, 1).netns(),
        SocketAddrV6::new(backend, BACKEND_PORT, 0, 0),
    );
    warm_up6(&lab, (1, 1), (2, 1));
    let client = lab.pod(1, 1);
    let vip = SocketAddrV6::new(VIP6, SVC_PORT, 0, 0);

    for proto in [Proto::Udp, Proto::Tcp] {
        let before = lab.fast_path_counters(1);
        match proto {
            Proto::Udp => {
                let replies = udp_exchange(client.netns(), vip, ROUNDS);
                assert_udp_from(&lab, &replies, vip, "UDP to the IPv6 ClusterIP");
            }
            Proto::Tcp => {
                let result = tcp_exchange(client.netns(), vip, ROUNDS);
                assert!(
                    result.is_ok(),
                    "TCP to the IPv6 ClusterIP: {result:?}\n{}\n{}",
                    moved(&lab, 1, &before),
                    lab.all_agent_logs()
                );
            }
        }
        assert_peers(&server, proto, client.ip6(), "IPv6 ClusterIP, no SNAT");
        let a = lab.fast_path_counters(1).since(&before);
        println!("IPv6 ClusterIP {proto:?}: n1 {:?}", a.nonzero());
        let nat = a.get_in(family::IPV6, hook::INGRESS_TC, reason::CT_NAT);
        assert!(
            nat >= ROUNDS as u64,
            "IPv6 ClusterIP {proto:?}: n1 gated {nat} replies as NAT for {ROUNDS} rounds\n{}",
            moved(&lab, 1, &before)
        );
        assert_eq!(
            a.get_in(family::IPV6, hook::INGRESS_TC, reason::FAST_INGRESS),
            0,
            "IPv6 ClusterIP {proto:?}: n1 fast-pathed a reply of the DNATed flow"
        );
    }

    warm_up6(&lab, (1, 1), (2, 2));
    let before = [1, 2].map(|i| (lab.fast_path_counters(i), lab.snmp6_forwarded(i)));
    let bytes = 8 << 20;
    let t = lab.tcp_transfer6(lab.pod(1, 1), lab.pod(2, 2), bytes);
    assert_eq!(t.bytes, bytes);
    for i in [1, 2] {
        let (c, f) = &before[i - 1];
        let c = lab.fast_path_counters(i).since(c);
        let forw = lab.snmp6_forwarded(i) - f;
        let fast = c.fast_in(family::IPV6);
        let est = c.reason_in(family::IPV6, reason::CT_ESTABLISHED);
        println!(
            "IPv6 TCP n1p1 → n2p2, {bytes} bytes: n{i} fast {fast}, established {est}, kernel \
             forwarded {forw}; {:?}",
            c.nonzero()
        );
        assert!(
            fast >= 100 && est >= fast * 9 / 10,
            "n{i}: the programs forwarded {fast} IPv6 packets of the transfer, {est} of them as \
             established flows\n{}",
            lab.agent_log(i)
        );
        assert!(
            forw * 20 < fast && forw < 20,
            "n{i}: the kernel forwarded {forw} IPv6 packets of the transfer (programs: {fast})"
        );
    }

    let before = [1, 2].map(|i| (lab.fast_path_counters(i), lab.snmp6_forwarded(i)));
    let s = lab.ping(
        lab.pod(1, 1),
        lab.pod(2, 2).ip6(),
        20,
        Duration::from_millis(20),
    );
    assert_pings(&lab, s, 20, "ping -6 n1p1 → n2p2");
    for i in [1, 2] {
        let (c, f) = &before[i - 1];
        let c = lab.fast_path_counters(i).since(c);
        let forw = lab.snmp6_forwarded(i) - f;
        let proto = c.reason_in(family::IPV6, reason::CT_PROTO);
        assert!(
            proto >= 40 && c.fast_in(family::IPV6) == 0 && forw >= 40,
            "n{i}: ICMPv6 should go through the stack: ct_proto {proto}, fast {}, kernel \
             forwarded {forw}; {:?}",
            c.fast_in(family::IPV6),
            c.nonzero()
        );
    }
}
