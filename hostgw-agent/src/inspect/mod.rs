//! The operator's view: reading the pinned maps (and the kernel's routes and neighbours) into
//! tables or JSON for `hostgw-agent routes|endpoints|stats|status`. Works whether or not the
//! daemon runs: everything comes from the pins under `--pin-dir` and from the kernel.
//! Routes and endpoints cover both families (`ROUTES_V4`/`ROUTES_V6`,
//! `ENDPOINTS_V4`/`ENDPOINTS_V6`), IPv4 rows first. Read-only.

pub mod http;
pub mod metrics;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use aya::{
    maps::{Map, MapData, PerCpuArray},
    programs::links::LinkType,
};
use hostgw_common::{
    Counter, Endpoint, ROUTE_F_FIB, ROUTE_F_RESOLVED, STATE_F_CT_GATE, STATE_F_FORWARD_V4,
    STATE_F_FORWARD_V6, STATE_F_POLICY, STATE_F_XFRM, State,
    counters::{self, family, hook, reason},
    names,
};
use ipnet::IpNet;
use serde::Serialize;

use crate::{
    dataplane::{maps, sys},
    host::{
        iface::{self, IfaceError},
        netlink::{self as kernel, KernelError},
        tc,
    },
    model::{Family, NeighState, TrieRoute},
};

/// Why a pinned map could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The pin is missing or not the expected map.
    #[error("cannot open the pinned map {path} (is the dataplane loaded with this --pin-dir?)")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Reading the map failed.
    #[error("reading map {map}")]
    Read {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// Reading routes or neighbours from the kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// An interface lookup failed.
    #[error(transparent)]
    Iface(#[from] IfaceError),
}

fn open(pin_dir: &Path, name: &'static str) -> Result<MapData, InspectError> {
    let path = pin_dir.join(name);
    MapData::from_pin(&path).map_err(|e| InspectError::Open {
        path,
        source: Box::new(e),
    })
}

fn read_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> InspectError {
    move |e| InspectError::Read {
        map,
        source: Box::new(e),
    }
}

/// The route tries, both families.
pub fn trie(pin_dir: &Path) -> Result<BTreeMap<IpNet, TrieRoute>, InspectError> {
    let mut out = BTreeMap::new();
    for family in Family::ALL {
        let name = maps::trie_map(family);
        let map = Map::LpmTrie(open(pin_dir, name)?);
        out.extend(maps::read_trie(&map, family).map_err(read_err(name))?);
    }
    Ok(out)
}

/// The endpoint tables, both families.
pub fn endpoints(pin_dir: &Path) -> Result<BTreeMap<IpAddr, Endpoint>, InspectError> {
    let mut out = BTreeMap::new();
    for family in Family::ALL {
        let name = maps::endpoint_map(family);
        let map = Map::HashMap(open(pin_dir, name)?);
        out.extend(maps::read_endpoints(&map, family).map_err(read_err(name))?);
    }
    Ok(out)
}

/// How full one route or endpoint map is, or why it could not be read.
#[derive(Debug)]
pub struct MapLevel {
    pub map: &'static str,
    pub entries: Result<usize, InspectError>,
    /// `max_entries` as the kernel has it (a pin made by another build may differ from this
    /// build's); `None` when the map cannot be opened.
    pub capacity: Option<u32>,
}

/// The fill level of every route and endpoint map, IPv4 then IPv6.
pub fn map_fills(pin_dir: &Path) -> Vec<MapLevel> {
    let level = |name: &'static str,
                 count: &dyn Fn(MapData) -> Result<usize, aya::maps::MapError>| {
        let opened = open(pin_dir, name);
        let capacity = opened
            .as_ref()
            .ok()
            .and_then(|m| m.info().ok())
            .map(|i| i.max_entries());
        MapLevel {
            map: name,
            entries: opened.and_then(|m| count(m).map_err(read_err(name))),
            capacity,
        }
    };
    let mut out = Vec::new();
    for family in Family::ALL {
        out.push(level(maps::trie_map(family), &|m| {
            maps::read_trie(&Map::LpmTrie(m), family).map(|t| t.len())
        }));
    }
    for family in Family::ALL {
        out.push(level(maps::endpoint_map(family), &|m| {
            maps::read_endpoints(&Map::HashMap(m), family).map(|e| e.len())
        }));
    }
    out
}

/// The `HOOKS` map: interface index → `HOOK_F_*`.
pub fn hooks(pin_dir: &Path) -> Result<BTreeMap<u32, u32>, InspectError> {
    let map = Map::HashMap(open(pin_dir, names::HOOKS)?);
    maps::read_hooks(&map).map_err(read_err(names::HOOKS))
}

/// The names of the `HOOK_F_*` flags set in `flags`, as `status` and the metrics show them.
pub fn hook_flag_names(flags: u32) -> Vec<&'static str> {
    [
        (hostgw_common::HOOK_F_SHARED_INGRESS, "shared_ingress"),
        (hostgw_common::HOOK_F_PORT_EGRESS, "port_egress"),
    ]
    .into_iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| n)
    .collect()
}

/// Every counter summed over CPUs, by stats index.
pub fn counters(pin_dir: &Path) -> Result<Vec<Counter>, InspectError> {
    let map = Map::PerCpuArray(open(pin_dir, names::STATS)?);
    let stats: PerCpuArray<_, Counter> =
        PerCpuArray::try_from(&map).map_err(read_err(names::STATS))?;
    (0..counters::STATS_LEN)
        .map(|i| {
            let per_cpu = stats.get(&i, 0).map_err(read_err(names::STATS))?;
            Ok(per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            }))
        })
        .collect()
}

/// The node state the agent last wrote.
pub fn state(pin_dir: &Path) -> Result<State, InspectError> {
    let map = Map::Array(open(pin_dir, names::STATE)?);
    let array: aya::maps::Array<_, State> =
        aya::maps::Array::try_from(&map).map_err(read_err(names::STATE))?;
    array.get(&0, 0).map_err(read_err(names::STATE))
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One row of `routes`.
#[derive(Debug, Serialize)]
pub struct RouteRow {
    pub cidr: String,
    /// The next hop in the trie (`None` for a kernel route the trie lacks).
    pub node_ip: Option<String>,
    pub node_mac: Option<String>,
    pub uplink: Option<String>,
    pub mtu: Option<u32>,
    /// The next hop of hostgw's kernel route for this CIDR (of the other route, for a
    /// conflict).
    pub kernel_via: Option<String>,
    /// The kernel's neighbour entry for the next hop: valid, unresolved, or missing.
    pub neighbour: String,
    /// `ok`, or what disagrees.
    pub status: String,
}

/// The trie joined with hostgw's kernel routes and the next hops' neighbour entries; and the
/// pod CIDRs the running agent (at `agent_addr`, if one answers) leaves to another route.
pub async fn routes(
    pin_dir: &Path,
    handle: &rtnetlink::Handle,
    agent_addr: std::net::SocketAddr,
) -> Result<Vec<RouteRow>, InspectError> {
    let trie = trie(pin_dir)?;
    let (ours, others) = kernel::main_routes(handle).await?;
    let kroutes: BTreeMap<IpNet, Option<IpAddr>> =
        ours.into_iter().map(|r| (r.cidr, r.via)).collect();
    let node = state(pin_dir)?.flags;
    let mut names = BTreeMap::new();
    let mut neighbours = BTreeMap::new();
    for r in trie.values() {
        if let std::collections::btree_map::Entry::Vacant(e) = names.entry(r.ifindex) {
            let link = iface::by_index(handle, r.ifindex).await.ok();
            e.insert(link.map(|l| l.name));
            for n in kernel::neighbours(handle, r.ifindex).await? {
                neighbours.insert(n.ip, n);
            }
        }
    }
    let mut rows = Vec::new();
    for (cidr, r) in &trie {
        let ip = r.node_ip;
        let via = kroutes.get(cidr).copied().flatten();
        let neighbour = match neighbours.get(&ip) {
            Some(n) if n.state == NeighState::Valid => "valid".to_owned(),
            Some(_) => "unresolved".to_owned(),
            None => "missing".to_owned(),
        };
        let inside: Vec<String> = others
            .iter()
            .filter(|o| cidr.contains(&o.cidr))
            .map(|o| o.cidr.to_string())
            .collect();
        let status = match (kroutes.get(cidr), via) {
            (None, _) => "mismatch: no kernel route".to_owned(),
            (Some(_), Some(v)) if v != ip => format!("mismatch: kernel route via {v}"),
            _ if node & STATE_F_XFRM != 0 => "stack: xfrm policies".to_owned(),
            _ if node & STATE_F_POLICY != 0 => "stack: policy routing rules".to_owned(),
            _ if r.flags & ROUTE_F_FIB != 0 => {
                format!("fib: other kernel routes {}", inside.join(", "))
            }
            _ if r.flags & ROUTE_F_RESOLVED == 0 => "unresolved: via redirect_neigh".to_owned(),
            _ => "ok".to_owned(),
        };
        rows.push(RouteRow {
            cidr: cidr.to_string(),
            node_ip: Some(ip.to_string()),
            node_mac: (r.flags & ROUTE_F_RESOLVED != 0).then(|| mac(r.node_mac)),
            uplink: names.get(&r.ifindex).cloned().flatten(),
            mtu: Some(r.mtu),
            kernel_via: via.map(|v| v.to_string()),
            neighbour,
            status,
        });
    }
    let report = agent_status(agent_addr).await;
    let conflicts: BTreeSet<IpNet> = report
        .as_ref()
        .and_then(|r| r["last_round"]["conflicts"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.as_str()?.parse().ok())
        .collect();
    // A CIDR in no trie entry: one left to another route, or one of ours the trie lacks.
    let bare = |cidr: &IpNet, via: Option<IpAddr>, status: &str| RouteRow {
        cidr: cidr.to_string(),
        node_ip: None,
        node_mac: None,
        uplink: None,
        mtu: None,
        kernel_via: via.map(|v| v.to_string()),
        neighbour: "-".to_owned(),
        status: status.to_owned(),
    };
    for cidr in &conflicts {
        let theirs = others.iter().find(|o| o.cidr == *cidr).and_then(|r| r.via);
        rows.push(bare(cidr, theirs, "conflict: foreign route"));
    }
    for (cidr, via) in &kroutes {
        if !trie.contains_key(cidr) && !conflicts.contains(cidr) {
            rows.push(bare(cidr, *via, "mismatch: not in the trie"));
        }
    }
    Ok(rows)
}

/// One row of `endpoints`.
#[derive(Debug, Serialize)]
pub struct EndpointRow {
    pub ip: String,
    pub mac: String,
    pub ifindex: u32,
    pub veth: Option<String>,
}

/// The endpoint table with interface names.
pub async fn endpoint_rows(
    pin_dir: &Path,
    handle: &rtnetlink::Handle,
) -> Result<Vec<EndpointRow>, InspectError> {
    let mut rows = Vec::new();
    for (ip, ep) in endpoints(pin_dir)? {
        rows.push(EndpointRow {
            ip: ip.to_string(),
            mac: mac(ep.mac),
            ifindex: ep.ifindex,
            veth: iface::by_index(handle, ep.ifindex)
                .await
                .ok()
                .map(|l| l.name),
        });
    }
    Ok(rows)
}

/// One counter of `stats`.
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
pub struct StatRow {
    /// `ipv4`, `ipv6`, or `other` (frames of neither family).
    pub family: &'static str,
    pub hook: &'static str,
    pub reason: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

/// Every non-zero counter by family, hook and reason (all of them with `all`).
pub fn stat_rows(pin_dir: &Path, all: bool) -> Result<Vec<StatRow>, InspectError> {
    Ok(counters(pin_dir)?
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let (f, h, r) = counters::split(i as u32);
            StatRow {
                family: family::NAMES[f as usize],
                hook: hook::NAMES[h as usize],
                reason: reason::NAMES[r as usize],
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .filter(|r| all || r.packets > 0)
        .collect())
}

/// What `status` reports from the pins and the kernel.
#[derive(Debug, Serialize)]
pub struct Status {
    pub agent_version: &'static str,
    pub kernel: String,
    /// What the kernel offers the dataplane.
    pub features: crate::dataplane::features::Features,
    pub pin_dir: String,
    pub forwarding_v4: bool,
    pub forwarding_v6: bool,
    pub conntrack_gate: bool,
    pub programs: Vec<Attachment>,
    /// Interfaces whose tc hooks hostgw shares with other tc users, and what the programs do
    /// about it there.
    pub shared_hooks: Vec<SharedHook>,
    pub maps: Vec<MapFill>,
    /// The running agent's own report (`/status` on its HTTP endpoint), when reachable.
    pub agent: Option<serde_json::Value>,
}

/// A program attached through a pinned link.
#[derive(Debug, Serialize)]
pub struct Attachment {
    pub pin: String,
    pub program: String,
    pub program_id: u32,
    pub tag: String,
    pub interface: String,
    pub mode: String,
}

/// An interface with other tc users: the `HOOKS` flags the programs follow, and the users
/// (listed now).
#[derive(Debug, Serialize)]
pub struct SharedHook {
    pub interface: String,
    pub ifindex: u32,
    pub flags: Vec<&'static str>,
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

/// How full a map is.
#[derive(Debug, Serialize)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

/// Programs behind the pinned links, with how they are attached.
pub async fn attachments(
    pin_dir: &Path,
    handle: &rtnetlink::Handle,
) -> Result<Vec<Attachment>, InspectError> {
    let mut out = Vec::new();
    let mut pins: Vec<_> = std::fs::read_dir(pin_dir.join("links"))
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    pins.sort();
    for path in pins {
        let pin = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Ok(link) = aya::programs::links::PinnedLink::from_pin(&path) else {
            continue;
        };
        let fd: aya::programs::links::FdLink = link.into();
        let Ok(info) = fd.info() else { continue };
        let prog = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == info.program_id());
        // The interface and the mode as the kernel has them; the pin's name says what was
        // meant, and names the interface once it is gone.
        let named = pin.split_once('@').map_or("", |(_, i)| i).to_owned();
        let interface = match sys::pinned_link_ifindex(&path) {
            Ok(0) | Err(_) => None,
            Ok(index) => iface::by_index(handle, index).await.ok().map(|l| l.name),
        };
        let mode = match (info.link_type(), &interface) {
            (_, None) => "interface gone".to_owned(),
            (Ok(LinkType::Xdp), Some(name)) => xdp_mode(handle, name).await,
            (Ok(LinkType::Tcx), _) => "tcx".to_owned(),
            (Ok(other), _) => format!("{other:?}").to_lowercase(),
            (Err(e), _) => format!("unknown ({e})"),
        };
        let interface = interface.unwrap_or(named);
        out.push(Attachment {
            program: prog
                .as_ref()
                .and_then(|p| p.name_as_str().map(str::to_owned))
                .unwrap_or_default(),
            program_id: info.program_id(),
            tag: prog.map_or_else(String::new, |p| format!("{:016x}", p.tag())),
            pin,
            interface,
            mode,
        });
    }
    out.extend(clsact_filters(handle).await?);
    Ok(out)
}

/// hostgw's clsact filters, on every interface: they have no pins.
async fn clsact_filters(handle: &rtnetlink::Handle) -> Result<Vec<Attachment>, InspectError> {
    let mut out = Vec::new();
    for link in iface::all(handle).await? {
        let filters = match tc::bpf_filters(link.index, false) {
            Ok(f) => f,
            Err(error) => {
                tracing::warn!(iface = link.name, %error, "cannot list the clsact filters");
                continue;
            }
        };
        for f in filters
            .into_iter()
            .filter(|f| f.is_at_ours() && f.name.starts_with("hostgw_"))
        {
            let tag = f
                .program_id
                .and_then(|id| {
                    aya::programs::loaded_programs()
                        .filter_map(Result::ok)
                        .find(|p| p.id() == id)
                })
                .map_or_else(String::new, |p| format!("{:016x}", p.tag()));
            out.push(Attachment {
                pin: format!("{}@{}", f.name, link.name),
                program: f.name,
                program_id: f.program_id.unwrap_or(0),
                tag,
                interface: link.name.clone(),
                mode: "clsact".to_owned(),
            });
        }
    }
    Ok(out)
}

async fn xdp_mode(handle: &rtnetlink::Handle, iface: &str) -> String {
    use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};
    let Ok(msg) = iface::message_by_name(handle, iface).await else {
        return "interface gone".to_owned();
    };
    for attr in &msg.attributes {
        if let LinkAttribute::Xdp(xdp) = attr {
            for x in xdp {
                if let LinkXdp::Attached(a) = x {
                    return match a {
                        XdpAttached::Driver => "xdp native",
                        XdpAttached::SocketBuffer => "xdp generic",
                        XdpAttached::Hardware => "xdp offload",
                        XdpAttached::Multiple => "xdp (several)",
                        _ => "xdp detached",
                    }
                    .to_owned();
                }
            }
        }
    }
    "xdp".to_owned()
}

/// The whole status.
pub async fn status(
    pin_dir: &Path,
    handle: &rtnetlink::Handle,
    agent_addr: std::net::SocketAddr,
) -> Result<Status, InspectError> {
    let st = state(pin_dir)?;
    let maps = map_fills(pin_dir)
        .into_iter()
        .map(|l| {
            Ok(MapFill {
                map: l.map,
                entries: l.entries?,
                capacity: l.capacity.unwrap_or(0),
            })
        })
        .collect::<Result<_, InspectError>>()?;
    Ok(Status {
        agent_version: env!("CARGO_PKG_VERSION"),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        features: crate::dataplane::features::Features::read(),
        pin_dir: pin_dir.display().to_string(),
        forwarding_v4: st.flags & STATE_F_FORWARD_V4 != 0,
        forwarding_v6: st.flags & STATE_F_FORWARD_V6 != 0,
        conntrack_gate: st.flags & STATE_F_CT_GATE != 0,
        programs: attachments(pin_dir, handle).await?,
        shared_hooks: shared_hooks(pin_dir, handle).await?,
        maps,
        agent: agent_status(agent_addr).await,
    })
}

/// The `HOOKS` entries, with each interface's other tc users as they are now.
async fn shared_hooks(
    pin_dir: &Path,
    handle: &rtnetlink::Handle,
) -> Result<Vec<SharedHook>, InspectError> {
    // Pins of a build from before the map have no hooks to show.
    if !pin_dir.join(names::HOOKS).exists() {
        return Ok(Vec::new());
    }
    let qdiscs = tc::qdiscs().unwrap_or_default();
    let mut out = Vec::new();
    for (ifindex, flags) in hooks(pin_dir)? {
        let link = iface::by_index(handle, ifindex).await.ok();
        let users = link
            .as_ref()
            .and_then(|l| {
                let port = flags & hostgw_common::HOOK_F_PORT_EGRESS != 0 || l.controller.is_some();
                tc::users(l, port, &qdiscs).ok()
            })
            .unwrap_or_default();
        out.push(SharedHook {
            interface: link.map_or_else(|| format!("gone (ifindex {ifindex})"), |l| l.name),
            ifindex,
            flags: hook_flag_names(flags),
            ingress: users.ingress,
            egress: users.egress,
        });
    }
    Ok(out)
}

/// `GET /status` from the agent's HTTP endpoint, if one answers.
async fn agent_status(mut addr: std::net::SocketAddr) -> Option<serde_json::Value> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    if addr.ip().is_unspecified() {
        addr.set_ip(Ipv4Addr::LOCALHOST.into());
    }
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /status HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8(out).ok()?;
        let body = text.split_once("\r\n\r\n")?.1;
        serde_json::from_str(body).ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}
