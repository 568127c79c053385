//! Bytes whose start is aligned to a cache line, so that a 64-byte block at a 64-aligned
//! offset of a snapshot file is one cache line in memory (see [`super::lines`]).

use std::io::Read;
use std::ops::{Deref, DerefMut};

/// Bytes of a cache line on the machines this runs on (x86-64, ARMv7/v8).
pub const CACHE_LINE_BYTES: usize = 64;

/// A byte buffer starting on a cache-line boundary: a zeroed allocation 63 bytes longer than
/// needed, used from its first 64-aligned byte.
#[derive(Clone, Default)]
pub struct AlignedBytes {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes. For large sizes the allocator maps fresh zero pages and touches none
    /// of them, and on Linux they are advised to be transparent huge pages before the first
    /// write: a 20-million-entry list then costs a few dozen TLB entries instead of 40,000,
    /// which keeps page walks off the tap path.
    pub fn zeroed(len: usize) -> Self {
        let mut storage = vec![0u8; len + CACHE_LINE_BYTES - 1];
        advise_huge_pages(&mut storage);
        let offset = storage.as_ptr().align_offset(CACHE_LINE_BYTES);
        AlignedBytes {
            storage,
            offset,
            len,
        }
    }

    /// Read a whole file into huge-page-backed memory (see [`AlignedBytes::zeroed`]).
    pub fn read_file(path: &std::path::Path) -> std::io::Result<Self> {
        let mut file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| std::io::Error::other("file larger than memory"))?;
        let mut out = AlignedBytes::zeroed(len);
        file.read_exact(&mut out)?;
        Ok(out)
    }

    /// Bytes allocated.
    pub fn capacity(&self) -> usize {
        self.storage.capacity()
    }
}

impl From<&[u8]> for AlignedBytes {
    fn from(bytes: &[u8]) -> Self {
        let mut out = AlignedBytes::zeroed(bytes.len());
        out.copy_from_slice(bytes);
        out
    }
}

impl From<Vec<u8>> for AlignedBytes {
    fn from(bytes: Vec<u8>) -> Self {
        AlignedBytes::from(bytes.as_slice())
    }
}

impl Deref for AlignedBytes {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }
}

impl DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

/// Start loading the cache line at `ptr` into the cache, without waiting for it. Only a hint:
/// it never faults and changes no memory, whatever `ptr` is.
#[inline(always)]
pub fn prefetch(ptr: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 reads nothing into a register and cannot fault, for any address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(ptr.cast());
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: PRFM is a hint: it cannot fault and changes no register or memory.
    unsafe {
        std::arch::asm!("prfm pldl1keep, [{0}]", in(reg) ptr, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = ptr;
}

/// Bytes in a transparent huge page.
const HUGE_PAGE_BYTES: usize = 2 << 20;

#[cfg(target_os = "linux")]
fn advise_huge_pages(buf: &mut [u8]) {
    let start = buf.as_mut_ptr() as usize;
    let end = start + buf.len();
    let aligned_start = start.next_multiple_of(HUGE_PAGE_BYTES);
    let aligned_end = end & !(HUGE_PAGE_BYTES - 1);
    if aligned_end <= aligned_start {
        return;
    }
    // SAFETY: the range lies inside `buf`'s own allocation, and MADV_HUGEPAGE only changes
    // how the kernel backs those pages, never their contents or their validity.
    let rc = unsafe {
        libc::madvise(
            aligned_start as *mut libc::c_void,
            aligned_end - aligned_start,
            libc::MADV_HUGEPAGE,
        )
    };
    if rc != 0 {
        tracing::debug!("madvise(MADV_HUGEPAGE) refused; using normal pages");
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_buf: &mut [u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line_and_keeps_the_bytes() {
        for len in [0usize, 1, 63, 64, 65, 1000] {
            let v: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let a = AlignedBytes::from(v.clone());
            assert_eq!(&a[..], &v[..]);
            assert_eq!(a.as_ptr() as usize % CACHE_LINE_BYTES, 0);
        }
    }
}
