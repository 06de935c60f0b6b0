//! Coverage feedback on stable Rust: the crates under test are compiled with LLVM's
//! SanitizerCoverage pass (`-C passes=sancov-module` with inline 8-bit counters, see
//! `rustc-sancov.sh`), which gives every edge a byte counter and registers each module's
//! counters through `__sanitizer_cov_8bit_counters_init` (defined in the binary). An input
//! is kept when it makes some counter reach a new bucket (1, 2, 3, 4-7, 8-15, 16-31,
//! 32-127, 128+ hits), as libFuzzer and AFL do.
//!
//! Without the instrumentation (a plain `cargo build`), no counters register and the
//! engine runs as a blind mutation loop.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::Relaxed};

const MAX_REGIONS: usize = 1 << 14;

static STARTS: [AtomicPtr<u8>; MAX_REGIONS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_REGIONS];
static LENS: [AtomicUsize; MAX_REGIONS] = [const { AtomicUsize::new(0) }; MAX_REGIONS];
static REGIONS: AtomicUsize = AtomicUsize::new(0);

/// Records one module's counters (called from module constructors, before `main`).
///
/// # Safety
/// `start..stop` must be a counter array that lives for the whole process.
pub unsafe fn register(start: *mut u8, stop: *mut u8) {
    if start.is_null() || stop <= start {
        return;
    }
    let i = REGIONS.fetch_add(1, Relaxed);
    if i < MAX_REGIONS {
        STARTS[i].store(start, Relaxed);
        LENS[i].store(stop as usize - start as usize, Relaxed);
    }
}

fn bucket(hits: u8) -> u8 {
    match hits {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}

/// The counters of every instrumented module and the buckets seen so far.
pub struct Coverage {
    maps: Vec<(*mut u8, usize)>,
    seen: Vec<u8>,
    edges: usize,
}

impl Coverage {
    pub fn new() -> Coverage {
        let n = REGIONS.load(Relaxed).min(MAX_REGIONS);
        let maps: Vec<(*mut u8, usize)> = (0..n)
            .map(|i| (STARTS[i].load(Relaxed), LENS[i].load(Relaxed)))
            .collect();
        let total = maps.iter().map(|m| m.1).sum();
        Coverage {
            maps,
            seen: vec![0; total],
            edges: 0,
        }
    }

    /// How many counters are instrumented (0: no coverage feedback).
    pub fn counters(&self) -> usize {
        self.seen.len()
    }

    /// Edges hit at least once so far.
    pub fn edges(&self) -> usize {
        self.edges
    }

    pub fn clear(&mut self) {
        for &(p, n) in &self.maps {
            // SAFETY: registered counter arrays live for the whole process; the worker is
            // single-threaded while it runs inputs.
            unsafe { std::ptr::write_bytes(p, 0, n) };
        }
    }

    /// Folds the counters of the last run into what was seen; true if anything was new.
    pub fn update(&mut self) -> bool {
        let mut new = false;
        let mut base = 0;
        for &(p, n) in &self.maps {
            // SAFETY: as in `clear`.
            let counters = unsafe { std::slice::from_raw_parts(p, n) };
            for (chunk_i, chunk) in counters.chunks(8).enumerate() {
                if chunk.iter().all(|&c| c == 0) {
                    continue;
                }
                for (j, &c) in chunk.iter().enumerate() {
                    let b = bucket(c);
                    let seen = &mut self.seen[base + chunk_i * 8 + j];
                    if b & !*seen != 0 {
                        if *seen == 0 {
                            self.edges += 1;
                        }
                        *seen |= b;
                        new = true;
                    }
                }
            }
            base += n;
        }
        new
    }
}

impl Default for Coverage {
    fn default() -> Coverage {
        Coverage::new()
    }
}
