//! The benchmark's own three BPF programs — a packet generator and two counting sinks — written
//! as raw instructions and loaded with the `bpf(2)` system call, with the few commands they
//! need (map create and lookup, program load, link create, live-frames test run).
//!
//! Why raw instructions: the project's eBPF object is the dataplane and nothing else, and a
//! second eBPF crate would need a second nightly build for three programs of a dozen
//! instructions each. Each program below is listed instruction by instruction with what it
//! does; none of them is ever attached to anything but the benchmark's own interfaces, and
//! every attachment is a BPF link held by a file descriptor, so it goes away with the value
//! that holds it (or with the namespace).
//!
//! - [`Generator`]: an XDP program that rewrites the first 34 bytes of the frame (Ethernet and
//!   IPv4 headers) from a template and returns `XDP_TX`. It is run with
//!   `BPF_PROG_TEST_RUN` and `BPF_F_TEST_XDP_LIVE_FRAMES`: the kernel builds frames from
//!   `data_in` in a page pool and transmits every `XDP_TX` out of the interface named in the
//!   context (`ingress_ifindex`), in batches, until `repeat` frames were sent or the calling
//!   thread gets a signal. The rewrite is needed because pages are recycled without copying
//!   `data_in` again, and the forwarder under test rewrites MACs and TTL in place.
//! - [`Sink`]: counts IPv4/UDP and IPv6/UDP frames in a one-entry per-CPU array and drops them
//!   (`XDP_DROP` or `TC_ACT_SHOT`); every other frame (ARP and neighbour discovery above all)
//!   passes, so neighbours stay resolved.

use std::{
    ffi::CStr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use hostgw_tests::bpf::{BPF_F_TEST_XDP_LIVE_FRAMES, BPF_PROG_TEST_RUN, TestRunAttr};

/// A failed `bpf(2)` command.
#[derive(Debug, thiserror::Error)]
#[error("bpf({what}) failed{log}")]
pub struct BpfError {
    what: &'static str,
    log: String,
    #[source]
    source: std::io::Error,
}

// `enum bpf_cmd`.
const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_PROG_LOAD: u32 = 5;
const BPF_LINK_CREATE: u32 = 28;
// `enum bpf_map_type`, `enum bpf_prog_type`, `enum bpf_attach_type`.
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;
/// `XDP_FLAGS_DRV_MODE`: native XDP (veth supports it).
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `BPF_PSEUDO_MAP_FD`: the `imm` of an `ld_imm64` is a map file descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;
/// `BPF_FUNC_map_lookup_elem`.
const FUNC_MAP_LOOKUP_ELEM: i32 = 1;

/// `union bpf_attr` for `BPF_MAP_CREATE` (leading fields).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_MAP_*_ELEM`.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `union bpf_attr` for `BPF_PROG_LOAD` (leading fields).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` (XDP and tcx members).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative: u32,
    pad: u32,
    expected_revision: u64,
}

/// `struct xdp_md`, the context of an XDP test run.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// Runs `bpf(cmd, attr)`; the returned value (a file descriptor for the commands that make
/// one).
fn bpf<T>(cmd: u32, attr: &mut T, what: &'static str) -> Result<i64, BpfError> {
    // SAFETY: `attr` is a valid, initialised `repr(C)` prefix of `union bpf_attr` for `cmd`,
    // of the size passed; pointers inside it (if any) point at live buffers of the sizes
    // given next to them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            libc::c_long::from(cmd as i32),
            std::ptr::from_mut(attr),
            size_of::<T>(),
        )
    };
    if rc < 0 {
        return Err(BpfError {
            what,
            log: String::new(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(rc)
}

fn fd_from(rc: i64) -> OwnedFd {
    // SAFETY: the command returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

/// One `struct bpf_insn`.
#[derive(Debug, Clone, Copy)]
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

impl Insn {
    fn encode(self) -> u64 {
        let bytes = [
            self.code,
            (self.src << 4) | (self.dst & 0x0f),
            self.off.to_le_bytes()[0],
            self.off.to_le_bytes()[1],
            self.imm.to_le_bytes()[0],
            self.imm.to_le_bytes()[1],
            self.imm.to_le_bytes()[2],
            self.imm.to_le_bytes()[3],
        ];
        u64::from_le_bytes(bytes)
    }
}

// The few opcodes used, named as in the kernel's `filter.h` macros.
/// `dst = *(u32 *)(src + off)`
const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0)
}
/// `dst = *(u16 *)(src + off)`
const fn ldx_h(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x69, dst, src, off, 0)
}
/// `dst = *(u8 *)(src + off)`
const fn ldx_b(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x71, dst, src, off, 0)
}
/// `*(u32 *)(dst + off) = imm`
const fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x62, dst, 0, off, imm)
}
/// `*(u16 *)(dst + off) = imm`
const fn st_h(dst: u8, off: i16, imm: i32) -> Insn {
    insn(0x6a, dst, 0, off, imm)
}
/// `dst = imm` (64-bit)
const fn mov_k(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
/// `dst = src` (64-bit)
const fn mov_x(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
/// `dst += imm` (64-bit)
const fn add_k(dst: u8, imm: i32) -> Insn {
    insn(0x07, dst, 0, 0, imm)
}
/// `if dst > src goto +off`
const fn jgt_x(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x2d, dst, src, off, 0)
}
/// `if dst != imm goto +off`
const fn jne_k(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x55, dst, 0, off, imm)
}
/// `if dst == imm goto +off`
const fn jeq_k(dst: u8, imm: i32, off: i16) -> Insn {
    insn(0x15, dst, 0, off, imm)
}
/// `lock *(u64 *)(dst + off) += src`
const fn atomic_add_dw(dst: u8, src: u8, off: i16) -> Insn {
    insn(0xdb, dst, src, off, 0)
}
/// `call helper`
const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
/// `exit`
const fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
/// `dst = map` (`ld_imm64` with a map file descriptor): two instruction slots.
fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
    [
        insn(0x18, dst, BPF_PSEUDO_MAP_FD, 0, fd),
        insn(0, 0, 0, 0, 0),
    ]
}

const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R10: u8 = 10;

/// Bytes of the frame the generator rewrites on every run: Ethernet and IPv4 headers (of an
/// IPv6 frame, the first 20 bytes of its header, hop limit included).
pub const HEADER_LEN: usize = 34;

const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

/// Loads `insns` as a program of `prog_type`; on a verifier rejection the error carries the
/// verifier's log.
fn load(
    prog_type: u32,
    expected_attach_type: u32,
    name: &str,
    insns: &[Insn],
) -> Result<OwnedFd, BpfError> {
    let code: Vec<u64> = insns.iter().map(|i| i.encode()).collect();
    let license: &CStr = c"GPL";
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: code.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        expected_attach_type,
        ..ProgLoadAttr::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr, "BPF_PROG_LOAD") {
        Ok(fd) => Ok(fd_from(fd)),
        Err(first) => {
            // Again with the verifier's log, for the message.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ignored = bpf(BPF_PROG_LOAD, &mut attr, "BPF_PROG_LOAD");
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(BpfError {
                what: first.what,
                log: format!(
                    " loading {name}; verifier log:\n{}",
                    String::from_utf8_lossy(&log[..end])
                ),
                source: first.source,
            })
        }
    }
}

/// The generator: rewrites the headers from `template`, transmits the frame back out.
pub struct Generator {
    prog: OwnedFd,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("prog_fd", &self.prog.as_raw_fd())
            .finish()
    }
}

impl Generator {
    /// A generator whose every run rewrites the frame's first [`HEADER_LEN`] bytes to those of
    /// `frame` and returns `XDP_TX`.
    pub fn load(frame: &[u8]) -> Result<Self, BpfError> {
        assert!(
            frame.len() >= HEADER_LEN,
            "a generated frame holds at least its Ethernet and IPv4 headers"
        );
        let mut insns = vec![
            ldx_w(R2, R1, 0), // r2 = ctx->data
            ldx_w(R3, R1, 4), // r3 = ctx->data_end
            mov_x(R4, R2),    // r4 = data + HEADER_LEN
            add_k(R4, HEADER_LEN as i32),
        ];
        // if r4 > data_end: too short, drop (the 8 + 1 stores, the return and the exit follow).
        insns.push(jgt_x(R4, R3, 11));
        for off in (0..32).step_by(4) {
            let word = u32::from_le_bytes(frame[off..off + 4].try_into().expect("4 bytes"));
            insns.push(st_w(R2, off as i16, word as i32));
        }
        let half = u16::from_le_bytes([frame[32], frame[33]]);
        insns.push(st_h(R2, 32, i32::from(half)));
        insns.extend([mov_k(R0, XDP_TX), exit(), mov_k(R0, XDP_DROP), exit()]);
        Ok(Self {
            prog: load(BPF_PROG_TYPE_XDP, BPF_XDP, "hgwb_gen", &insns)?,
        })
    }

    /// Runs the generator with live frames built from `frame` and transmitted out of
    /// `ifindex` (in the calling thread's network namespace), until `repeat` frames were
    /// generated or the thread receives a signal. Returns whether it ran to the end (`false`:
    /// interrupted by a signal, which is how a measurement stops it).
    pub fn run_live(&self, frame: &[u8], ifindex: u32, repeat: u32) -> Result<bool, BpfError> {
        let mut ctx = XdpMd {
            data_end: frame.len() as u32,
            ingress_ifindex: ifindex,
            ..XdpMd::default()
        };
        let mut attr = TestRunAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ctx_size_in: size_of::<XdpMd>() as u32,
            ctx_in: std::ptr::from_mut(&mut ctx) as u64,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            ..TestRunAttr::default()
        };
        match bpf(
            BPF_PROG_TEST_RUN,
            &mut attr,
            "BPF_PROG_TEST_RUN (live frames)",
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.source.raw_os_error() == Some(libc::EINTR) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Where a [`Sink`] hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// Native XDP on the interface: drops frames before an skb exists.
    Xdp,
    /// tcx ingress: drops skbs, after the kernel's receive path built them.
    Tc,
}

/// A counting sink attached to one interface; detached on drop.
pub struct Sink {
    kind: SinkKind,
    counts: OwnedFd,
    _prog: OwnedFd,
    _link: OwnedFd,
    cpus: usize,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("kind", &self.kind)
            .field("counts_fd", &self.counts.as_raw_fd())
            .field("cpus", &self.cpus)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Loads a sink and attaches it to `ifindex` in the calling thread's network namespace.
    pub fn attach(kind: SinkKind, ifindex: u32) -> Result<Self, BpfError> {
        let mut map_name = [0u8; 16];
        map_name[..10].copy_from_slice(b"hgwb_count");
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: 1,
            map_name,
            ..MapCreateAttr::default()
        };
        let counts = fd_from(bpf(BPF_MAP_CREATE, &mut attr, "BPF_MAP_CREATE")?);

        // Context offsets of the packet bounds: `xdp_md.data`/`data_end`, or
        // `__sk_buff.data`/`data_end`.
        let (data, data_end, drop, pass) = match kind {
            SinkKind::Xdp => (0, 4, XDP_DROP, XDP_PASS),
            SinkKind::Tc => (76, 80, TC_ACT_SHOT, TC_ACT_OK),
        };
        let mut insns = vec![
            ldx_w(R2, R1, data),     // r2 = data
            ldx_w(R3, R1, data_end), // r3 = data_end
            mov_x(R4, R2),
            add_k(R4, HEADER_LEN as i32),
            // Shorter than Ethernet + IPv4 (which covers IPv6's next header too): pass.
            jgt_x(R4, R3, 18),
            ldx_h(R5, R2, 12),     // r5 = ethertype (as stored, little-endian load)
            jne_k(R5, 0x08, 2),    // not 0x0800 (IPv4): to the IPv6 check
            ldx_b(R5, R2, 23),     // r5 = IPv4 protocol
            jeq_k(R5, 17, 3),      // UDP: count
            jne_k(R5, 0xdd86, 13), // not 0x86dd (IPv6; an IPv4 protocol never matches): pass
            ldx_b(R5, R2, 20),     // r5 = IPv6 next header
            jne_k(R5, 17, 11),     // not UDP: pass
            st_w(R10, -4, 0),      // key = 0 on the stack
            mov_x(R2, R10),
            add_k(R2, -4),
        ];
        insns.extend(ld_map_fd(R1, counts.as_raw_fd()));
        insns.extend([
            call(FUNC_MAP_LOOKUP_ELEM),
            jeq_k(R0, 0, 2), // no value (cannot happen in an array): just drop
            mov_k(R1, 1),
            atomic_add_dw(R0, R1, 0), // this CPU's count += 1
            mov_k(R0, drop),
            exit(),
            mov_k(R0, pass),
            exit(),
        ]);
        let (prog_type, attach_type, name, flags) = match kind {
            SinkKind::Xdp => (
                BPF_PROG_TYPE_XDP,
                BPF_XDP,
                "hgwb_sink_xdp",
                XDP_FLAGS_DRV_MODE,
            ),
            SinkKind::Tc => (BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_INGRESS, "hgwb_sink_tc", 0),
        };
        let prog = load(prog_type, attach_type, name, &insns)?;
        let mut link = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type,
            flags,
            ..LinkCreateAttr::default()
        };
        let link = fd_from(bpf(BPF_LINK_CREATE, &mut link, "BPF_LINK_CREATE")?);
        Ok(Self {
            kind,
            counts,
            _prog: prog,
            _link: link,
            cpus: possible_cpus(),
        })
    }

    /// Frames counted (and dropped) so far, over every CPU.
    pub fn count(&self) -> Result<u64, BpfError> {
        let mut values = vec![0u64; self.cpus];
        let key = 0u32;
        let mut attr = MapElemAttr {
            map_fd: self.counts.as_raw_fd() as u32,
            key: std::ptr::from_ref(&key) as u64,
            value: values.as_mut_ptr() as u64,
            ..MapElemAttr::default()
        };
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr, "BPF_MAP_LOOKUP_ELEM")?;
        Ok(values.iter().sum())
    }
}

/// Number of possible CPUs (the slots of a per-CPU map value), from
/// `/sys/devices/system/cpu/possible` (`0-1`, `0,2-3`, …).
pub fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let n: usize = text
        .trim()
        .split(',')
        .filter_map(|part| {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            Some(b.trim().parse::<usize>().ok()? - a.trim().parse::<usize>().ok()? + 1)
        })
        .sum();
    n.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_encode_as_the_kernel_reads_them() {
        // r2 = *(u32 *)(r1 + 4): code 0x61, dst 2, src 1, off 4.
        assert_eq!(
            ldx_w(R2, R1, 4).encode().to_le_bytes(),
            [0x61, 0x12, 4, 0, 0, 0, 0, 0]
        );
        // *(u32 *)(r2 + 0) = 0x04030201
        assert_eq!(
            st_w(R2, 0, 0x0403_0201).encode().to_le_bytes(),
            [0x62, 0x02, 0, 0, 1, 2, 3, 4]
        );
        // if r5 != 17 goto +10
        assert_eq!(
            jne_k(R5, 17, 10).encode().to_le_bytes(),
            [0x55, 0x05, 10, 0, 17, 0, 0, 0]
        );
        let [lo, hi] = ld_map_fd(R1, 7);
        assert_eq!(lo.encode().to_le_bytes(), [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
        assert_eq!(hi.encode(), 0);
    }

    #[test]
    fn bpf_attr_layouts_match_the_uapi_offsets() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, expected_revision), 24);
        assert_eq!(std::mem::offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(size_of::<XdpMd>(), 24);
    }
}
