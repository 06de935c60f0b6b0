//! The mutation engine: an in-process loop that runs one target on mutated inputs for a
//! fixed time, keeps the inputs that reach new coverage, and stops at the first failure
//! (a panic, a broken invariant or an allocation over the limits). A supervisor process
//! runs each target in a worker child, so that an abort or a crash (stack overflow, failed
//! allocation) is still reported with the input that caused it.

use std::fs;
use std::io::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::alloc::{self, Limits};
use crate::cov::Coverage;
use crate::targets::Target;

/// A small, fast PRNG (xorshift64*); runs are reproducible from the seed they print.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// FNV-1a, for content-addressed file names.
pub fn hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

static PANIC_MESSAGE: Mutex<String> = Mutex::new(String::new());

/// Panics are caught and reported per input; the hook only remembers the message (code
/// under test may catch panics of its own, such as yrs's under `catch_unwind`).
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let mut m = PANIC_MESSAGE.lock().unwrap_or_else(|e| e.into_inner());
        m.clear();
        let _ = std::fmt::Write::write_fmt(&mut *m, format_args!("{info}"));
    }));
}

/// Runs one input: `Err` describes the failure.
pub fn execute(target: &Target, data: &[u8], limits: &Limits) -> Result<(), String> {
    let baseline = alloc::start();
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(data)));
    let usage = alloc::finish(baseline);
    match outcome {
        Ok(Ok(())) => limits.check(usage, data.len()),
        Ok(Err(broken)) => Err(format!("invariant broken: {broken}")),
        Err(_) => {
            let m = PANIC_MESSAGE.lock().unwrap_or_else(|e| e.into_inner());
            Err(format!("panic: {m}"))
        }
    }
}

/// The input being run, in a file both processes map, so the supervisor can name the
/// input that killed a worker.
pub struct SharedInput {
    ptr: *mut u8,
    cap: usize,
}

impl SharedInput {
    pub fn create(path: &Path, cap: usize) -> std::io::Result<SharedInput> {
        use std::os::fd::AsRawFd;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len((cap + 4) as u64)?;
        // SAFETY: a fresh shared mapping of a file of exactly this size.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap + 4,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedInput {
            ptr: ptr.cast(),
            cap,
        })
    }

    pub fn set(&mut self, data: &[u8]) {
        let n = data.len().min(self.cap);
        // SAFETY: the mapping is `cap + 4` bytes long and only this process writes it.
        unsafe {
            std::ptr::copy_nonoverlapping((n as u32).to_le_bytes().as_ptr(), self.ptr, 4);
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(4), n);
        }
    }

    /// Reads what a (dead) worker last stored.
    pub fn read(path: &Path) -> Option<Vec<u8>> {
        let bytes = fs::read(path).ok()?;
        let n = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        bytes.get(4..4 + n).map(<[u8]>::to_vec)
    }
}

/// Where a target's files go: `<out>/<target>/{corpus,crashes}`.
pub fn target_dir(out: &Path, target: &Target) -> PathBuf {
    out.join(target.name)
}

/// The checked-in seed corpus of a target.
pub fn seed_dir(target: &Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target.corpus)
}

pub fn read_dir_inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| fs::read(&p).ok().map(|d| (p, d)))
        .collect()
}

/// Saves a failing input and prints everything needed to turn it into a regression test.
pub fn report_failure(target: &Target, out: &Path, data: &[u8], what: &str) {
    let dir = target_dir(out, target).join("crashes");
    let _ = fs::create_dir_all(&dir);
    let file = dir.join(hash(data));
    let _ = fs::write(&file, data);
    let name = target.name;
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "[{name}] FAILED: {what}");
    let _ = writeln!(
        e,
        "[{name}] input ({} bytes, hex): {}",
        data.len(),
        hex(data)
    );
    let _ = writeln!(e, "[{name}] saved as {}", file.display());
    let _ = writeln!(
        e,
        "[{name}] replay: switchboard-fuzz replay {name} {}\n[{name}] keep as a regression: switchboard-fuzz add {name} {} <name>",
        file.display(),
        hex(data)
    );
}

static EXECS: AtomicU64 = AtomicU64::new(0);

/// Aborts the worker when one input runs longer than `timeout` (a hang): the supervisor
/// then reports the input from the shared file.
fn watchdog(name: &'static str, timeout: Duration) {
    std::thread::spawn(move || {
        let mut last = EXECS.load(Relaxed);
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let now = EXECS.load(Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() > timeout {
                eprintln!(
                    "[{name}] FAILED: hang: one input has run for over {} s (aborting the worker)",
                    timeout.as_secs()
                );
                std::process::abort();
            }
        }
    });
}

pub struct Options {
    pub timeout: Duration,
    pub seconds: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub shared: Option<PathBuf>,
    pub limits: Limits,
}

/// Greedy minimisation of a failing input, bounded in time: drops chunks while the input
/// still fails.
fn minimise(target: &Target, data: &[u8], limits: &Limits) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut best = data.to_vec();
    let mut chunk = best.len().div_ceil(2).max(1);
    while chunk >= 1 && Instant::now() < deadline {
        let mut i = 0;
        let mut progressed = false;
        while i < best.len() && Instant::now() < deadline {
            let mut cand = best[..i].to_vec();
            cand.extend_from_slice(&best[(i + chunk).min(best.len())..]);
            if execute(target, &cand, limits).is_err() {
                best = cand;
                progressed = true;
            } else {
                i += chunk;
            }
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    best
}

/// Runs one target for `opts.seconds`; false if it found a failure (already reported).
pub fn fuzz(target: &Target, opts: &Options) -> bool {
    quiet_panics();
    let name = target.name;
    let dir = target_dir(&opts.out, target);
    let corpus_dir = dir.join("corpus");
    let _ = fs::create_dir_all(&corpus_dir);
    let mut shared = opts
        .shared
        .as_ref()
        .and_then(|p| SharedInput::create(p, target.max_len).ok());
    watchdog(name, opts.timeout);
    let mut cov = Coverage::new();
    let mut rng = Rng::new(opts.seed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(opts.seconds);

    let mut run = |data: &[u8], cov: &mut Coverage| -> Result<bool, String> {
        if let Some(s) = shared.as_mut() {
            s.set(data);
        }
        EXECS.fetch_add(1, Relaxed);
        cov.clear();
        execute(target, data, &opts.limits)?;
        Ok(cov.update())
    };
    let fail = |data: &[u8], what: String| {
        let small = minimise(target, data, &opts.limits);
        let what = execute(target, &small, &opts.limits).err().unwrap_or(what);
        report_failure(target, &opts.out, &small, &what);
        false
    };

    // Seeds first: the checked-in corpus, then whatever earlier runs kept.
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let seeds = read_dir_inputs(&seed_dir(target));
    let n_seeds = seeds.len();
    for (_, data) in seeds.into_iter().chain(read_dir_inputs(&corpus_dir)) {
        let data: Vec<u8> = data.into_iter().take(target.max_len).collect();
        match run(&data, &mut cov) {
            Err(what) => return fail(&data, what),
            Ok(_) => corpus.push(data),
        }
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let loaded = corpus.len();
    println!(
        "[{name}] seed {}, {n_seeds} seeds + {} kept inputs, {} counters{}, {:.0} s",
        opts.seed,
        loaded - n_seeds,
        cov.counters(),
        if cov.counters() == 0 {
            " (not instrumented: blind mutation)"
        } else {
            ""
        },
        opts.seconds
    );

    let mut execs: u64 = 0;
    let mut last_status = Instant::now();
    let mut input = Vec::with_capacity(target.max_len);
    while Instant::now() < deadline {
        for _ in 0..64 {
            let parent = if rng.chance(2) && corpus.len() > 16 {
                corpus.len() - 1 - rng.below(16)
            } else {
                rng.below(corpus.len())
            };
            input.clear();
            input.extend_from_slice(&corpus[parent]);
            let rounds = 1 << rng.below(4);
            for _ in 0..rounds {
                let other = &corpus[rng.below(corpus.len())];
                mutate(&mut input, other, target, &mut rng);
            }
            input.truncate(target.max_len);
            execs += 1;
            match run(&input, &mut cov) {
                Err(what) => {
                    let data = input.clone();
                    return fail(&data, what);
                }
                Ok(true) => {
                    let _ = fs::write(corpus_dir.join(hash(&input)), &input);
                    corpus.push(input.clone());
                }
                Ok(false) => {}
            }
        }
        if last_status.elapsed() >= Duration::from_secs(30) {
            last_status = Instant::now();
            status(name, started, execs, corpus.len(), loaded, &cov);
        }
    }
    status(name, started, execs, corpus.len(), loaded, &cov);
    true
}

fn status(name: &str, started: Instant, execs: u64, corpus: usize, loaded: usize, cov: &Coverage) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "[{name}] {secs:.0} s: {execs} execs ({:.0}/s), corpus {corpus} (+{}), {} edges",
        execs as f64 / secs.max(1e-9),
        corpus - loaded,
        cov.edges()
    );
}

const INTERESTING_8: [u8; 12] = [
    0, 1, 2, 0x7d, 0x7e, 0x7f, 0x80, 0x81, 0xc0, 0xef, 0xfe, 0xff,
];
const INTERESTING_64: [u64; 14] = [
    0,
    1,
    125,
    126,
    127,
    0xffff,
    0x1_0000,
    1 << 20,
    1 << 24,
    1 << 28,
    1 << 31,
    u32::MAX as u64,
    i64::MAX as u64,
    u64::MAX,
];

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn insert(input: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    input.splice(at..at, bytes.iter().copied());
}

/// One random edit.
fn mutate(input: &mut Vec<u8>, other: &[u8], target: &Target, rng: &mut Rng) {
    let len = input.len();
    let pos = |rng: &mut Rng| rng.below(len + 1);
    match rng.below(14) {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = rng.next_u64() as u8;
        }
        2 if len > 0 => {
            let i = rng.below(len);
            input[i] = INTERESTING_8[rng.below(INTERESTING_8.len())];
        }
        3 if len > 0 => {
            let i = rng.below(len);
            input[i] = input[i].wrapping_add((rng.below(33) as u8).wrapping_sub(16));
        }
        4 => {
            // A big-endian length, as a WebSocket header carries them.
            let v = INTERESTING_64[rng.below(INTERESTING_64.len())];
            let width = [2usize, 4, 8][rng.below(3)];
            let bytes = &v.to_be_bytes()[8 - width..];
            let i = pos(rng);
            if rng.chance(2) && i + width <= len {
                input[i..i + width].copy_from_slice(bytes);
            } else {
                insert(input, i, bytes);
            }
        }
        5 => {
            // A LEB128 varint, as lib0 (Yjs) encodes lengths and counts.
            let mut bytes = Vec::new();
            let v = if rng.chance(2) {
                INTERESTING_64[rng.below(INTERESTING_64.len())]
            } else {
                rng.next_u64() >> rng.below(64)
            };
            varint(v, &mut bytes);
            let i = pos(rng);
            if rng.chance(2) && i + bytes.len() <= len {
                input[i..i + bytes.len()].copy_from_slice(&bytes);
            } else {
                insert(input, i, &bytes);
            }
        }
        6 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(32));
            input.drain(i..i + n);
        }
        7 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(64));
            let copy = input[i..i + n].to_vec();
            let at = pos(rng);
            insert(input, at, &copy);
        }
        8 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            let at = pos(rng);
            insert(input, at, &bytes);
        }
        9 if !other.is_empty() => {
            // Cross-over: a piece of another corpus input.
            let i = rng.below(other.len());
            let n = 1 + rng.below((other.len() - i).min(256));
            let at = pos(rng);
            if rng.chance(2) {
                input.truncate(at);
            }
            insert(input, at, &other[i..i + n]);
        }
        10 | 11 if !target.dict.is_empty() => {
            let token = target.dict[rng.below(target.dict.len())];
            let at = pos(rng);
            if rng.chance(2) && at + token.len() <= len {
                input[at..at + token.len()].copy_from_slice(token);
            } else {
                insert(input, at, token);
            }
        }
        12 if len > 1 => {
            input.truncate(rng.below(len));
        }
        _ => {
            // Repeat a byte: long runs reach length and depth limits.
            let b = if len > 0 {
                input[rng.below(len)]
            } else {
                rng.next_u64() as u8
            };
            let most = if rng.chance(8) { 1024 } else { 16 };
            let n = 1 + rng.below(most);
            let at = pos(rng);
            insert(input, at, &vec![b; n]);
        }
    }
}
