//! The kernel as the oracle: a corpus of frames a pod or a remote node could send — valid
//! ones and mutated ones (TTL and hop limit, sizes around the MTU with and without DF, IPv4
//! options, fragments, bad checksums and lengths, broadcast and multicast, spoofed and
//! martian sources, IPv6 extension headers and neighbour discovery, VLAN tags, other
//! protocols) — goes through the same dual-stack 2-node × 2-pod lab twice, on kernel routes
//! alone and with the agents. Every frame is sent on its own from a raw socket in the
//! sender's namespace, and what arrives on every pod's and every node's interface while it
//! is in flight (forwarded frames, ICMP errors, the receivers' answers) is recorded. The two
//! runs must record the same bytes, frame by frame; the fast-path run must have taken a
//! share of the corpus on the fast path (its counters say which frames), so the comparison
//! is of the programs' work, not only of the stack's.
//!
//! n1's first pod has an MTU of 9000 (its host veth too), so it can send frames larger than
//! the 1500-byte uplink: the kernel fragments them or answers "fragmentation needed" /
//! "packet too big", and the fast path must hand them to it.
//!
//! Normalised before comparing: the IPv4 identification of ICMP messages (errors, echo
//! replies: the sending kernel picks it, differently in each lab) and their header checksum,
//! replaced by whether the checksum was right. A frame to an address nobody has is waited
//! for until the kernel gives up resolving it and says so. Neighbour discovery, ARP, IGMP and
//! MLD are not compared: they come and go with the neighbour tables' timers, not with the
//! corpus.
//!
//! The corpus is in [`corpus`], the raw sockets that send and capture it in [`capture`].

mod capture;
mod corpus;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use self::{capture::*, corpus::corpus};
use hostgw_tests::{
    frame::{ETH_LEN, IPV6_LEN, Ipv4Frame, Ipv6Frame, fix_checksum},
    lab::{
        Counters, Lab, Mode, Spec, UPLINK, bridge_mac, gateway, gateway6, pod_ip, pod_ip6, pod_mac,
        uplink_ip, uplink_ip6, uplink_mac,
    },
};

const NODES: usize = 2;
const PODS: usize = 2;
/// A frame's traffic is over when nothing arrived for this long.
const QUIET: Duration = Duration::from_millis(40);
/// The longest a frame's traffic is waited for.
const AT_MOST: Duration = Duration::from_millis(600);
/// Longer than the kernel takes to give up resolving a neighbour (three probes a second
/// apart) and answer "unreachable".
const UNRESOLVED: Duration = Duration::from_secs(4);
/// n1p1's MTU.
const BIG_MTU: u32 = 9000;

/// Who sends a frame: a pod (from its `eth0`) or a node (from its uplink, as a remote node's
/// forwarding would).
#[derive(Debug, Clone, Copy)]
enum From {
    Pod(usize, usize),
    Node(usize),
}

struct Case {
    name: String,
    from: From,
    frame: Vec<u8>,
    /// How long its traffic is waited for at least: an address nobody answers for gets its
    /// "unreachable" when the neighbour code gives up, seconds later.
    at_least: Duration,
}

/// What the run saw of one frame: every frame that arrived, by interface, normalised; and,
/// with agents, whether the programs forwarded it (a fast-path counter moved).
#[derive(Debug, Default)]
struct Seen {
    arrived: Vec<(String, Vec<u8>)>,
    fast: bool,
}

#[test]
fn the_fast_path_delivers_what_the_kernel_delivers_frame_by_frame() {
    let corpus = corpus();
    let kernel = run("kdiff", Mode::KernelOnly, &corpus);
    let fast = run("fdiff", Mode::FastPath, &corpus);

    let mut differ = Vec::new();
    let (mut delivered, mut errors, mut on_fast_path) = (0, 0, 0);
    for ((case, k), f) in corpus.iter().zip(&kernel).zip(&fast) {
        if !k.arrived.is_empty() {
            delivered += 1;
        }
        if k.arrived.iter().any(|(_, b)| is_icmp_error(b)) {
            errors += 1;
        }
        if f.fast {
            on_fast_path += 1;
        }
        if k.arrived != f.arrived {
            differ.push(format!(
                "{}: the kernel path delivered {}, the fast path {}",
                case.name,
                describe(&k.arrived),
                describe(&f.arrived)
            ));
        }
    }
    println!(
        "differential: {} frames, {} identical, {} different; the kernel delivered something for \
         {delivered} ({errors} with an ICMP error); {on_fast_path} took the fast path",
        corpus.len(),
        corpus.len() - differ.len(),
        differ.len()
    );
    for d in &differ {
        println!("  differs: {d}");
    }
    assert!(differ.is_empty(), "{} frames differ", differ.len());
    // The corpus tests something: the kernel answered most frames, and the programs took a
    // good share of them.
    assert!(
        delivered * 2 > corpus.len() && errors >= 20,
        "the kernel delivered something for {delivered} of {} frames, ICMP errors for {errors}",
        corpus.len()
    );
    assert!(
        on_fast_path >= 40,
        "only {on_fast_path} frames took the fast path"
    );
}

/// Sends the corpus through a fresh lab in `mode`, one frame at a time.
fn run(name: &str, mode: Mode, corpus: &[Case]) -> Vec<Seen> {
    let lab = Lab::start(name, &Spec::new(NODES, PODS, mode));
    prepare(&lab);
    let mut points: Vec<(String, OwnedFd)> = Vec::new();
    for i in 1..=NODES {
        points.push((format!("n{i}"), packet_socket(lab.node(i).netns(), UPLINK)));
        for j in 1..=PODS {
            points.push((
                format!("n{i}p{j}"),
                packet_socket(lab.pod(i, j).netns(), "eth0"),
            ));
        }
    }
    let sender = |from: From| {
        let point = match from {
            From::Pod(i, j) => format!("n{i}p{j}"),
            From::Node(i) => format!("n{i}"),
        };
        &points
            .iter()
            .find(|(p, _)| *p == point)
            .expect("a sender")
            .1
    };
    let counters = |lab: &Lab| -> Vec<Counters> {
        if mode == Mode::FastPath {
            (1..=NODES).map(|i| lab.fast_path_counters(i)).collect()
        } else {
            Vec::new()
        }
    };
    drain(&points, Duration::ZERO);
    corpus
        .iter()
        .map(|case| {
            let before = counters(&lab);
            send(sender(case.from), &case.frame, &case.name);
            let mut arrived = drain(&points, case.at_least);
            arrived.sort();
            let fast = counters(&lab)
                .iter()
                .zip(&before)
                .any(|(after, before)| after.since(before).fast() > 0);
            Seen { arrived, fast }
        })
        .collect()
}

/// Every pod pair has talked, so neighbours are resolved and the agents know every pod; n1p1
/// gets its large MTU.
fn prepare(lab: &Lab) {
    let p11 = lab.pod(1, 1);
    let mtu = BIG_MTU.to_string();
    p11.ns().ip(&["link", "set", "eth0", "mtu", &mtu]);
    lab.node(1)
        .ns()
        .ip(&["link", "set", &p11.host_veth(), "mtu", &mtu]);
    for a in lab.pods() {
        for b in lab.pods() {
            if a.label() == b.label() {
                continue;
            }
            for to in [IpAddr::from(a.ip()), IpAddr::from(a.ip6())] {
                let s = lab.ping(b, to, 2, Duration::from_millis(50));
                assert_eq!(s.received, 2, "warm-up {} → {to}", b.label());
            }
        }
    }
    if lab.mode() == Mode::FastPath {
        let before = [1, 2].map(|i| lab.fast_path_counters(i));
        lab.ping(p11, lab.pod(2, 1).ip(), 3, Duration::from_millis(50));
        for i in [1, 2] {
            let c = lab.fast_path_counters(i).since(&before[i - 1]);
            assert!(
                c.fast() >= 3,
                "n1p1 → n2p1 on the fast path at n{i}: {:?}",
                c.nonzero()
            );
        }
    }
}

/// The arrivals, short: where, how long, what.
fn describe(arrived: &[(String, Vec<u8>)]) -> String {
    if arrived.is_empty() {
        return "nothing".into();
    }
    let mut by_point: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (point, f) in arrived {
        let hex = f.iter().take(64).fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        by_point
            .entry(point)
            .or_default()
            .push(format!("{} B {hex}", f.len()));
    }
    by_point
        .iter()
        .map(|(p, fs)| format!("[{p}: {}]", fs.join(", ")))
        .collect::<Vec<_>>()
        .join(" ")
}
