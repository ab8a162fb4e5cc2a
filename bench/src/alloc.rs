//! A global allocator that counts allocations and live bytes, for "time and
//! allocations" and for the heap a step needs at its peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct Counting;

static COUNT: AtomicU64 = AtomicU64::new(0);
/// Bytes live now.
static LIVE: AtomicU64 = AtomicU64::new(0);
/// Most bytes live at once since [`Peak::start`].
static PEAK: AtomicU64 = AtomicU64::new(0);
/// Whether `PEAK` is kept (only while a [`Peak`] is measuring).
static TRACKING: AtomicBool = AtomicBool::new(false);

fn grew(by: u64) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    if TRACKING.load(Ordering::Relaxed) {
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNT.fetch_add(1, Ordering::Relaxed);
        grew(layout.size() as u64);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        COUNT.fetch_add(1, Ordering::Relaxed);
        // Counted as a new block, then the old one freed: the peak sees both,
        // as a moving realloc does.
        grew(new_size as u64);
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations made by the whole process so far.
pub fn count() -> u64 {
    COUNT.load(Ordering::Relaxed)
}

/// The peak of live heap over a stretch of work, above what was live when
/// it started. Process-wide: whatever else runs at the same time counts too.
pub struct Peak {
    base: u64,
}

impl Peak {
    pub fn start() -> Self {
        let base = LIVE.load(Ordering::Relaxed);
        PEAK.store(base, Ordering::Relaxed);
        TRACKING.store(true, Ordering::Relaxed);
        Self { base }
    }

    /// Bytes above the start at the peak.
    pub fn stop(self) -> u64 {
        TRACKING.store(false, Ordering::Relaxed);
        PEAK.load(Ordering::Relaxed).saturating_sub(self.base)
    }
}
