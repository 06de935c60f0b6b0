//! `switchboard-fuzz`: runs the fuzz harnesses (docs/fuzzing.md).
//!
//! ```text
//! switchboard-fuzz run [--seconds S] [--jobs J] [--seed N] [--out DIR] [TARGET...]
//! switchboard-fuzz replay TARGET FILE|DIR|HEX...
//! switchboard-fuzz add TARGET HEX NAME      keep an input in the checked-in corpus
//! switchboard-fuzz seeds [TARGET...]        rewrite the generated seeds in corpus/
//! switchboard-fuzz list
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use switchboard_fuzz::alloc::Limits;
use switchboard_fuzz::engine::{self, Options, SharedInput};
use switchboard_fuzz::targets::{self, Target, TARGETS};

/// SanitizerCoverage registers each instrumented module's counters here (see cov.rs).
///
/// # Safety
/// Called by module constructors with the bounds of a counter array.
#[no_mangle]
pub unsafe extern "C" fn __sanitizer_cov_8bit_counters_init(start: *mut u8, stop: *mut u8) {
    // SAFETY: as the caller promises.
    unsafe { switchboard_fuzz::cov::register(start, stop) }
}

/// Only emitted with `-sanitizer-coverage-pc-table`; defined so such builds link too.
#[no_mangle]
pub extern "C" fn __sanitizer_cov_pcs_init(_start: *const usize, _stop: *const usize) {}

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  switchboard-fuzz run [--seconds S] [--jobs J] [--seed N] [--out DIR] [TARGET...]\n  \
         switchboard-fuzz replay TARGET FILE|DIR|HEX...\n  switchboard-fuzz add TARGET HEX NAME\n  \
         switchboard-fuzz seeds [TARGET...]\n  switchboard-fuzz list"
    );
    ExitCode::from(2)
}

fn default_out() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz")
}

fn target_or_exit(name: &str) -> &'static Target {
    targets::find(name).unwrap_or_else(|| {
        let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
        eprintln!("unknown target {name:?}; targets: {}", names.join(", "));
        std::process::exit(2)
    })
}

struct RunArgs {
    seconds: f64,
    jobs: usize,
    seed: Option<u64>,
    out: PathBuf,
    shared: Option<PathBuf>,
    targets: Vec<&'static Target>,
}

fn parse_run(args: &[String]) -> Option<RunArgs> {
    let mut r = RunArgs {
        seconds: 30.0,
        jobs: 1,
        seed: None,
        out: default_out(),
        shared: None,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => r.seconds = it.next()?.parse().ok()?,
            "--jobs" => r.jobs = it.next()?.parse::<usize>().ok()?.max(1),
            "--seed" => r.seed = Some(it.next()?.parse().ok()?),
            "--out" => r.out = PathBuf::from(it.next()?),
            "--shared" => r.shared = Some(PathBuf::from(it.next()?)),
            name if !name.starts_with('-') => r.targets.push(target_or_exit(name)),
            _ => return None,
        }
    }
    if r.targets.is_empty() {
        r.targets = TARGETS.iter().collect();
    }
    Some(r)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage();
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "run" => match parse_run(rest) {
            Some(r) => supervise(&r),
            None => usage(),
        },
        "worker" => match parse_run(rest) {
            Some(r) if r.targets.len() == 1 => {
                let opts = Options {
                    // FUZZ_TIMEOUT: seconds one input may run before it counts as a hang.
                    timeout: Duration::from_secs(
                        std::env::var("FUZZ_TIMEOUT")
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(10),
                    ),
                    seconds: r.seconds,
                    seed: r.seed.unwrap_or(1),
                    out: r.out,
                    shared: r.shared,
                    limits: Limits::from_env(),
                };
                if engine::fuzz(r.targets[0], &opts) {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            _ => usage(),
        },
        "replay" if rest.len() >= 2 => replay(target_or_exit(&rest[0]), &rest[1..]),
        "add" if rest.len() == 3 => {
            let target = target_or_exit(&rest[0]);
            let Some(data) = engine::unhex(&rest[1]) else {
                eprintln!("not hex: {}", rest[1]);
                return ExitCode::from(2);
            };
            let dir = engine::seed_dir(target);
            let path = dir.join(&rest[2]);
            match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &data)) {
                Ok(()) => {
                    println!("wrote {} ({} bytes)", path.display(), data.len());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
        "seeds" => {
            let chosen: Vec<&Target> = if rest.is_empty() {
                TARGETS.iter().collect()
            } else {
                rest.iter().map(|n| target_or_exit(n)).collect()
            };
            for t in chosen {
                let dir = engine::seed_dir(t);
                let _ = std::fs::create_dir_all(&dir);
                for (name, data) in (t.seeds)() {
                    let path = dir.join(name);
                    if let Err(e) = std::fs::write(&path, &data) {
                        eprintln!("{}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    println!("{} ({} bytes)", path.display(), data.len());
                }
            }
            ExitCode::SUCCESS
        }
        "list" => {
            for t in TARGETS {
                println!("{:14} {}", t.name, t.about);
            }
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}

/// Runs inputs once each (files, every file of a directory, or hex strings).
fn replay(target: &Target, items: &[String]) -> ExitCode {
    engine::quiet_panics();
    let limits = Limits::from_env();
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for item in items {
        let path = Path::new(item);
        if path.is_dir() {
            for (p, d) in engine::read_dir_inputs(path) {
                inputs.push((p.display().to_string(), d));
            }
        } else if path.is_file() {
            match std::fs::read(path) {
                Ok(d) => inputs.push((item.clone(), d)),
                Err(e) => {
                    eprintln!("{item}: {e}");
                    return ExitCode::from(2);
                }
            }
        } else if let Some(d) = engine::unhex(item) {
            inputs.push(("hex".into(), d));
        } else {
            eprintln!("{item}: neither a file nor hex");
            return ExitCode::from(2);
        }
    }
    let mut failed = 0;
    for (name, data) in &inputs {
        match engine::execute(target, data, &limits) {
            Ok(()) => println!("ok      {name}"),
            Err(what) => {
                failed += 1;
                println!("FAILED  {name}: {what}\n        hex: {}", engine::hex(data));
            }
        }
    }
    println!("{} passed, {failed} failed", inputs.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

struct Running {
    target: &'static Target,
    child: Child,
    shared: PathBuf,
    deadline: Instant,
}

/// Runs each target in a worker process, `jobs` at a time, and reports the input that
/// killed a worker (abort, crash, hang) from the file the worker mirrors its input to.
fn supervise(r: &RunArgs) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot find my own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base_seed = r.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    let started = Instant::now();
    let mut queue: Vec<&'static Target> = r.targets.iter().rev().copied().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    loop {
        while running.len() < r.jobs {
            let Some(target) = queue.pop() else { break };
            let dir = r.out.join(target.name);
            let _ = std::fs::create_dir_all(&dir);
            let shared = dir.join(".current-input");
            let seed = base_seed.wrapping_add(target.name.len() as u64 * 0x9e37_79b9);
            let child = Command::new(&exe)
                .arg("worker")
                .arg(target.name)
                .args(["--seconds", &r.seconds.to_string()])
                .args(["--seed", &seed.to_string()])
                .arg("--out")
                .arg(&r.out)
                .arg("--shared")
                .arg(&shared)
                .spawn();
            match child {
                Ok(child) => running.push(Running {
                    target,
                    child,
                    shared,
                    // Seeds, minimisation and a slow input get a grace period.
                    deadline: Instant::now() + Duration::from_secs_f64(r.seconds + 30.0),
                }),
                Err(e) => {
                    eprintln!("[{}] cannot start a worker: {e}", target.name);
                    failed.push(target.name);
                }
            }
        }
        if running.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut i = 0;
        while i < running.len() {
            let w = &mut running[i];
            let status = match w.child.try_wait() {
                Ok(Some(status)) => Some(status),
                Ok(None) if Instant::now() > w.deadline => {
                    let _ = w.child.kill();
                    let _ = w.child.wait();
                    report_dead(w, &r.out, "hang: the worker ran past its time (killed)");
                    failed.push(w.target.name);
                    running.swap_remove(i);
                    continue;
                }
                Ok(None) => None,
                Err(e) => {
                    eprintln!("[{}] wait failed: {e}", w.target.name);
                    None
                }
            };
            match status {
                None => i += 1,
                Some(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    if let Some(sig) = status.signal() {
                        let what = match sig {
                            6 => "the worker aborted (SIGABRT: a hang, a failed allocation or an abort)".to_owned(),
                            11 => "the worker crashed (SIGSEGV: a stack overflow or a memory error)".to_owned(),
                            _ => format!("the worker died of signal {sig}"),
                        };
                        report_dead(w, &r.out, &what);
                        failed.push(w.target.name);
                    } else if !status.success() {
                        failed.push(w.target.name); // it reported the failure itself
                    }
                    let _ = std::fs::remove_file(&w.shared);
                    running.swap_remove(i);
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    if failed.is_empty() {
        println!(
            "fuzz: {} targets passed in {secs:.0} s (seed {base_seed}; findings under {})",
            r.targets.len(),
            r.out.display()
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "fuzz: FAILED: {} (seed {base_seed}; inputs under {})",
            failed.join(", "),
            r.out.display()
        );
        ExitCode::FAILURE
    }
}

fn report_dead(w: &Running, out: &Path, what: &str) {
    match SharedInput::read(&w.shared) {
        Some(data) => engine::report_failure(w.target, out, &data, what),
        None => eprintln!("[{}] FAILED: {what} (input unknown)", w.target.name),
    }
}
