//! Bounds-checked access to a frame's headers, for both TC and XDP contexts.

use aya_ebpf::programs::{TcContext, XdpContext};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

/// A frame's linear data: `[start, end)` as the verifier knows them.
pub struct Frame {
    start: usize,
    end: usize,
}

/// What the frame carries at layer 3.
pub enum L3 {
    /// IPv4 with a complete fixed header.
    V4,
    V6,
    Other,
}

impl Frame {
    #[inline(always)]
    pub fn tc(ctx: &TcContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    #[inline(always)]
    pub fn xdp(ctx: &XdpContext) -> Self {
        Self {
            start: ctx.data(),
            end: ctx.data_end(),
        }
    }

    /// Bytes of linear data.
    #[inline(always)]
    pub fn len(&self) -> u32 {
        (self.end - self.start) as u32
    }

    /// A pointer to a `T` at `offset`, when all of it lies inside the frame.
    #[inline(always)]
    pub fn ptr_at<T>(&self, offset: usize) -> Result<*const T, ()> {
        let len = size_of::<T>();
        if self.start + offset + len > self.end {
            return Err(());
        }
        Ok((self.start + offset) as *const T)
    }

    /// Reads the Ethernet header and, for IPv4, the destination address.
    #[inline(always)]
    pub fn l3(&self) -> Result<L3, ()> {
        let eth: *const EthHdr = self.ptr_at(0)?;
        // SAFETY: `ptr_at` checked that the whole header lies inside the frame.
        let ether_type = unsafe { (*eth).ether_type };
        if ether_type == EtherType::Ipv4 as u16 {
            let _ip: *const Ipv4Hdr = self.ptr_at(EthHdr::LEN)?;
            Ok(L3::V4)
        } else if ether_type == EtherType::Ipv6 as u16 {
            Ok(L3::V6)
        } else {
            Ok(L3::Other)
        }
    }
}
