//! clsact filters and qdiscs (kernels without tcx, or `--tc-attach clsact`), over a
//! synchronous rtnetlink socket: the attach code that needs them is synchronous.
//!
//! hostgw's filters are recognisable: every one sits at priority [`PRIORITY`] with handle
//! [`HANDLE`] on the clsact qdisc's ingress, and is named after its program. This module lists
//! the bpf filters of an interface, deletes one, and deletes a clsact qdisc; it does not decide
//! which (the dataplane does). It also finds the other tc users of an interface (filters that
//! are not hostgw's, tcx programs, root qdiscs), with which the programs share their hooks.

use std::io;

use rtnetlink::{
    packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    },
    packet_utils::nla::{Nla as _, NlasIterator},
    sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
};

/// The priority (`pref`) of hostgw's clsact filters.
pub const PRIORITY: u16 = 0x4847;
/// The handle of hostgw's clsact filters.
pub const HANDLE: u32 = 0x4847;

/// `TCA_BPF_NAME` and `TCA_BPF_ID` inside a bpf filter's options.
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
/// `ETH_P_ALL` in network byte order: the protocol aya attaches filters with.
const ETH_P_ALL_BE: u32 = (libc::ETH_P_ALL as u16).to_be() as u32;

/// A bpf filter on a clsact qdisc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfFilter {
    pub priority: u16,
    pub handle: u32,
    /// The name it was attached with (the program's, for aya and for hostgw).
    pub name: String,
    /// The id of the program behind it.
    pub program_id: Option<u32>,
}

impl BpfFilter {
    /// At hostgw's priority and handle.
    pub fn is_at_ours(&self) -> bool {
        self.priority == PRIORITY && self.handle == HANDLE
    }
}

/// The clsact qdisc's ingress and egress parents.
fn parent(egress: bool) -> TcHandle {
    TcHandle {
        major: 0xffff,
        minor: if egress { 0xfff3 } else { 0xfff2 },
    }
}

/// The filters (of any kind) on the ingress (or egress) of the clsact qdisc of `ifindex`,
/// without the chain heads the dump lists too (handle 0); none when it has no clsact qdisc.
fn filters(ifindex: u32, egress: bool) -> io::Result<Vec<TcMessage>> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = parent(egress);
    let replies = match request(
        RouteNetlinkMessage::GetTrafficFilter(msg),
        NLM_F_REQUEST | NLM_F_DUMP,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Vec::new()),
        other => other?,
    };
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficFilter(f) if u32::from(f.header.handle) != 0 => Some(f),
            _ => None,
        })
        .collect())
}

/// The bpf filters on the ingress (or egress) of interface `ifindex`.
pub fn bpf_filters(ifindex: u32, egress: bool) -> io::Result<Vec<BpfFilter>> {
    Ok(filters(ifindex, egress)?
        .iter()
        .filter_map(bpf_filter)
        .collect())
}

/// Every filter (of any kind) on both sides of the clsact qdisc of `ifindex`.
pub fn filter_count(ifindex: u32) -> io::Result<usize> {
    Ok(filters(ifindex, false)?.len() + filters(ifindex, true)?.len())
}

/// Deletes the ingress bpf filter at `priority`/`handle` of interface `ifindex`.
pub fn delete_filter(ifindex: u32, priority: u16, handle: u32) -> io::Result<()> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = parent(false);
    msg.header.handle = TcHandle::from(handle);
    msg.header.info = (u32::from(priority) << 16) | ETH_P_ALL_BE;
    msg.attributes.push(TcAttribute::Kind("bpf".to_owned()));
    request(
        RouteNetlinkMessage::DelTrafficFilter(msg),
        NLM_F_REQUEST | NLM_F_ACK,
    )
    .map(drop)
}

/// Deletes the clsact qdisc of interface `ifindex`, with every filter on it.
pub fn delete_clsact(ifindex: u32) -> io::Result<()> {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = TcHandle {
        major: 0xffff,
        minor: 0xfff1,
    };
    msg.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    msg.attributes.push(TcAttribute::Kind("clsact".to_owned()));
    match request(
        RouteNetlinkMessage::DelQueueDiscipline(msg),
        NLM_F_REQUEST | NLM_F_ACK,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other.map(drop),
    }
}

/// The qdiscs of an interface that matter to the programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Qdiscs {
    /// The root qdisc's kind (`noqueue` for a veth by default).
    pub root: Option<String>,
    /// Whether it has a clsact qdisc (which has an egress hook; the legacy `ingress` qdisc
    /// has none, and lists its ingress filters under any parent).
    pub clsact: bool,
}

/// The qdiscs of every interface, by interface index: one dump.
pub fn qdiscs() -> io::Result<std::collections::BTreeMap<u32, Qdiscs>> {
    let replies = request(
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )?;
    let mut out = std::collections::BTreeMap::<u32, Qdiscs>::new();
    for m in replies {
        let RouteNetlinkMessage::NewQueueDiscipline(q) = m else {
            continue;
        };
        let Some(kind) = q.attributes.iter().find_map(|a| match a {
            TcAttribute::Kind(k) => Some(k.clone()),
            _ => None,
        }) else {
            continue;
        };
        let Ok(index) = u32::try_from(q.header.index) else {
            continue;
        };
        let entry = out.entry(index).or_default();
        if kind == "clsact" {
            entry.clsact = true;
        } else if q.header.parent == TcHandle::ROOT {
            entry.root = Some(kind);
        }
    }
    Ok(out)
}

/// Descriptions of the filters on the ingress (or egress) of `ifindex` that are not
/// hostgw's: any kind but bpf, and bpf filters at other priorities or handles or of other
/// programs. A legacy `ingress` qdisc's filters are listed too.
pub fn foreign_filters(ifindex: u32, egress: bool) -> io::Result<Vec<String>> {
    Ok(filters(ifindex, egress)?
        .iter()
        .filter(|f| !bpf_filter(f).is_some_and(|b| b.is_at_ours() && b.name.starts_with("hostgw_")))
        .map(|f| {
            let kind = f
                .attributes
                .iter()
                .find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.as_str()),
                    _ => None,
                })
                .unwrap_or("unknown");
            format!("{kind} filter, pref {}", f.header.info >> 16)
        })
        .collect())
}

/// The tcx programs on the ingress (or egress) of `iface` that are not hostgw's; none on a
/// kernel without tcx.
pub fn foreign_tcx(iface: &str, egress: bool) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    let attach = if egress {
        TcAttachType::Egress
    } else {
        TcAttachType::Ingress
    };
    match SchedClassifier::query_tcx(iface, attach) {
        Ok((_, progs)) => progs
            .iter()
            .filter(|p| !p.name_as_str().is_some_and(|n| n.starts_with("hostgw_")))
            .map(|p| {
                format!(
                    "tcx program {} (id {})",
                    p.name_as_str().unwrap_or("without a name"),
                    p.id()
                )
            })
            .collect(),
        Err(error) => {
            tracing::debug!(iface, %error, "no tcx programs listed");
            Vec::new()
        }
    }
}

/// Every other tc user of `link`; its egress only when `egress` (a bridge port: the uplink's
/// egress is where the programs send to, through its qdisc and filters as the stack does).
pub fn users(
    link: &crate::model::Link,
    egress: bool,
    qdiscs: &std::collections::BTreeMap<u32, Qdiscs>,
) -> io::Result<crate::model::TcUsers> {
    let q = qdiscs.get(&link.index).cloned().unwrap_or_default();
    let mut ingress = foreign_filters(link.index, false)?;
    ingress.extend(foreign_tcx(&link.name, false));
    let mut out = Vec::new();
    if egress {
        if let Some(kind) = q.root.filter(|k| k != "noqueue") {
            out.push(format!("root qdisc {kind}"));
        }
        if q.clsact {
            out.extend(foreign_filters(link.index, true)?);
        }
        out.extend(foreign_tcx(&link.name, true));
    }
    Ok(crate::model::TcUsers {
        ingress,
        egress: out,
    })
}

/// The filter in `f`, if it is a bpf filter.
fn bpf_filter(f: &TcMessage) -> Option<BpfFilter> {
    let handle = u32::from(f.header.handle);
    let mut kind = None;
    let (mut name, mut program_id) = (String::new(), None);
    for attr in &f.attributes {
        match attr {
            TcAttribute::Kind(k) => kind = Some(k.as_str()),
            // Options of a kind the parser does not know (bpf) arrive whole: the nested
            // attributes are in the value.
            TcAttribute::Options(opts) => {
                for opt in opts {
                    let TcOption::Other(nla) = opt else { continue };
                    let mut value = vec![0; nla.value_len()];
                    nla.emit_value(&mut value);
                    for inner in NlasIterator::new(&value[..]).filter_map(Result::ok) {
                        let v = inner.value();
                        match inner.kind() {
                            TCA_BPF_NAME => {
                                String::from_utf8_lossy(v)
                                    .trim_end_matches('\0')
                                    .clone_into(&mut name);
                            }
                            TCA_BPF_ID if v.len() == 4 => {
                                program_id = Some(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]));
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (kind == Some("bpf")).then_some(BpfFilter {
        priority: (f.header.info >> 16) as u16,
        handle,
        name,
        program_id,
    })
}

/// Sends one request and collects the replies, until the dump's end or the ACK.
fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    loop {
        let (buf, _) = socket.recv_from_full()?;
        let mut at = 0;
        while at < buf.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            at += reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        None => Ok(out),
                    };
                }
                _ => {}
            }
            if reply.header.length == 0 {
                break;
            }
        }
    }
}
