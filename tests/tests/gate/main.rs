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
//! - flows longer than conntrack's timeouts, which keep their entries alive;
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

mod echo;
mod flows;
mod ipv6;
mod lifetime;
mod services;
mod support;

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

use self::{echo::*, support::*};

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
