//! Traffic between two pods of a lab: TCP throughput with `iperf3` (client in pod n1p1,
//! server in pod n2p1) and UDP request/response measured in-process (one thread in each pod's
//! namespace, both pinned to one CPU).
//!
//! Everything here is bounded: `iperf3` runs for a fixed time under a kill timeout, the
//! request/response loop for a fixed time with a receive timeout per transaction, and both
//! only ever address the lab's own pods.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use super::{Family, host};
use hostgw_tests::lab::{Lab, Pod, output_within};

/// A failed traffic measurement.
#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    /// `iperf3` failed or printed something unexpected.
    #[error("iperf3 {what}: {detail}")]
    Iperf { what: &'static str, detail: String },
    /// The request/response exchange failed.
    #[error("request/response between {from} and {to}: {detail}")]
    Rr {
        from: String,
        to: String,
        detail: String,
    },
}

/// The TCP port of the `iperf3` server.
const IPERF_PORT: u16 = 5201;
/// The UDP port of the request/response server.
const RR_PORT: u16 = 7001;

/// An `iperf3` server, killed on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ignored = self.0.kill();
        let _ignored = self.0.wait();
    }
}

fn listening(pod: &Pod) -> bool {
    let mut cmd = pod.ns().command("ss");
    cmd.args(["-Hltn", &format!("sport = :{IPERF_PORT}")]);
    let out = output_within(&mut cmd, Duration::from_secs(10));
    out.status.success() && !out.stdout.is_empty()
}

/// TCP throughput in Gbit/s from pod n1p1 to pod n2p1 over `family`, over `streams` parallel
/// connections for `seconds` (after `iperf3`'s one omitted second of slow start), as the
/// receiver counted it.
pub fn tcp_gbps(
    lab: &Lab,
    family: Family,
    streams: u32,
    seconds: u32,
) -> Result<f64, TrafficError> {
    let (from, to) = (lab.pod(1, 1), lab.pod(2, 1));
    let ip = match family {
        Family::V4 => to.ip().to_string(),
        Family::V6 => to.ip6().to_string(),
    };
    let port = IPERF_PORT.to_string();
    let server = to
        .ns()
        .command("iperf3")
        .args(["-s", "-1", "-B", &ip, "-p", &port])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| TrafficError::Iperf {
            what: "server",
            detail: e.to_string(),
        })?;
    let _server = Server(server);
    let start = Instant::now();
    while !listening(to) {
        if start.elapsed() > Duration::from_secs(10) {
            return Err(TrafficError::Iperf {
                what: "server",
                detail: "not listening after 10 s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut client = from.ns().command("iperf3");
    client.args([
        "-c",
        &ip,
        "-p",
        &port,
        "-t",
        &seconds.to_string(),
        "-O",
        "1",
        "-P",
        &streams.to_string(),
        "-J",
    ]);
    let out = output_within(&mut client, Duration::from_secs(u64::from(seconds) + 30));
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| TrafficError::Iperf {
            what: "client",
            detail: format!("{e}: {}", String::from_utf8_lossy(&out.stderr)),
        })?;
    if let Some(error) = json["error"].as_str() {
        return Err(TrafficError::Iperf {
            what: "client",
            detail: error.to_owned(),
        });
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .ok_or_else(|| TrafficError::Iperf {
            what: "client",
            detail: "no end.sum_received.bits_per_second in its JSON".into(),
        })
}

/// What a request/response run measured.
#[derive(Debug, Clone, Copy)]
pub struct RrResult {
    pub transactions_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Requests that got no answer within the receive timeout.
    pub lost: u64,
}

/// The `q`-quantile (0–1, nearest rank) of sorted `v`.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// 64-byte UDP request/response from pod n1p1 to pod n2p1 for `duration` (after a short
/// warm-up that also lets the first packets of the flow take the kernel path), one request
/// in flight, with client and server both pinned to `cpu`.
pub fn request_response(
    lab: &Lab,
    cpu: usize,
    duration: Duration,
) -> Result<RrResult, TrafficError> {
    let (from, to) = (lab.pod(1, 1), lab.pod(2, 1));
    let err = |detail: String| TrafficError::Rr {
        from: from.label(),
        to: to.label(),
        detail,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = {
        let (ns, ip, stop) = (to.netns().to_owned(), to.ip(), stop.clone());
        std::thread::spawn(move || -> Result<(), String> {
            hostgw_agent::netns::enter(&ns).map_err(|e| e.to_string())?;
            host::pin(0, cpu).map_err(|e| e.to_string())?;
            let sock = UdpSocket::bind((ip, RR_PORT)).map_err(|e| format!("bind: {e}"))?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let _ignored = ready_tx.send(());
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                match sock.recv_from(&mut buf) {
                    Ok((n, peer)) => {
                        let _ignored = sock.send_to(&buf[..n], peer);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(format!("recv: {e}")),
                }
            }
            Ok(())
        })
    };
    if ready_rx.recv_timeout(Duration::from_secs(10)).is_err() {
        stop.store(true, Ordering::Relaxed);
        let e = server
            .join()
            .map_or_else(|_| "panicked".into(), |r| format!("{r:?}"));
        return Err(err(format!("the server did not start: {e}")));
    }

    let client = {
        let (ns, dst) = (
            from.netns().to_owned(),
            SocketAddr::from((to.ip(), RR_PORT)),
        );
        std::thread::spawn(move || -> Result<(Vec<f64>, u64, f64), String> {
            hostgw_agent::netns::enter(&ns).map_err(|e| e.to_string())?;
            host::pin(0, cpu).map_err(|e| e.to_string())?;
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
            sock.connect(dst).map_err(|e| format!("connect: {e}"))?;
            sock.set_read_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            let request = [0x5au8; 64 - 14 - 20 - 8];
            let mut buf = [0u8; 2048];
            let mut lost = 0u64;
            let mut exchange = || -> Result<Option<Duration>, String> {
                let t = Instant::now();
                sock.send(&request).map_err(|e| format!("send: {e}"))?;
                match sock.recv(&mut buf) {
                    Ok(_) => Ok(Some(t.elapsed())),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(format!("recv: {e}")),
                }
            };
            let warmup = Instant::now();
            while warmup.elapsed() < Duration::from_millis(300) {
                exchange()?;
            }
            let mut samples = Vec::with_capacity(200_000);
            let start = Instant::now();
            while start.elapsed() < duration {
                match exchange()? {
                    Some(d) => samples.push(d.as_nanos() as f64 / 1e3),
                    None => lost += 1,
                }
            }
            Ok((samples, lost, start.elapsed().as_secs_f64()))
        })
    };
    let result = client.join();
    stop.store(true, Ordering::Relaxed);
    let served = server.join();
    let (mut samples, lost, elapsed) = result
        .map_err(|_| err("the client panicked".into()))?
        .map_err(|e| err(format!("client: {e}")))?;
    served
        .map_err(|_| err("the server panicked".into()))?
        .map_err(|e| err(format!("server: {e}")))?;
    if samples.is_empty() {
        return Err(err(format!("no answer at all ({lost} requests lost)")));
    }
    samples.sort_by(f64::total_cmp);
    Ok(RrResult {
        transactions_per_s: samples.len() as f64 / elapsed,
        p50_us: quantile(&samples, 0.50),
        p99_us: quantile(&samples, 0.99),
        lost,
    })
}

/// Whether `name` is on `PATH` (`iperf3`, `ss`, `ethtool`, `nft` are needed).
pub fn have(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&v, 0.5) - 50.0).abs() < f64::EPSILON);
        assert!((quantile(&v, 0.99) - 99.0).abs() < f64::EPSILON);
        assert!((quantile(&[7.0], 0.99) - 7.0).abs() < f64::EPSILON);
        assert!(quantile(&[], 0.5).is_nan());
    }
}
