//! Echo servers and clients in the pods' namespaces: every request must come back from the
//! address it was sent to.

use super::*;

/// A TCP and a UDP echo server on `addr` inside a namespace, on their own threads; stopped and
/// joined on drop. Each remembers the peers it served.
pub(super) struct EchoServer {
    what: String,
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<(Proto, SocketAddr)>>>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoServer {
    pub(super) fn start(netns: &str, addr: impl Into<SocketAddr>) -> Self {
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
    pub(super) fn peers(&self, proto: Proto) -> Vec<SocketAddr> {
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

pub(super) fn serve_tcp(
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

pub(super) fn echo_connection(mut stream: TcpStream, stop: &AtomicBool) -> std::io::Result<()> {
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

pub(super) fn serve_udp(
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
pub(super) enum UdpReply {
    /// The echo, from this address.
    From(SocketAddr),
    /// No echo within [`UDP_REPLY_TIMEOUT`].
    Nothing,
}

/// From one unconnected UDP socket in namespace `netns`, sends `rounds` datagrams to `to`,
/// each after the previous one's echo (or its timeout); where each echo came from. The socket
/// is unconnected so that an echo from an unexpected address is seen, not filtered out.
pub(super) fn udp_exchange(netns: &str, to: impl Into<SocketAddr>, rounds: usize) -> Vec<UdpReply> {
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
pub(super) fn tcp_exchange(
    netns: &str,
    to: impl Into<SocketAddr>,
    rounds: usize,
) -> Result<(), String> {
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
pub(super) fn assert_udp_from(
    lab: &Lab,
    replies: &[UdpReply],
    from: impl Into<SocketAddr>,
    what: &str,
) {
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
pub(super) fn assert_peers(server: &EchoServer, proto: Proto, ip: impl Into<IpAddr>, what: &str) {
    let (peers, ip) = (server.peers(proto), ip.into());
    assert!(
        !peers.is_empty() && peers.iter().all(|p| p.ip() == ip),
        "{what}: the server saw {proto:?} clients {peers:?}, expected all from {ip}"
    );
}

// ---- the tests ----
