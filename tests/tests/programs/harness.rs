//! The harness: the programs loaded from the agent's embedded object into the test
//! namespace, one `BPF_PROG_TEST_RUN` of a frame, the per-CPU counters read around it, and
//! the check of a row (return code, output bytes, exactly the expected counter moved). Rows
//! are collected in a [`Table`], which checks every row and reports all failing rows at once.
//! The frames the tables start from are built here too. Nothing here knows a table's rows.

use std::collections::BTreeMap;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::{Program, SchedClassifier, TestRun as _, TestRunOptions, Xdp, XdpMode},
};
use hostgw_common::{
    Config, Counter, CtTimeouts, Endpoint, RouteV4, RouteV6, STATE_F_FORWARD_V4,
    STATE_F_FORWARD_V6, State,
    counters::{self, family, hook, reason},
    names,
};
use hostgw_tests::{
    bpf::{BPF_F_TEST_SKB_CHECKSUM_COMPLETE, TestRunAttr, test_run},
    frame::{ETH_LEN, IP, Ipv4Frame, Ipv6Frame, ipv4_checksum},
};

use crate::world::{
    BRIDGE_MAC, NODE42_MAC, POD, POD_MAC, POD6, REMOTE, REMOTE6, UPLINK_MAC, World, kernel,
};

/// Returns `Err` with the formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// "Continue": the next tcx program, or the next clsact filter, then the stack (`-1`).
pub(crate) const TC_ACT_UNSPEC: u32 = u32::MAX;
pub(crate) const TC_ACT_REDIRECT: u32 = 7;
pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const XDP_TX: u32 = 3;

/// Which program a row runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prog {
    Egress,
    Ingress,
    Xdp,
}

impl Prog {
    /// The hook the program counts under.
    pub(crate) fn hook(self) -> u32 {
        match self {
            Self::Egress => hook::EGRESS,
            Self::Ingress => hook::INGRESS_TC,
            Self::Xdp => hook::INGRESS_XDP,
        }
    }

    /// The return code the program gives a verdict: a pass to the stack, or a forward
    /// (`XDP_TX`, or a TC redirect).
    fn return_code(self, expect: Expect) -> u32 {
        match (self, expect) {
            (Self::Xdp, Expect::Fwd { .. }) => XDP_TX,
            (_, Expect::Fwd { .. }) => TC_ACT_REDIRECT,
            (Self::Xdp, _) => XDP_PASS,
            _ => TC_ACT_UNSPEC,
        }
    }
}

/// What a row must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The kernel refuses the input before the program runs (shorter than an Ethernet header).
    Rejected,
    /// Handed to the stack unchanged, counted under this reason.
    Pass(u32),
    /// Rewritten and sent on: this reason, these MACs (`None`: left for the kernel to fill).
    Fwd {
        reason: u32,
        dmac: Option<[u8; 6]>,
        smac: Option<[u8; 6]>,
    },
}

/// The programs, loaded with one configuration and the world's map content.
pub(crate) struct Programs {
    pub(crate) ebpf: Ebpf,
    /// Programs the agent's loader loaded outside `ebpf` (kfunc calls into module BTF).
    loaded: BTreeMap<&'static str, Program>,
}

impl Programs {
    /// The program `name`, wherever the loader put it.
    pub(crate) fn program(&self, name: &str) -> &Program {
        self.loaded
            .get(name)
            .or_else(|| self.ebpf.program(name))
            .unwrap_or_else(|| panic!("no program {name}"))
    }

    fn program_mut(&mut self, name: &str) -> &mut Program {
        match self.loaded.get_mut(name) {
            Some(p) => p,
            None => self
                .ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("no program {name}")),
        }
    }

    pub(crate) fn load(world: &World, flags: u32) -> Self {
        let mut progs = Self::load_with(world, world.config(flags));
        progs.set_forwarding(true);
        progs
    }

    /// Attaches the XDP program to the uplink in native mode. XDP test runs that name the
    /// uplink as their ingress interface need its rx queue registered, which a veth only does
    /// with an XDP program attached; this also shows native XDP works on this kernel.
    pub(crate) fn attach_xdp(&mut self) {
        let x: &mut Xdp = self.program_mut(names::PROG_XDP).try_into().unwrap();
        x.attach("up0", XdpMode::Driver)
            .expect("native XDP on the veth uplink");
    }

    /// Loads the programs with `cfg` as their read-only configuration and fills the maps with
    /// the world's routes and endpoints; the node state is left empty (forwarding off).
    pub(crate) fn load_with(world: &World, cfg: Config) -> Self {
        let object = hostgw_agent::kfunc::PatchedObject::new(hostgw_agent::EBPF_OBJECT, &kernel())
            .expect("kfunc calls prepared");
        let mut ebpf = EbpfLoader::new()
            .override_global(names::CONFIG, &cfg, true)
            .load(object.bytes())
            .expect("the embedded object loads");
        let loaded = hostgw_agent::load_programs(&mut ebpf, object.bytes(), &kernel())
            .unwrap_or_else(|e| panic!("the programs load: {e:?}"));
        let mut routes: LpmTrie<_, [u8; 4], RouteV4> =
            LpmTrie::try_from(ebpf.map_mut(names::ROUTES_V4).unwrap()).unwrap();
        for (prefix, len, route) in world.routes() {
            routes.insert(&Key::new(len, prefix), route, 0).unwrap();
        }
        let mut eps: BpfHashMap<_, [u8; 4], Endpoint> =
            BpfHashMap::try_from(ebpf.map_mut(names::ENDPOINTS_V4).unwrap()).unwrap();
        for (addr, ep) in world.endpoints() {
            eps.insert(addr, ep, 0).unwrap();
        }
        let mut routes: LpmTrie<_, [u8; 16], RouteV6> =
            LpmTrie::try_from(ebpf.map_mut(names::ROUTES_V6).unwrap()).unwrap();
        for (prefix, len, route) in world.routes6() {
            routes.insert(&Key::new(len, prefix), route, 0).unwrap();
        }
        let mut eps: BpfHashMap<_, [u8; 16], Endpoint> =
            BpfHashMap::try_from(ebpf.map_mut(names::ENDPOINTS_V6).unwrap()).unwrap();
        for (addr, ep) in world.endpoints6() {
            eps.insert(addr, ep, 0).unwrap();
        }
        Self { ebpf, loaded }
    }

    /// Forwarding on or off for both families.
    pub(crate) fn set_forwarding(&mut self, on: bool) {
        self.set_state(if on {
            STATE_F_FORWARD_V4 | STATE_F_FORWARD_V6
        } else {
            0
        });
    }

    pub(crate) fn set_state(&mut self, flags: u32) {
        self.set_state_ct(flags, CtTimeouts::default());
    }

    /// Sets the smallest route MTU of the node state, the rest unchanged.
    pub(crate) fn set_fib_mtu(&mut self, fib_mtu: u32) {
        let mut state: Array<_, State> =
            Array::try_from(self.ebpf.map_mut(names::STATE).unwrap()).unwrap();
        let mut value = state.get(&0, 0).unwrap();
        value.fib_mtu = fib_mtu;
        state.set(0, value, 0).unwrap();
    }

    /// [`Self::set_state`] with conntrack's timeouts for the gate.
    pub(crate) fn set_state_ct(&mut self, flags: u32, ct: CtTimeouts) {
        let mut state: Array<_, State> =
            Array::try_from(self.ebpf.map_mut(names::STATE).unwrap()).unwrap();
        let state_value = State {
            flags,
            bridge_mac: BRIDGE_MAC,
            uplink_mac: UPLINK_MAC,
            ct,
            fib_mtu: 0,
            pad: 0,
        };
        state.set(0, state_value, 0).unwrap();
    }

    /// Runs `prog` on `frame` arriving on `ifindex`; `gso_size` makes the skb a GSO packet.
    /// Returns the return code and the output bytes, or `None` when the kernel refused the
    /// input.
    pub(crate) fn run(
        &self,
        prog: Prog,
        frame: &[u8],
        ifindex: u32,
        gso_size: u32,
    ) -> Option<(u32, Vec<u8>)> {
        let mut out = vec![0u8; 8192];
        let result = match prog {
            Prog::Egress | Prog::Ingress => {
                let name = if prog == Prog::Egress {
                    names::PROG_EGRESS
                } else {
                    names::PROG_INGRESS
                };
                let p: &SchedClassifier = self.program(name).try_into().unwrap();
                // struct __sk_buff: ifindex at 40, gso_segs at 164, gso_size at 176.
                let mut ctx = [0u8; 192];
                ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
                if gso_size != 0 {
                    let segs = (frame.len() as u32).div_ceil(gso_size);
                    ctx[164..168].copy_from_slice(&segs.to_ne_bytes());
                    ctx[176..180].copy_from_slice(&gso_size.to_ne_bytes());
                }
                p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::default()
                })
            }
            Prog::Xdp => {
                let p: &Xdp = self.program(names::PROG_XDP).try_into().unwrap();
                // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
                // egress_ifindex.
                let mut ctx = [0u8; 24];
                ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
                ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
                p.test_run(TestRunOptions {
                    data_in: Some(frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..TestRunOptions::default()
                })
            }
        };
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                if std::env::var_os("HOSTGW_DEBUG_TESTRUN").is_some() {
                    eprintln!("test run refused {} bytes: {e:?}", frame.len());
                }
                return None;
            }
        };
        out.truncate(r.data_size_out as usize);
        Some((r.return_value, out))
    }

    /// Runs a TC program on `frame` arriving on `ifindex` as an skb with `CHECKSUM_COMPLETE`
    /// (`BPF_F_TEST_SKB_CHECKSUM_COMPLETE`, Linux 6.11): the kernel sums the packet first
    /// and, after the run, refuses with `EBADMSG` if `skb->csum` no longer matches what the
    /// program left. Returns the return code, or the errno.
    pub(crate) fn run_csum_complete(
        &self,
        prog: Prog,
        frame: &[u8],
        ifindex: u32,
    ) -> Result<u32, i32> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let name = if prog == Prog::Egress {
            names::PROG_EGRESS
        } else {
            names::PROG_INGRESS
        };
        let p: &SchedClassifier = self.program(name).try_into().unwrap();
        let fd = p.fd().expect("a loaded program").as_fd().as_raw_fd();
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; 8192];
        let mut attr = TestRunAttr {
            prog_fd: fd as u32,
            data_size_in: frame.len() as u32,
            data_size_out: out.len() as u32,
            data_in: frame.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ctx_size_in: ctx.len() as u32,
            ctx_in: ctx.as_ptr() as u64,
            flags: BPF_F_TEST_SKB_CHECKSUM_COMPLETE,
            ..TestRunAttr::default()
        };
        match test_run(&mut attr) {
            Ok(()) => Ok(attr.retval),
            Err(e) => Err(e.raw_os_error().unwrap_or(0)),
        }
    }

    /// Packets counted per stats index, summed over CPUs.
    pub(crate) fn counters(&self) -> Vec<u64> {
        let stats: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.ebpf.map(names::STATS).unwrap()).unwrap();
        (0..counters::STATS_LEN)
            .map(|i| stats.get(&i, 0).unwrap().iter().map(|c| c.packets).sum())
            .collect()
    }

    /// Runs `row` and checks verdict, bytes and counters. The error names the row and says
    /// what was wrong.
    fn check(&self, row: &Row<'_>) -> Result<(), String> {
        let Row {
            name,
            prog,
            ref frame,
            ifindex,
            gso,
            expect,
        } = *row;
        let before = self.counters();
        let got = self.run(prog, frame, ifindex, gso);
        let moved = moved(&before, &self.counters());
        let (why, rc, out) = match (expect, got) {
            (Expect::Rejected, None) => {
                ensure!(
                    moved.is_empty(),
                    "{name}: counters moved for a refused input: {}",
                    describe(&moved)
                );
                return Ok(());
            }
            (Expect::Rejected, Some((rc, _))) => {
                return Err(format!(
                    "{name}: the kernel ran the program (rc {rc}) on a frame it should refuse"
                ));
            }
            (_, None) => return Err(format!("{name}: BPF_PROG_TEST_RUN refused the frame")),
            (Expect::Pass(why) | Expect::Fwd { reason: why, .. }, Some((rc, out))) => {
                (why, rc, out)
            }
        };
        let want_rc = prog.return_code(expect);
        ensure!(
            rc == want_rc,
            "{name}: return code {rc}, expected {want_rc} ({}); counters moved: {}",
            verdict(expect),
            describe(&moved)
        );
        match expect {
            Expect::Fwd { dmac, smac, .. } => rewritten(name, frame, &out, dmac, smac)?,
            _ => ensure!(out == *frame, "{name}: a passed frame was modified"),
        }
        let idx = counters::index(frame_family(frame), prog.hook(), why);
        ensure!(
            moved == [(idx, 1)],
            "{name}: expected only {} to move; counters moved: {}",
            counter_name(idx),
            describe(&moved)
        );
        Ok(())
    }

    /// Runs `row`, a forward with the conntrack gate on, and checks that it is forwarded
    /// correctly and that the forwarding counter and `ct_established` moved, nothing else.
    fn check_gated(&self, row: &Row<'_>) -> Result<(), String> {
        let Row {
            name,
            prog,
            ref frame,
            ifindex,
            gso,
            expect,
        } = *row;
        let Expect::Fwd {
            reason: why,
            dmac,
            smac,
        } = expect
        else {
            panic!("{name}: a gated row is a forward");
        };
        let before = self.counters();
        let (rc, out) = self
            .run(prog, frame, ifindex, gso)
            .ok_or_else(|| format!("{name}: BPF_PROG_TEST_RUN refused the frame"))?;
        let moved = moved(&before, &self.counters());
        let want_rc = prog.return_code(expect);
        ensure!(
            rc == want_rc,
            "{name}: return code {rc}, expected {want_rc} ({}); counters moved: {}",
            verdict(expect),
            describe(&moved)
        );
        rewritten(name, frame, &out, dmac, smac)?;
        let fam = frame_family(frame);
        let mut want = vec![
            (counters::index(fam, prog.hook(), why), 1),
            (counters::index(fam, prog.hook(), reason::CT_ESTABLISHED), 1),
        ];
        want.sort_unstable();
        ensure!(
            moved == want,
            "{name}: expected {} to move; counters moved: {}",
            describe(&want),
            describe(&moved)
        );
        Ok(())
    }
}

/// The counters that differ between two reads, as `(index, increase)`.
fn moved(before: &[u64], after: &[u64]) -> Vec<(u32, u64)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| a != b)
        .map(|(i, (b, a))| (i as u32, a - b))
        .collect()
}

/// A row of a decision table: a frame, where it arrives, and the verdict it must get.
pub(crate) struct Row<'a> {
    /// What the row checks; failures and the printed table name it.
    pub(crate) name: &'a str,
    pub(crate) prog: Prog,
    pub(crate) frame: Vec<u8>,
    /// The interface the frame arrives on.
    pub(crate) ifindex: u32,
    /// The GSO segment size; 0 for a plain packet.
    pub(crate) gso: u32,
    pub(crate) expect: Expect,
}

/// The outcome of a table: every row is checked, and [`Table::finish`] then reports all the
/// failing rows together. Dropping an unfinished table (other than while panicking) panics, so
/// no failure can go unreported.
#[derive(Default)]
pub(crate) struct Table {
    checked: usize,
    failures: Vec<String>,
    finished: bool,
}

impl Table {
    /// Checks each of `rows` on `progs`, printing the ones that pass.
    pub(crate) fn check(&mut self, progs: &Programs, rows: &[Row<'_>]) {
        for row in rows {
            if self.row(progs, row) {
                println!("  ok  {:<64} {}", row.name, verdict(row.expect));
            }
        }
    }

    /// Checks one row on `progs`, without printing it when it passes; whether it passed.
    pub(crate) fn row(&mut self, progs: &Programs, row: &Row<'_>) -> bool {
        self.record(progs.check(row))
    }

    /// Checks each of `rows`, forwards with the conntrack gate on (see
    /// [`Programs::check_gated`]), printing the ones that pass.
    pub(crate) fn gated(&mut self, progs: &Programs, rows: &[Row<'_>]) {
        for row in rows {
            if self.record(progs.check_gated(row)) {
                println!(
                    "  ok  {:<64} {} + ct_established",
                    row.name,
                    verdict(row.expect)
                );
            }
        }
    }

    pub(crate) fn record(&mut self, result: Result<(), String>) -> bool {
        self.checked += 1;
        match result {
            Ok(()) => true,
            Err(failure) => {
                println!("  FAIL {failure}");
                self.failures.push(failure);
                false
            }
        }
    }

    /// Panics, listing every failing row, unless all rows passed.
    pub(crate) fn finish(mut self) {
        self.finished = true;
        assert!(self.checked > 0, "the table checked no rows");
        assert!(
            self.failures.is_empty(),
            "{} of {} rows failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        assert!(
            self.finished || std::thread::panicking(),
            "a table of {} rows was dropped without Table::finish",
            self.checked
        );
    }
}

/// A verdict as the table prints it.
fn verdict(e: Expect) -> String {
    match e {
        Expect::Rejected => "refused by the kernel".to_owned(),
        Expect::Pass(r) => format!("pass ({})", reason_name(r)),
        Expect::Fwd { reason: r, .. } => format!("forward ({})", reason_name(r)),
    }
}

/// Counter moves as `family/hook/reason +n`.
fn describe(moved: &[(u32, u64)]) -> String {
    moved
        .iter()
        .map(|(i, n)| format!("{} +{n}", counter_name(*i)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A stats index as `family/hook/reason`.
pub(crate) fn counter_name(idx: u32) -> String {
    let (f, h, r) = counters::split(idx);
    format!(
        "{}/{}/{}",
        family::NAMES[f as usize],
        hook::NAMES[h as usize],
        reason_name(r)
    )
}

/// The counter family a frame must be counted under: by its `EtherType`, `other` when it is
/// neither IPv4 nor IPv6 or too short to tell (test runs carry no VLAN metadata).
pub(crate) fn frame_family(frame: &[u8]) -> u32 {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => family::IPV4,
        Some([0x86, 0xdd]) => family::IPV6,
        _ => family::OTHER,
    }
}

pub(crate) fn reason_name(r: u32) -> &'static str {
    reason::NAMES[r as usize]
}

/// Checks a forwarded frame: new MACs, TTL − 1, a checksum that is right when recomputed from
/// scratch, and every other byte as it was. For IPv6: new MACs, hop limit − 1, every other
/// byte as it was. The error names the row (`name`) and the first difference.
fn rewritten(
    name: &str,
    input: &[u8],
    out: &[u8],
    dmac: Option<[u8; 6]>,
    smac: Option<[u8; 6]>,
) -> Result<(), String> {
    // Bytes after the IP packet (an Ethernet trailer, padding) are trimmed, as the kernel
    // trims them on receive.
    let ip_end = if frame_family(input) == family::IPV6 {
        IP + 40 + usize::from(u16::from_be_bytes([input[IP + 4], input[IP + 5]]))
    } else {
        IP + usize::from(u16::from_be_bytes([input[IP + 2], input[IP + 3]]))
    };
    let want_len = input.len().min(ip_end);
    ensure!(
        out.len() == want_len,
        "{name}: {} bytes out of {} in, expected {want_len} (the IP packet without a trailer)",
        out.len(),
        input.len()
    );
    let want_dmac = dmac.unwrap_or_else(|| input[0..6].try_into().unwrap());
    let want_smac = smac.unwrap_or_else(|| input[6..12].try_into().unwrap());
    ensure!(
        out[0..6] == want_dmac,
        "{name}: destination MAC {:02x?}, expected {want_dmac:02x?}",
        &out[0..6]
    );
    ensure!(
        out[6..12] == want_smac,
        "{name}: source MAC {:02x?}, expected {want_smac:02x?}",
        &out[6..12]
    );
    let same = |r: std::ops::Range<usize>| -> Result<(), String> {
        ensure!(
            out[r.clone()] == input[r.clone()],
            "{name}: bytes {r:?} changed from {:02x?} to {:02x?}",
            &input[r.clone()],
            &out[r.clone()]
        );
        Ok(())
    };
    if frame_family(input) == family::IPV6 {
        ensure!(
            out[IP + 7] == input[IP + 7].wrapping_sub(1),
            "{name}: hop limit {} → {}, not decremented by one",
            input[IP + 7],
            out[IP + 7]
        );
        same(12..IP + 7)?;
        return same(IP + 8..want_len);
    }
    ensure!(
        out[IP + 8] == input[IP + 8].wrapping_sub(1),
        "{name}: TTL {} → {}, not decremented by one",
        input[IP + 8],
        out[IP + 8]
    );
    let ihl = usize::from(out[IP] & 0x0f) * 4;
    let stored = u16::from_be_bytes([out[IP + 10], out[IP + 11]]);
    let want = ipv4_checksum(&out[IP..IP + ihl]);
    ensure!(
        stored == want,
        "{name}: IPv4 checksum {stored:#06x} after the rewrite, expected {want:#06x}"
    );
    same(12..IP + 8)?;
    same(IP + 9..IP + 10)?;
    same(IP + 12..want_len)
}

/// Panics unless `out` is `input` correctly forwarded (see [`rewritten`]).
pub(crate) fn assert_rewritten(
    name: &str,
    input: &[u8],
    out: &[u8],
    dmac: Option<[u8; 6]>,
    smac: Option<[u8; 6]>,
) {
    if let Err(failure) = rewritten(name, input, out, dmac, smac) {
        panic!("{failure}");
    }
}

pub(crate) fn egress_frame() -> Ipv4Frame {
    Ipv4Frame::udp(BRIDGE_MAC, POD_MAC, POD, REMOTE, 32)
}

pub(crate) fn ingress_frame() -> Ipv4Frame {
    Ipv4Frame::udp(UPLINK_MAC, NODE42_MAC, REMOTE, POD, 32)
}

pub(crate) fn fwd(reason: u32, dmac: [u8; 6], smac: [u8; 6]) -> Expect {
    Expect::Fwd {
        reason,
        dmac: Some(dmac),
        smac: Some(smac),
    }
}

pub(crate) const NEIGH: Expect = Expect::Fwd {
    reason: reason::NEIGH_REDIRECT,
    dmac: None,
    smac: None,
};

pub(crate) fn with<F: FnOnce(&mut Ipv4Frame)>(base: fn() -> Ipv4Frame, f: F) -> Vec<u8> {
    let mut frame = base();
    f(&mut frame);
    frame.bytes()
}

pub(crate) fn egress6() -> Ipv6Frame {
    Ipv6Frame::udp(BRIDGE_MAC, POD_MAC, POD6, REMOTE6, 32)
}

pub(crate) fn ingress6() -> Ipv6Frame {
    Ipv6Frame::udp(UPLINK_MAC, NODE42_MAC, REMOTE6, POD6, 32)
}

pub(crate) fn with6<F: FnOnce(&mut Ipv6Frame)>(base: fn() -> Ipv6Frame, f: F) -> Vec<u8> {
    let mut frame = base();
    f(&mut frame);
    frame.bytes()
}

/// Whether `BPF_PROG_TEST_RUN` refuses `frame` before the program runs: any frame shorter
/// than an Ethernet header, and for skb programs an IPv4 (IPv6) frame without a complete 20
/// (40) byte header (the kernel reads the addresses to set up the test socket). Real traffic
/// can still bring such frames to a TC program; the XDP rows cover the same parsing code.
pub(crate) fn refused(prog: Prog, frame: &[u8]) -> bool {
    if frame.len() < ETH_LEN {
        return true;
    }
    if prog == Prog::Xdp {
        return false;
    }
    match frame[12..14] {
        [0x08, 0x00] => frame.len() < ETH_LEN + 20,
        [0x86, 0xdd] => frame.len() < ETH_LEN + 40,
        _ => false,
    }
}
