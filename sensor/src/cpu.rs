//! CPU hints shared by the hot paths: the capture walk requests the cache
//! lines ahead of it, the flow table its index lines and flow slots.

/// Asks the CPU to bring the cache line holding `p` into L1.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    // SAFETY: PREFETCHT0 is a hint: it reads nothing the program can
    // observe, never faults whatever the address, and SSE, which it needs, is
    // part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
