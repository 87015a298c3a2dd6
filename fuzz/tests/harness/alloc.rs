//! A global allocator that counts, per thread, the bytes held and their peak, so a run
//! can be checked against its allocation bound. Other threads (the test harness's
//! parallel tests) do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn add(n: usize) {
    let _ = HELD.try_with(|held| {
        let now = held.get().saturating_add(n);
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn sub(n: usize) {
    // Memory allocated on another thread may be freed here: never below zero.
    let _ = HELD.try_with(|held| held.set(held.get().saturating_sub(n)));
}

// SAFETY: every call is passed to the system allocator unchanged; only counts are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        sub(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            sub(layout.size());
            add(new_size);
        }
        p
    }
}

/// Starts a measurement on this thread; returns the bytes held now.
pub fn start_measuring() -> usize {
    let held = HELD.with(Cell::get);
    PEAK.with(|p| p.set(held));
    held
}

/// The most bytes held at once since [`start_measuring`] returned `before`, beyond it.
pub fn peak_since(before: usize) -> usize {
    PEAK.with(Cell::get).saturating_sub(before)
}
