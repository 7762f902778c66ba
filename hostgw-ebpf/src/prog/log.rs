//! A per-CPU budget for log records, so a packet flood cannot turn into a log flood: each CPU
//! may emit up to [`BURST`] records, refilled by one every [`REFILL_NS`].

use aya_ebpf::{btf_maps::PerCpuArray, helpers::bpf_ktime_get_ns, macros::btf_map};

/// Records a CPU may emit at once.
const BURST: u64 = 10;
/// One more record per this many nanoseconds.
const REFILL_NS: u64 = 100_000_000;

/// `[tokens, last refill time]` per CPU.
#[btf_map]
static LOG_BUDGET: PerCpuArray<[u64; 2], 1> = PerCpuArray::new();

/// Whether a log record may be emitted now (and takes one from the budget if so).
#[inline(always)]
pub fn allowed() -> bool {
    let Some(b) = LOG_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the per-CPU slot is valid and only this CPU writes it while the program runs.
    let b = unsafe { &mut *b };
    let refill = now.saturating_sub(b[1]) / REFILL_NS;
    if refill > 0 {
        b[0] = (b[0] + refill).min(BURST);
        b[1] = now;
    }
    if b[0] == 0 {
        return false;
    }
    b[0] -= 1;
    true
}
