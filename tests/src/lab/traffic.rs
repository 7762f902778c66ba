//! Traffic: pings, traceroutes and verified TCP transfers between the lab's pods, and the
//! parsing of the tools' output. Every helper checks that it only sends to addresses of the
//! lab.

use std::{
    fmt::Display,
    io::{Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    process::{Child, Output, Stdio},
    str::FromStr,
    sync::mpsc,
    time::{Duration, Instant},
};

use super::{Counters, Family, Lab, Mode, Pod, output_within};

/// What `ping -q` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingStats {
    pub sent: u32,
    pub received: u32,
}

/// A TCP transfer that arrived intact.
#[derive(Debug, Clone, Copy)]
pub struct Transfer {
    pub bytes: u64,
    /// From the connection being accepted to the receiver seeing the end of the stream.
    pub elapsed: Duration,
}

impl Transfer {
    /// Throughput in megabits per second.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A `ping` running in the background; killed on drop if still running.
#[derive(Debug)]
pub struct PingJob {
    child: Option<Child>,
    what: String,
}

impl PingJob {
    /// Waits up to `timeout` for the ping to end and returns what it reported.
    pub fn wait(mut self, timeout: Duration) -> PingStats {
        let mut child = self.child.take().expect("ping job not yet waited for");
        let start = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ignored = child.kill();
                    let _ignored = child.wait();
                    panic!("{} still running after {timeout:?}", self.what);
                }
                Err(e) => panic!("waiting for {}: {e}", self.what),
            }
        }
        // `ping -q` prints a few lines: the pipe cannot have filled up.
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("reading the output of {}: {e}", self.what));
        parse_ping(&self.what, &out)
    }
}

impl Drop for PingJob {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ignored = child.kill();
            let _ignored = child.wait();
        }
    }
}

impl Lab {
    /// `ping -c count -i interval` from `from` to `to` (IPv4 or IPv6); what it reported.
    pub fn ping(
        &self,
        from: &Pod,
        to: impl Into<IpAddr>,
        count: u32,
        interval: Duration,
    ) -> PingStats {
        self.ping_spawn(from, to, count, interval)
            .wait(ping_budget(count, interval))
    }

    /// Starts `ping -c count -i interval` from `from` to `to` in the background.
    pub fn ping_spawn(
        &self,
        from: &Pod,
        to: impl Into<IpAddr>,
        count: u32,
        interval: Duration,
    ) -> PingJob {
        let to = to.into();
        self.assert_lab_address(to);
        let mut cmd = from.ns().command("ping");
        cmd.args([
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            &format!("{:.3}", interval.as_secs_f64()),
            "-W",
            "1",
            &to.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let what = format!("ping from {} to {to}", from.label());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        PingJob {
            child: Some(child),
            what,
        }
    }

    /// Every ordered pair of pods pings over `family`, all pairs at once, three echoes each.
    /// Returns how many pairs pinged and a line for each pair that did not get every echo.
    pub fn unanswered_pod_pairs(&self, family: Family) -> (usize, Vec<String>) {
        let mut jobs = Vec::new();
        for from in &self.pods {
            for to in &self.pods {
                if from.addr(family) != to.addr(family) {
                    let job = self.ping_spawn(from, to.addr(family), 3, Duration::from_millis(200));
                    jobs.push((from.label(), to.label(), job));
                }
            }
        }
        let pairs = jobs.len();
        let failed = jobs
            .into_iter()
            .filter_map(|(from, to, job)| {
                let stats = job.wait(Duration::from_secs(20));
                (stats.sent != 3 || stats.received != stats.sent)
                    .then(|| format!("{from} → {to}: {stats:?}"))
            })
            .collect();
        (pairs, failed)
    }

    /// Pings pod n1p1 → n2p1 over `family` `count` times at 100 pps after a warm-up of three,
    /// panicking unless every echo is answered. Returns, for n1 and n2, how many datagrams of
    /// `family` the kernel's stack forwarded meanwhile ([`Lab::kernel_forwarded`]) and how the
    /// programs' counters grew (`None` in [`Mode::KernelOnly`]).
    pub fn forwarding_during_pings(
        &self,
        family: Family,
        count: u32,
    ) -> [(u64, Option<Counters>); 2] {
        let (from, to) = (self.pod(1, 1), self.pod(2, 1).addr(family));
        let ping = |n: u32, interval_ms: u64, what: &str| {
            let stats = self.ping(from, to, n, Duration::from_millis(interval_ms));
            assert!(
                stats.sent == n && stats.received == n,
                "{what} n1p1 → n2p1 over {}: {stats:?} of {n}\n{}",
                family.label(),
                self.all_agent_logs()
            );
        };
        // The warm-up resolves neighbours and lets the agents learn endpoints and MACs.
        ping(3, 200, "warm-up ping");
        let counters = |i| (self.mode == Mode::FastPath).then(|| self.fast_path_counters(i));
        let before = [1, 2].map(|i| (self.kernel_forwarded(i, family), counters(i)));
        ping(count, 10, "ping");
        let after = [1, 2].map(|i| (self.kernel_forwarded(i, family), counters(i)));
        [0, 1].map(|k| {
            let grew = match (&after[k].1, &before[k].1) {
                (Some(a), Some(b)) => Some(a.since(b)),
                _ => None,
            };
            (after[k].0 - before[k].0, grew)
        })
    }

    /// The hops of `traceroute -n -q 1 -w 1 -m 8` (with `-6` for an IPv6 `to`) from `from` to
    /// `to`; `None` for a `*`.
    pub fn traceroute<A>(&self, from: &Pod, to: A) -> Vec<Option<A>>
    where
        A: Into<IpAddr> + FromStr + Display + Copy,
    {
        let family = if to.into().is_ipv6() { "-6" } else { "-4" };
        self.assert_lab_address(to.into());
        let mut cmd = from.ns().command("traceroute");
        cmd.args([
            family,
            "-n",
            "-q",
            "1",
            "-w",
            "1",
            "-m",
            "8",
            &to.to_string(),
        ]);
        let out = output_within(&mut cmd, Duration::from_secs(30));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_traceroute(&String::from_utf8_lossy(&out.stdout))
    }

    /// Sends `bytes` of a deterministic pseudo-random stream over TCP from pod `from` to pod
    /// `to` and panics unless exactly those bytes arrive (length and hash compared). Bounded:
    /// a minute at most, plus ten seconds per idle socket operation.
    pub fn tcp_transfer(&self, from: &Pod, to: &Pod, bytes: u64) -> Transfer {
        tcp_transfer(
            (from.netns(), &from.label()),
            (to.netns(), &to.label(), to.ip().into()),
            bytes,
        )
    }

    /// [`Lab::tcp_transfer`] over IPv6, to `to`'s IPv6 address.
    pub fn tcp_transfer6(&self, from: &Pod, to: &Pod, bytes: u64) -> Transfer {
        assert!(self.ipv6, "lab {} is IPv4-only", self.name);
        tcp_transfer(
            (from.netns(), &from.label()),
            (to.netns(), &to.label(), to.ip6().into()),
            bytes,
        )
    }

    /// Panics unless `ip` is an address of the lab (a pod, a gateway or an uplink).
    fn assert_lab_address(&self, ip: IpAddr) {
        let ours = match ip {
            IpAddr::V4(ip) => {
                self.pods.iter().any(|p| p.ip() == ip)
                    || self
                        .nodes
                        .iter()
                        .any(|n| n.gateway() == ip || n.uplink_ip() == ip)
            }
            IpAddr::V6(ip) => {
                self.ipv6
                    && (self.pods.iter().any(|p| p.ip6() == ip)
                        || self
                            .nodes
                            .iter()
                            .any(|n| n.gateway6() == ip || n.uplink_ip6() == ip))
            }
        };
        assert!(ours, "{ip} is not an address of lab {}", self.name);
    }
}

fn parse_ping(what: &str, out: &Output) -> PingStats {
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exit code 1 means "no reply", which the caller judges; 2 is an error.
    let line = stdout
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .filter(|_| out.status.code().is_some_and(|c| c <= 1))
        .unwrap_or_else(|| {
            panic!(
                "{what} failed: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let number = |suffix: &str| -> u32 {
        line.split(", ")
            .find_map(|part| part.strip_suffix(suffix)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{what}: no `{suffix}` in {line:?}"))
    };
    PingStats {
        sent: number(" packets transmitted"),
        received: number(" received"),
    }
}

/// The hops of `traceroute -n -q 1` output; `None` for a `*`.
pub fn parse_traceroute<A: FromStr>(text: &str) -> Vec<Option<A>> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.parse::<u32>().ok()?;
            let hop = words.next()?;
            Some(hop.parse().ok())
        })
        .collect()
}

/// Long enough for `count` pings at `interval` and the last reply.
fn ping_budget(count: u32, interval: Duration) -> Duration {
    interval * count + Duration::from_secs(10)
}

// ---- TCP transfers ----

/// A deterministic pseudo-random byte stream (xorshift64*).
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let word = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// A 64-bit hash of a byte stream that does not depend on how the stream is split up: FNV-1a
/// over little-endian 8-byte words, then the length.
#[derive(Debug)]
pub struct StreamHash {
    h: u64,
    carry: [u8; 8],
    carry_len: usize,
    len: u64,
}

impl Default for StreamHash {
    fn default() -> Self {
        Self {
            h: 0xcbf2_9ce4_8422_2325,
            carry: [0; 8],
            carry_len: 0,
            len: 0,
        }
    }
}

impl StreamHash {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn mix(&mut self, word: u64) {
        self.h = (self.h ^ word).wrapping_mul(Self::PRIME).rotate_left(23);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.carry_len > 0 {
            let take = (8 - self.carry_len).min(data.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&data[..take]);
            self.carry_len += take;
            data = &data[take..];
            if self.carry_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.carry));
            self.carry_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carry_len = rest.len();
    }

    /// `(length, hash)`.
    pub fn finish(mut self) -> (u64, u64) {
        if self.carry_len > 0 {
            self.carry[self.carry_len..].fill(0);
            self.mix(u64::from_le_bytes(self.carry));
        }
        let len = self.len;
        self.mix(len);
        (len, self.h)
    }
}

const TRANSFER_TIMEOUT: Duration = Duration::from_mins(1);
const SOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const CHUNK: usize = 256 * 1024;

/// The transfer of [`Lab::tcp_transfer`], between namespaces named `from.0` and `to.0`.
fn tcp_transfer(from: (&str, &str), to: (&str, &str, IpAddr), bytes: u64) -> Transfer {
    let (from_ns, from_label) = (from.0.to_owned(), from.1.to_owned());
    let (to_ns, to_label, to_ip) = (to.0.to_owned(), to.1.to_owned(), to.2);
    let what = format!("TCP transfer of {bytes} bytes from {from_label} to {to_label} ({to_ip})");

    let (port_tx, port_rx) = mpsc::channel::<u16>();
    let receiver = std::thread::spawn(move || -> Result<(u64, u64, Duration), String> {
        hostgw_agent::netns::enter(&to_ns).map_err(|e| format!("entering {to_ns}: {e}"))?;
        let listener =
            TcpListener::bind((to_ip, 0)).map_err(|e| format!("binding {to_ip}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let _ignored = port_tx.send(port);
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("non-blocking listener: {e}"))?;
        let start = Instant::now();
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if start.elapsed() > SOCKET_IDLE_TIMEOUT {
                        return Err(format!("no connection within {SOCKET_IDLE_TIMEOUT:?}"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        let accepted = Instant::now();
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(SOCKET_IDLE_TIMEOUT)))
            .map_err(|e| format!("socket options: {e}"))?;
        let mut hash = StreamHash::default();
        let mut buf = vec![0; CHUNK];
        loop {
            let n = stream
                .read(&mut buf)
                .map_err(|e| format!("read after {} bytes: {e}", hash.len))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            if accepted.elapsed() > TRANSFER_TIMEOUT {
                return Err(format!("still receiving after {TRANSFER_TIMEOUT:?}"));
            }
        }
        let elapsed = accepted.elapsed();
        let (len, h) = hash.finish();
        Ok((len, h, elapsed))
    });

    let Ok(port) = port_rx.recv_timeout(Duration::from_secs(10)) else {
        let result = receiver.join();
        panic!("{what}: the receiver did not start listening: {result:?}");
    };

    let sender = std::thread::spawn(move || -> Result<(u64, u64), String> {
        hostgw_agent::netns::enter(&from_ns).map_err(|e| format!("entering {from_ns}: {e}"))?;
        let addr = SocketAddr::from((to_ip, port));
        let mut stream = TcpStream::connect_timeout(&addr, SOCKET_IDLE_TIMEOUT)
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream
            .set_write_timeout(Some(SOCKET_IDLE_TIMEOUT))
            .map_err(|e| format!("socket options: {e}"))?;
        let start = Instant::now();
        let mut source = Stream(0x9e37_79b9_7f4a_7c15);
        let mut hash = StreamHash::default();
        let mut buf = vec![0; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = usize::try_from(left.min(CHUNK as u64)).expect("chunk fits usize");
            source.fill(&mut buf[..n]);
            stream
                .write_all(&buf[..n])
                .map_err(|e| format!("write after {} bytes: {e}", bytes - left))?;
            hash.update(&buf[..n]);
            left -= n as u64;
            if start.elapsed() > TRANSFER_TIMEOUT {
                return Err(format!("still sending after {TRANSFER_TIMEOUT:?}"));
            }
        }
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        // Wait for the receiver to close, so the data is known to have left.
        let _ignored = stream.set_read_timeout(Some(SOCKET_IDLE_TIMEOUT));
        let _ignored = stream.read(&mut buf);
        Ok(hash.finish())
    });

    let sent = sender
        .join()
        .unwrap_or_else(|_| panic!("{what}: the sender panicked"));
    let received = receiver
        .join()
        .unwrap_or_else(|_| panic!("{what}: the receiver panicked"));
    let (sent_len, sent_hash) = sent.unwrap_or_else(|e| panic!("{what}: sender: {e}"));
    let (recv_len, recv_hash, elapsed) =
        received.unwrap_or_else(|e| panic!("{what}: receiver: {e}"));
    assert_eq!(sent_len, bytes, "{what}: the sender sent {sent_len} bytes");
    assert_eq!(
        recv_len, sent_len,
        "{what}: {recv_len} bytes arrived of {sent_len}"
    );
    assert_eq!(
        recv_hash, sent_hash,
        "{what}: the data arrived corrupted (hash {recv_hash:#x}, sent {sent_hash:#x})"
    );
    Transfer {
        bytes: recv_len,
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{Ipv4Addr, Ipv6Addr},
        process::Output,
    };

    use super::*;

    #[test]
    fn parses_ping_and_traceroute() {
        let trace = "traceroute to 10.1.2.2 (10.1.2.2), 8 hops max, 60 byte packets\n \
                     1  10.1.1.1  0.050 ms\n 2  *\n 3  10.1.2.2  0.040 ms\n";
        assert_eq!(
            parse_traceroute(trace),
            vec![
                Some(Ipv4Addr::new(10, 1, 1, 1)),
                None,
                Some(Ipv4Addr::new(10, 1, 2, 2))
            ]
        );
        let trace6 = "traceroute to fd00:10:1:2::2 (fd00:10:1:2::2), 8 hops max, 80 byte \
                      packets\n 1  fd00:10:1:1::1  0.05 ms\n 2  *\n";
        assert_eq!(
            parse_traceroute::<Ipv6Addr>(trace6),
            vec![Some("fd00:10:1:1::1".parse().unwrap()), None]
        );
        let ping = Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(0),
            stdout: b"--- 10.1.2.2 ping statistics ---\n5 packets transmitted, 4 received, \
                      20% packet loss, time 4005ms\nrtt min/avg/max/mdev = 0.1/0.1/0.1/0.0 ms\n"
                .to_vec(),
            stderr: Vec::new(),
        };
        assert_eq!(
            parse_ping("ping", &ping),
            PingStats {
                sent: 5,
                received: 4
            }
        );
    }

    #[test]
    fn stream_hash_ignores_how_the_stream_is_split() {
        let mut data = vec![0; 1000];
        Stream(1).fill(&mut data);
        let mut whole = StreamHash::default();
        whole.update(&data);
        let mut parts = StreamHash::default();
        for piece in data.chunks(7) {
            parts.update(piece);
        }
        assert_eq!(whole.finish(), parts.finish());
        let mut changed = data.clone();
        changed[500] ^= 1;
        let mut other = StreamHash::default();
        other.update(&changed);
        let mut again = StreamHash::default();
        again.update(&data);
        assert_ne!(other.finish(), again.finish());
    }
}
