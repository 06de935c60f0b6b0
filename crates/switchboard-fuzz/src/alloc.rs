//! A counting wrapper around the system allocator, so a harness can fail an input that
//! makes the code under test reserve far more memory than the input could justify.
//!
//! Counters are global (one worker runs one input at a time on one thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Requests above this are refused outright (the process then aborts with Rust's
/// "memory allocation failed" message and the supervisor reports the input): even with
/// overcommit, a claim this size could take the machine down.
const HARD_CAP: usize = 4 << 30;

pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn grew(request: usize, added: usize) {
    let live = LIVE.fetch_add(added, Relaxed) + added;
    PEAK.fetch_max(live, Relaxed);
    LARGEST.fetch_max(request, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_CAP {
            LARGEST.fetch_max(layout.size(), Relaxed);
            return std::ptr::null_mut();
        }
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size(), layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HARD_CAP {
            LARGEST.fetch_max(layout.size(), Relaxed);
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size(), layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > HARD_CAP {
            LARGEST.fetch_max(new_size, Relaxed);
            return std::ptr::null_mut();
        }
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size, new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

/// What one input made the code allocate.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// The largest single request (allocation or reallocation), in bytes.
    pub largest: usize,
    /// The most bytes live at once, above what was live when the input started.
    pub peak: usize,
}

/// Starts measuring; returns the baseline to hand to [`finish`].
pub fn start() -> usize {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    LARGEST.store(0, Relaxed);
    live
}

pub fn finish(baseline: usize) -> Usage {
    Usage {
        largest: LARGEST.load(Relaxed),
        peak: PEAK.load(Relaxed).saturating_sub(baseline),
    }
}

/// The limits an input must stay within: a single allocation over `max_alloc` or more
/// than `max_live` bytes live at once (above the baseline) fails the input.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_alloc: usize,
    pub max_live: usize,
}

impl Limits {
    /// 64 MiB per allocation and 128 MiB live, or `FUZZ_MAX_ALLOC_MB` / `FUZZ_MAX_LIVE_MB`.
    pub fn from_env() -> Limits {
        let mb = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(default)
                << 20
        };
        Limits {
            max_alloc: mb("FUZZ_MAX_ALLOC_MB", 64),
            max_live: mb("FUZZ_MAX_LIVE_MB", 128),
        }
    }

    pub fn check(&self, usage: Usage, input_len: usize) -> Result<(), String> {
        if usage.largest > self.max_alloc {
            return Err(format!(
                "a single allocation of {} bytes (limit {}) for {input_len} bytes of input",
                usage.largest, self.max_alloc
            ));
        }
        if usage.peak > self.max_live {
            return Err(format!(
                "{} bytes live at once (limit {}) for {input_len} bytes of input",
                usage.peak, self.max_live
            ));
        }
        Ok(())
    }
}
