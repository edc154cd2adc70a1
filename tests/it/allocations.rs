//! A global allocator that records the largest single allocation made on a thread while
//! counting is on, so decoder tests can show that hostile input never makes them allocate
//! beyond their limits. `main.rs` declares it as the test binary's allocator; a test uses
//! it through `crate::allocations` (`start`, then `restart` or `stop`).

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    /// Largest allocation (bytes) made on this thread while counting; None when off.
    static LARGEST_BYTES: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The counting allocator.
pub struct Counting;

// SAFETY: delegates to the system allocator; only records sizes in a thread-local Cell
// (const-initialised, so touching it never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_BYTES.with(|largest| {
            if let Some(bytes) = largest.get() {
                largest.set(Some(bytes.max(layout.size())));
            }
        });
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Starts counting on this thread, from zero.
pub fn start() {
    LARGEST_BYTES.with(|largest| largest.set(Some(0)));
}

/// The largest allocation since `start` (or the last `restart`); counting goes on from zero.
pub fn restart() -> usize {
    LARGEST_BYTES.with(|largest| largest.replace(Some(0)).unwrap_or(0))
}

/// The largest allocation since `start`; counting stops.
pub fn stop() -> usize {
    LARGEST_BYTES.with(|largest| largest.replace(None).unwrap_or(0))
}
