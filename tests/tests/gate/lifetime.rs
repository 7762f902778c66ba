//! What conntrack must keep seeing: fast-pathed flows' entries live as long as the flows do
//! (the programs keep an entry alive as conntrack would if it saw the packets they forward),
//! and a flow with a helper is the helper's, packet by packet.

use super::*;

/// How often the servers send, and for how long: four times the shortened timeouts.
const GAP: Duration = Duration::from_millis(100);
const MESSAGES: usize = 80;

/// Conntrack's timeouts shortened to 2 s on both nodes (UDP, UDP streams, TCP established
/// and `SYN_RECV`), and on n1 (the clients' node) a
/// ruleset that accepts established and related flows and drops new ones arriving from the
/// uplink. A UDP server that streams to its client after one request, and a TCP server that
/// pushes a message every 100 ms to a client that only reads, both for 8 s: every datagram and
/// every message arrives, on the fast path. Without the entries kept alive, conntrack forgets
/// each flow after 2 s, the server's next packet is a new flow from the uplink, and n1 drops
/// it.
#[test]
fn flows_longer_than_the_conntrack_timeouts_keep_working() {
    let mut lab = lab("glife");
    for i in [1, 2] {
        let ns = lab.node(i).ns();
        for (key, value) in [
            ("net.netfilter.nf_conntrack_udp_timeout", "2"),
            ("net.netfilter.nf_conntrack_udp_timeout_stream", "2"),
            ("net.netfilter.nf_conntrack_tcp_timeout_established", "2"),
            ("net.netfilter.nf_conntrack_tcp_timeout_syn_recv", "2"),
        ] {
            let mut cmd = ns.command("sysctl");
            cmd.args(["-qw", &format!("{key}={value}")]);
            hostgw_tests::sh(&mut cmd);
        }
        nft(&lab, i, &cluster_ip_rules(lab.pod(2, 1).ip()));
    }
    for i in [1, 2] {
        restart_with_gate(&mut lab, i, "on", true);
    }
    warm_up(&lab, (1, 1), (2, 2));
    // After the warm-up, which has n2 ping n1's pod.
    nft(
        &lab,
        1,
        &format!(
            "table inet hostgw_test_filter {{
                chain forward {{
                    type filter hook forward priority 0; policy accept;
                    ct state established,related accept
                    iifname \"{}\" ct state new drop
                }}
            }}",
            lab::UPLINK
        ),
    );
    let server = lab.pod(2, 2);
    let client = lab.pod(1, 1).netns().to_owned();

    let before = lab.fast_path_counters(1);
    let to = SocketAddr::from((server.ip(), BACKEND_PORT));
    let streamer = udp_streamer(server.netns(), to);
    let got = udp_stream_client(&client, to);
    streamer.join().expect("the UDP streamer panicked");
    let c = lab.fast_path_counters(1).since(&before);
    println!(
        "UDP stream of {MESSAGES} datagrams every {GAP:?}: {} arrived; n1 {:?}",
        got.len(),
        c.nonzero()
    );
    assert_eq!(
        got,
        (0..MESSAGES).collect::<Vec<_>>(),
        "the datagrams that arrived of the UDP stream; n1 {:?}\n{}",
        c.nonzero(),
        lab.agent_log(1)
    );
    assert!(
        c.get(hook::INGRESS_TC, reason::FAST_INGRESS) >= MESSAGES as u64 - 5,
        "n1 did not deliver the stream on the fast path: {:?}",
        c.nonzero()
    );

    let before = lab.fast_path_counters(1);
    let pusher = tcp_pusher(server.netns(), to);
    let got = tcp_reader(&client, to);
    pusher.join().expect("the TCP pusher panicked");
    let c = lab.fast_path_counters(1).since(&before);
    println!(
        "TCP pushes of {MESSAGES} messages every {GAP:?}: {} arrived; n1 {:?}",
        got.len(),
        c.nonzero()
    );
    assert_eq!(
        got,
        (0..MESSAGES).collect::<Vec<_>>(),
        "the messages that arrived of the TCP pushes; n1 {:?}\n{}",
        c.nonzero(),
        lab.agent_log(1)
    );
    assert!(
        c.get(hook::INGRESS_TC, reason::FAST_INGRESS) >= MESSAGES as u64 - 5,
        "n1 did not deliver the pushes on the fast path: {:?}",
        c.nonzero()
    );
}

/// In namespace `netns`: waits for one datagram on `addr`, then sends [`MESSAGES`] numbered
/// datagrams back to its sender, one every [`GAP`].
fn udp_streamer(netns: &str, addr: SocketAddr) -> JoinHandle<()> {
    let netns = netns.to_owned();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        hostgw_agent::netns::enter(&netns).unwrap_or_else(|e| panic!("entering {netns}: {e}"));
        let socket = UdpSocket::bind(addr).expect("binding the UDP streamer");
        socket
            .set_read_timeout(Some(TCP_TIMEOUT))
            .expect("a read timeout");
        ready_tx.send(()).expect("the test waits");
        let mut buf = [0; 64];
        let (_, peer) = socket.recv_from(&mut buf).expect("the client's request");
        for k in 0..MESSAGES {
            socket
                .send_to(format!("{k:04}").as_bytes(), peer)
                .expect("sending to the client");
            std::thread::sleep(GAP);
        }
    });
    ready_rx
        .recv_timeout(TCP_TIMEOUT)
        .expect("the UDP streamer is listening");
    thread
}

/// From namespace `netns`: one request to `to`, then the numbers of the datagrams that arrive
/// until none has for a second.
fn udp_stream_client(netns: &str, to: SocketAddr) -> Vec<usize> {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        hostgw_agent::netns::enter(&netns).unwrap_or_else(|e| panic!("entering {netns}: {e}"));
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("a client socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("a read timeout");
        socket.send_to(b"start", to).expect("the request");
        let mut buf = [0; 64];
        let mut got = Vec::new();
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            assert_eq!(from, to, "a datagram from elsewhere");
            let k = std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|s| s.parse().ok());
            got.push(k.expect("a numbered datagram"));
        }
        got
    })
    .join()
    .expect("the UDP client panicked")
}

/// In namespace `netns`: accepts one connection on `addr` and writes [`MESSAGES`] numbered
/// lines to it, one every [`GAP`].
fn tcp_pusher(netns: &str, addr: SocketAddr) -> JoinHandle<()> {
    let netns = netns.to_owned();
    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        hostgw_agent::netns::enter(&netns).unwrap_or_else(|e| panic!("entering {netns}: {e}"));
        let listener = TcpListener::bind(addr).expect("binding the TCP pusher");
        ready_tx.send(()).expect("the test waits");
        let (mut stream, _) = listener.accept().expect("the client connects");
        stream
            .set_write_timeout(Some(TCP_TIMEOUT))
            .expect("a write timeout");
        for k in 0..MESSAGES {
            // A reader that stopped reading is the test's failure to report, not this thread's.
            if stream.write_all(format!("{k:04}\n").as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(GAP);
        }
    });
    ready_rx
        .recv_timeout(TCP_TIMEOUT)
        .expect("the TCP pusher is listening");
    thread
}

/// From namespace `netns`: connects to `to` and reads numbered lines until the connection
/// ends or nothing arrives for two seconds; the numbers read.
fn tcp_reader(netns: &str, to: SocketAddr) -> Vec<usize> {
    let netns = netns.to_owned();
    std::thread::spawn(move || {
        hostgw_agent::netns::enter(&netns).unwrap_or_else(|e| panic!("entering {netns}: {e}"));
        let mut stream = TcpStream::connect_timeout(&to, TCP_TIMEOUT).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("a read timeout");
        let mut text = String::new();
        let mut buf = [0; 256];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        text.lines().filter_map(|l| l.parse().ok()).collect()
    })
    .join()
    .expect("the TCP reader panicked")
}

/// A flow with a conntrack helper (TFTP here, assigned by an nftables `ct helper` rule as
/// an admin or kube-proxy would for FTP or SIP) must be seen by the helper packet by packet:
/// with the gate on it never takes the fast path, though conntrack has seen its replies.
#[test]
fn a_flow_with_a_conntrack_helper_stays_on_the_stack() {
    const TFTP: u16 = 69;
    let mut lab = lab("ghelper");
    for i in [1, 2] {
        nft(&lab, i, &cluster_ip_rules(lab.pod(2, 1).ip()));
        nft(
            &lab,
            i,
            "table inet hostgw_test_helper {
                ct helper tftp-standard { type \"tftp\" protocol udp; }
                chain prerouting {
                    type filter hook prerouting priority 0; policy accept;
                    udp dport 69 ct helper set \"tftp-standard\"
                }
            }",
        );
        restart_with_gate(&mut lab, i, "on", true);
    }
    warm_up(&lab, (1, 1), (2, 2));
    let server = lab.pod(2, 2);
    let _tftp = EchoServer::start(server.netns(), SocketAddrV4::new(server.ip(), TFTP));
    let _plain = EchoServer::start(server.netns(), SocketAddrV4::new(server.ip(), BACKEND_PORT));
    let client = lab.pod(1, 1).netns().to_owned();

    let exchange = |port: u16| {
        let before = lab.fast_path_counters(1);
        let to = SocketAddrV4::new(server.ip(), port);
        let replies = udp_exchange(&client, to, 20);
        assert_udp_from(&lab, &replies, to, &format!("UDP to port {port}"));
        let c = lab.fast_path_counters(1).since(&before);
        println!("UDP to port {port}, 20 rounds: n1 {:?}", c.nonzero());
        c
    };
    // The same exchange without a helper takes the fast path: the test can tell.
    let plain = exchange(BACKEND_PORT);
    assert!(
        plain.reason(reason::CT_ESTABLISHED) >= 30,
        "a plain UDP flow on the fast path: {:?}",
        plain.nonzero()
    );
    let helped = exchange(TFTP);
    assert_eq!(
        (helped.fast(), helped.reason(reason::CT_ESTABLISHED)),
        (0, 0),
        "the TFTP flow, which has a helper, took the fast path: {:?}",
        helped.nonzero()
    );
    assert!(
        helped.reason(reason::CT_UNREPLIED) >= 30,
        "the TFTP flow's packets went to the stack for its helper: {:?}",
        helped.nonzero()
    );
}
