//! Latency histograms, process figures from /proc, and the report (a table and a JSON line).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Nanoseconds since the first call in this process: the clock of the timestamps the
/// benchmark puts in payloads (monotonic, so sender and receiver in one process agree).
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// Percentiles in milliseconds, as JSON fields `p50_ms`, `p90_ms`, …
pub fn latency_fields(h: &Histogram<u64>, prefix: &str, out: &mut Map<String, Value>) {
    let ms = |us: u64| us as f64 / 1000.0;
    let q = |p: f64| {
        if h.is_empty() {
            Value::Null
        } else {
            json!(ms(h.value_at_quantile(p)))
        }
    };
    out.insert(format!("{prefix}p50_ms"), q(0.5));
    out.insert(format!("{prefix}p90_ms"), q(0.9));
    out.insert(format!("{prefix}p99_ms"), q(0.99));
    out.insert(format!("{prefix}p999_ms"), q(0.999));
    out.insert(
        format!("{prefix}max_ms"),
        if h.is_empty() {
            Value::Null
        } else {
            json!(ms(h.max()))
        },
    );
    out.insert(format!("{prefix}samples"), json!(h.len()));
}

/// Resident memory of a process, in bytes (VmRSS from /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmRSS:")
}

/// The peak of a process's resident memory so far, in bytes (VmHWM from /proc/PID/status).
pub fn hwm_bytes(pid: u32) -> Option<u64> {
    status_bytes(pid, "VmHWM:")
}

fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Read and write system calls a process has made (`syscr`, `syscw` in /proc/PID/io:
/// `read`/`readv` and `write`/`writev`; the socket calls `recv*` and `send*` are not counted).
pub fn syscalls(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))?
            .trim()
            .parse()
            .ok()
    };
    Some((field("syscr:")?, field("syscw:")?))
}

/// CPU time (user + system) a process has used, in seconds. `None` for pid = ourselves.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

/// Process CPU usage between two samples: a share of one core.
pub struct CpuMeter {
    pid: Option<u32>,
    start: Option<f64>,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            pid,
            start: cpu_seconds(pid),
            at: Instant::now(),
        }
    }

    /// Share of one core used since `start` (1.0 = one core busy).
    pub fn share(&self) -> Option<f64> {
        let now = cpu_seconds(self.pid)?;
        let wall = self.at.elapsed().as_secs_f64();
        let start = self.start?;
        (wall > 0.0).then(|| ((now - start) / wall * 100.0).round() / 100.0)
    }
}

/// Busy time of the whole machine (all CPUs), from /proc/stat: to tell how much else was
/// running during a measurement.
pub struct MachineMeter {
    start: Option<(u64, u64)>,
}

fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

impl MachineMeter {
    pub fn start() -> MachineMeter {
        MachineMeter {
            start: machine_ticks(),
        }
    }

    /// CPUs busy on average since `start` (2.0 = both CPUs of a 2-CPU machine busy).
    pub fn busy_cpus(&self) -> Option<f64> {
        let (b0, t0) = self.start?;
        let (b1, t1) = machine_ticks()?;
        // Not available_parallelism(): that is the CPUs we may run on (one, pinned).
        let cpus = online_cpus();
        (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64 * cpus)
    }
}

fn online_cpus() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as f64
    } else {
        1.0
    }
}

/// Prints the JSON line on stdout and appends it to `file` when given.
pub fn emit(record: &Value, file: Option<&Path>) -> anyhow::Result<()> {
    let line = serde_json::to_string(record)?;
    println!("{line}");
    if let Some(path) = file {
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// A plain text table, columns padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| (*s).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let mut widths: Vec<usize> = self.header.iter().map(String::len).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(c.len());
                }
            }
        }
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        println!("{}", line(&self.header));
        for row in &self.rows {
            println!("{}", line(row));
        }
    }
}

/// A number for a table cell: `12.3k`, `1.25M`.
pub fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A JSON field as a table cell (`-` when absent).
pub fn cell(record: &Value, key: &str) -> String {
    match record.get(key) {
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(0.0);
            if n.is_f64() && v.fract() != 0.0 {
                format!("{v:.2}")
            } else {
                format!("{v}")
            }
        }
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "-".to_owned(),
    }
}
