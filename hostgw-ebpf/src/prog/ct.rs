//! The conntrack gate: a flow may take the fast path only when netfilter's conntrack has
//! confirmed it, seen its reply, and it carries no NAT and no helper, and a TCP connection
//! only while conntrack holds it as established — the contract of netfilter's flowtable.
//! Everything else (a flow's first packets, a connection's handshake, flows with NAT such as
//! kube-proxy's services and masquerade, protocols the kernel's lookup does not support) goes
//! through the stack, where netfilter sees it. The packets the fast path takes keep their
//! entry's lifetime what it would be on the kernel path (see [`decide`]).
//!
//! The lookups are kfuncs (`bpf_skb_ct_lookup`, `bpf_xdp_ct_lookup`, `bpf_ct_release`, and
//! `bpf_ct_change_timeout` where the kernel has it). They are called here through placeholder
//! helper ids from [`hostgw_common::kfunc`], which the agent rewrites into kfunc calls before
//! loading. Every reference a lookup returns is released on every path.

use core::ffi::c_void;

use hostgw_common::{
    CONFIG_F_CT_TIMEOUT, Config, STATE_F_CT_GATE, State,
    counters::{family, reason},
    kfunc,
};

use super::parse::{ETH_LEN, Hook, IPV4_LEN, IPV6_LEN, Ipv4, Ipv6};

/// `IPS_SRC_NAT` and `IPS_DST_NAT` of `enum ip_conntrack_status`.
const IPS_NAT_MASK: u64 = (1 << 4) | (1 << 5);
/// `IPS_SEEN_REPLY`: conntrack has seen packets in both directions.
const IPS_SEEN_REPLY: u64 = 1 << 1;
/// `IPS_ASSURED`: conntrack holds the flow as fully set up (for TCP, the handshake is done).
const IPS_ASSURED: u64 = 1 << 2;
/// `IPS_HELPER`: a conntrack helper is attached (FTP, SIP…), which must see every packet.
const IPS_HELPER: u64 = 1 << 13;
/// `TCP_CONNTRACK_ESTABLISHED` of `enum tcp_conntrack`.
const TCP_CONNTRACK_ESTABLISHED: u8 = 3;
/// The FIN, SYN and RST bits of the TCP flags byte.
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_OFF: usize = 13;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const ENOENT: i32 = 2;
/// `BPF_F_CURRENT_NETNS`: look up in the namespace of the packet's device.
const CURRENT_NETNS: i32 = -1;

/// `struct bpf_sock_tuple`, IPv4 member.
#[repr(C)]
struct TupleV4 {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
}

/// `struct bpf_sock_tuple`, IPv6 member; its size (36) tells the kernel the family.
#[repr(C)]
struct TupleV6 {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
}
const _: () = assert!(size_of::<TupleV6>() == 36);

/// `struct bpf_ct_opts` in its largest known layout (16 bytes); the size passed is the
/// running kernel's, from [`Config::ct_opts_size`].
#[repr(C)]
struct CtOpts {
    netns_id: i32,
    error: i32,
    l4proto: u8,
    dir: u8,
    ct_zone_id: u16,
    ct_zone_dir: u8,
    reserved: [u8; 3],
}

type Lookup = unsafe extern "C" fn(*mut c_void, *mut c_void, u32, *mut CtOpts, u32) -> *mut c_void;
type Release = unsafe extern "C" fn(*mut c_void);
type ChangeTimeout = unsafe extern "C" fn(*mut c_void, u32);

/// Which lookup a hook uses.
#[derive(Clone, Copy)]
pub enum Kind {
    Skb,
    Xdp,
}

/// `Ok` when the gate is off or lets the IPv4 flow through (then counted as `ct_established`
/// on `hook`); otherwise the pass reason.
#[inline(always)]
pub fn gate_v4<H: Hook>(
    h: &H,
    ctx: *mut c_void,
    kind: Kind,
    hook: u32,
    ip: &Ipv4,
    cfg: &Config,
    state: &State,
) -> Result<(), u32> {
    if state.flags & STATE_F_CT_GATE == 0 {
        return Ok(());
    }
    let (sport, dport) = ports(h, ip.proto, ETH_LEN + IPV4_LEN)?;
    let mut tuple = TupleV4 {
        saddr: ip.src,
        daddr: ip.dst,
        sport,
        dport,
    };
    lookup(
        h,
        ctx,
        kind,
        (family::IPV4, hook),
        (&raw mut tuple).cast(),
        size_of::<TupleV4>() as u32,
        (ip.proto, ETH_LEN + IPV4_LEN),
        cfg,
        state,
    )
}

/// [`gate_v4`] for an IPv6 flow, looked up with the IPv6 tuple.
#[inline(always)]
pub fn gate_v6<H: Hook>(
    h: &H,
    ctx: *mut c_void,
    kind: Kind,
    hook: u32,
    ip: &Ipv6,
    cfg: &Config,
    state: &State,
) -> Result<(), u32> {
    if state.flags & STATE_F_CT_GATE == 0 {
        return Ok(());
    }
    let (sport, dport) = ports(h, ip.next, ETH_LEN + IPV6_LEN)?;
    let mut tuple = TupleV6 {
        saddr: ip.src,
        daddr: ip.dst,
        sport,
        dport,
    };
    lookup(
        h,
        ctx,
        kind,
        (family::IPV6, hook),
        (&raw mut tuple).cast(),
        size_of::<TupleV6>() as u32,
        (ip.next, ETH_LEN + IPV6_LEN),
        cfg,
        state,
    )
}

/// Source and destination port of a TCP or UDP packet whose L4 header starts at `l4_off`:
/// the first four bytes of either header. Other protocols cannot be looked up.
#[inline(always)]
fn ports<H: Hook>(h: &H, proto: u8, l4_off: usize) -> Result<([u8; 2], [u8; 2]), u32> {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Err(reason::CT_PROTO);
    }
    let ports: *const [u8; 4] = h.ptr_at(l4_off).ok_or(reason::PASS_MALFORMED)?;
    // SAFETY: `ptr_at` checked the four bytes lie inside the packet.
    let ports = unsafe { *ports };
    Ok(([ports[0], ports[1]], [ports[2], ports[3]]))
}

/// Looks `tuple` (a `bpf_sock_tuple` member of `tuple_size` bytes) up in conntrack and
/// decides; an established flow is counted as `ct_established` under `(family, hook)`.
/// `l4_off` is where the TCP or UDP header starts.
#[inline(always)]
#[expect(
    clippy::cast_ptr_alignment,
    reason = "nf_conn.status's offset comes from the kernel's BTF and is aligned"
)]
#[expect(
    clippy::too_many_arguments,
    reason = "the kfunc's arguments plus where to count"
)]
fn lookup<H: Hook>(
    h: &H,
    ctx: *mut c_void,
    kind: Kind,
    (family, hook): (u32, u32),
    tuple: *mut c_void,
    tuple_size: u32,
    (proto, l4_off): (u8, usize),
    cfg: &Config,
    state: &State,
) -> Result<(), u32> {
    let mut opts = CtOpts {
        netns_id: CURRENT_NETNS,
        error: 0,
        l4proto: proto,
        dir: 0,
        ct_zone_id: 0,
        ct_zone_dir: 0,
        reserved: [0; 3],
    };
    let id = match kind {
        Kind::Skb => kfunc::SKB_CT_LOOKUP,
        Kind::Xdp => kfunc::XDP_CT_LOOKUP,
    };
    // SAFETY: the placeholder id is rewritten by the loader into the kfunc with exactly this
    // signature; the arguments are the context and valid locals of the sizes passed.
    let ct = unsafe {
        let lookup: Lookup = core::mem::transmute(id as usize);
        lookup(ctx, tuple, tuple_size, &raw mut opts, cfg.ct_opts_size)
    };
    if ct.is_null() {
        // ENOENT is the normal "no entry yet"; anything else means the lookup itself failed.
        if opts.error != -ENOENT && super::log::allowed() {
            aya_log_ebpf::warn!(&(), "conntrack lookup failed with error {}", opts.error);
        }
        return Err(reason::CT_NEW);
    }
    // SAFETY: `ct` is a referenced `struct nf_conn`; `status` (an unsigned long), `timeout`
    // (a u32) and `proto.tcp.state` (a u8) are at the offsets the loader read from the
    // kernel's BTF, so they are aligned and inside the struct.
    let entry = unsafe {
        let at = |off: u32| ct.cast::<u8>().add(off as usize);
        Entry {
            status: core::ptr::read_volatile(at(cfg.ct_status_off).cast::<u64>()),
            expires: core::ptr::read_volatile(at(cfg.ct_timeout_off).cast::<u32>()),
            tcp_state: core::ptr::read_volatile(at(cfg.ct_tcp_state_off)),
        }
    };
    let verdict = decide(h, proto, l4_off, &entry, cfg, state);
    if let Ok(Some(timeout)) = verdict {
        // SAFETY: `ct` is still referenced; the placeholder is rewritten into the kfunc of
        // this signature, which only the CONFIG_F_CT_TIMEOUT flag lets `decide` ask for.
        unsafe {
            let change: ChangeTimeout = core::mem::transmute(kfunc::CT_CHANGE_TIMEOUT as usize);
            change(ct, timeout);
        }
    }
    // SAFETY: as for the lookup; every reference the lookup returned is released here.
    unsafe {
        let release: Release = core::mem::transmute(kfunc::CT_RELEASE as usize);
        release(ct);
    }
    verdict?;
    super::maps::count(family, hook, reason::CT_ESTABLISHED, h.len());
    Ok(())
}

/// What the gate read of a flow's `struct nf_conn`.
struct Entry {
    /// `status`: `IPS_*` bits.
    status: u64,
    /// `timeout`: when the entry expires, in jiffies.
    expires: u32,
    /// `proto.tcp.state` (for TCP).
    tcp_state: u8,
}

/// What the gate does with a packet of a flow conntrack has an entry for: `Ok` to forward it,
/// with the timeout (ms) to give the entry first, if any; otherwise the pass reason.
///
/// The rules are netfilter flowtable's (`nft_flow_offload`, `nf_conntrack_tcp_established`):
/// confirmed both ways, no NAT, no helper, TCP only once conntrack holds the connection as
/// established and assured. Packets the fast path takes are not seen by conntrack, so the
/// gate does what conntrack would do with them to the entry's lifetime: an entry close to
/// expiring gets the timeout of its state again (TCP established; UDP replied, or stream once
/// assured), a FIN gives it `TIME_WAIT`'s, an RST `CLOSE`'s — as the flowtable keeps an
/// offloaded flow's entry alive and sets its timeout when the flow ends. A SYN on a tracked
/// connection goes to the stack. On kernels without `bpf_ct_change_timeout`, such packets go
/// through the stack instead (which refreshes the entry itself).
#[inline(always)]
fn decide<H: Hook>(
    h: &H,
    proto: u8,
    l4_off: usize,
    entry: &Entry,
    cfg: &Config,
    state: &State,
) -> Result<Option<u32>, u32> {
    let status = entry.status;
    if status & IPS_NAT_MASK != 0 {
        return Err(reason::CT_NAT);
    }
    // Until the reply has gone through the stack, conntrack must see the flow (or its entry
    // stays unreplied and expires under it); a helper must see every packet.
    if status & IPS_SEEN_REPLY == 0 || status & IPS_HELPER != 0 {
        return Err(reason::CT_UNREPLIED);
    }
    let t = &state.ct;
    let mut timeout = match proto {
        IPPROTO_TCP => t.tcp_established,
        _ if status & IPS_ASSURED != 0 => t.udp_stream,
        _ => t.udp,
    };
    // SAFETY: bpf_jiffies64 has no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_jiffies64() } as u32;
    // `nf_ct_expires`: the jiffies left, wrapping like the kernel's 32-bit timestamp.
    let left = entry.expires.wrapping_sub(now) as i32;
    let mut change = left < t.refresh as i32;
    if proto == IPPROTO_TCP {
        if entry.tcp_state != TCP_CONNTRACK_ESTABLISHED || status & IPS_ASSURED == 0 {
            return Err(reason::CT_TCP);
        }
        let flags: *const u8 = h
            .ptr_at(l4_off + TCP_FLAGS_OFF)
            .ok_or(reason::PASS_MALFORMED)?;
        // SAFETY: `ptr_at` checked the byte lies inside the packet.
        let flags = unsafe { *flags };
        if flags & TCP_SYN != 0 {
            return Err(reason::CT_TCP);
        }
        if flags & TCP_RST != 0 {
            (timeout, change) = (t.tcp_close, true);
        } else if flags & TCP_FIN != 0 {
            (timeout, change) = (t.tcp_time_wait, true);
        }
    }
    if !change {
        return Ok(None);
    }
    if cfg.flags & CONFIG_F_CT_TIMEOUT == 0 || timeout == 0 {
        return Err(reason::CT_REFRESH);
    }
    Ok(Some(timeout))
}
