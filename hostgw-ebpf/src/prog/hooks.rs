//! [`Hook`] for the two kinds of context: TC (an skb) and XDP (a raw frame).

use aya_ebpf::{
    EbpfContext as _,
    helpers::generated::{bpf_check_mtu, bpf_csum_diff, bpf_csum_update},
    programs::{TcContext, XdpContext},
};

use super::parse::Hook;

/// A TC program's packet.
pub struct Tc<'a>(pub &'a TcContext);

// The packet bounds are read with volatile loads: otherwise LLVM may merge the adjacent
// `data` and `data_end` fields into one 64-bit value and split it with shifts, and the
// verifier forbids arithmetic on packet pointers.
impl Hook for Tc<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: the context pointer is the program's own `__sk_buff`, valid for its run.
        unsafe { core::ptr::read_volatile(&raw const (*self.0.skb.skb).data) as usize }
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.0.skb.skb).data_end) as usize }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        self.0.len()
    }

    #[inline(always)]
    #[expect(
        clippy::misnamed_getters,
        reason = "at TC ingress skb->dev is the receiving interface (skb_iif is set from it), \
                  and unlike ingress_ifindex it can be set in test runs"
    )]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the context pointer is the program's own `__sk_buff`, valid for its run.
        unsafe { (*self.0.skb.skb).ifindex }
    }

    #[inline(always)]
    fn vlan_present(&self) -> bool {
        // SAFETY: as above.
        unsafe { (*self.0.skb.skb).vlan_present != 0 }
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.0.skb.skb).gso_size }
    }

    #[inline(always)]
    fn fits_mtu(&self, ifindex: u32, l3_len: u32) -> bool {
        check_mtu(self.0.as_ptr(), ifindex, l3_len)
    }

    #[inline(always)]
    fn csum_changed(&self, mut from: [u8; 4], mut to: [u8; 4]) {
        // SAFETY: both buffers are four-byte locals, the sizes passed; the helpers only read
        // them, and bpf_csum_update changes skb->csum only for CHECKSUM_COMPLETE.
        unsafe {
            let diff = bpf_csum_diff(from.as_mut_ptr().cast(), 4, to.as_mut_ptr().cast(), 4, 0);
            bpf_csum_update(self.0.skb.skb, diff as u32);
        }
    }
}

/// An XDP program's frame.
pub struct Xdp<'a>(pub &'a XdpContext);

impl Hook for Xdp<'_> {
    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: the context pointer is the program's own `xdp_md`, valid for its run.
        unsafe { core::ptr::read_volatile(&raw const (*self.0.ctx).data) as usize }
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as above.
        unsafe { core::ptr::read_volatile(&raw const (*self.0.ctx).data_end) as usize }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        (self.data_end() - self.data()) as u32
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: the context pointer is the program's own `xdp_md`, valid for its run.
        unsafe { (*self.0.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn vlan_present(&self) -> bool {
        // XDP sees the frame as it arrived: a VLAN tag is still in it.
        false
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        0
    }

    #[inline(always)]
    fn fits_mtu(&self, ifindex: u32, l3_len: u32) -> bool {
        check_mtu(self.0.as_ptr(), ifindex, l3_len)
    }

    #[inline(always)]
    fn csum_changed(&self, _from: [u8; 4], _to: [u8; 4]) {}
}

/// `bpf_check_mtu` with an explicit L3 length: true when `l3_len` bytes fit the current MTU
/// of `ifindex` (the kernel compares them plus the link header with MTU plus link header).
#[inline(always)]
fn check_mtu(ctx: *mut core::ffi::c_void, ifindex: u32, l3_len: u32) -> bool {
    let mut mtu_len = l3_len;
    // SAFETY: `ctx` is the program's context; the helper reads it and writes `mtu_len`, a
    // valid local.
    let rc = unsafe { bpf_check_mtu(ctx, ifindex, &raw mut mtu_len, 0, 0) };
    rc == 0
}
