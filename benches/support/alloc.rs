//! A global allocator that forwards to `System` and counts: allocations,
//! bytes requested, and bytes live (with their peak). Install it with
//! `#[global_allocator] static A: Counting = Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

/// `System`, counting.
pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

std::thread_local! {
    /// Allocations made by this thread.
    static MINE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn counted(size: usize) {
    ALLOCS.fetch_add(1, Relaxed);
    // A thread whose thread-locals are gone is only counted globally.
    let _ = MINE.try_with(|n| n.set(n.get() + 1));
    BYTES.fetch_add(size as u64, Relaxed);
    let live = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            counted(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            counted(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's guarantees, passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees, passed on.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            counted(new_size);
        }
        new
    }
}

/// Allocations so far (a `realloc` counts as one).
pub fn allocations() -> u64 {
    ALLOCS.load(Relaxed)
}

/// Allocations so far made by the calling thread (other threads, such as a
/// test harness's, do not count).
pub fn thread_allocations() -> u64 {
    MINE.with(std::cell::Cell::get)
}

/// Bytes requested so far.
pub fn bytes() -> u64 {
    BYTES.load(Relaxed)
}

/// Bytes allocated and not yet freed.
pub fn live_bytes() -> usize {
    LIVE.load(Relaxed)
}

/// Runs `f` and returns its result, the live-byte delta it left behind and
/// the highest live-byte count above the start while it ran.
pub fn measure_bytes<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let before = live_bytes();
    PEAK.store(before, Relaxed);
    let out = f();
    let after = live_bytes();
    let peak = PEAK.load(Relaxed);
    (out, after.saturating_sub(before), peak - before)
}
