//! Redis's own figures for a step: `INFO all` read at the start and at the end of the
//! measured window (one plain RESP request on a fresh connection), and the differences per
//! message published: commands, script time, event-loop reads (how well the nodes batch),
//! bytes in and out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `INFO all` as key → value (`cmdstat_evalsha` → `calls=…,usec=…,…`).
pub struct Info(HashMap<String, String>);

/// Reads `INFO all`; `None` when Redis does not answer within a second.
pub async fn read(addr: SocketAddr) -> Option<Info> {
    tokio::time::timeout(Duration::from_secs(1), async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n")
            .await
            .ok()?;
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut chunk = [0u8; 8192];
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            // `$<len>\r\n<text>\r\n`
            let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
                continue;
            };
            let len: usize = std::str::from_utf8(buf.get(1..eol)?).ok()?.parse().ok()?;
            if buf.len() >= eol + 2 + len {
                let text = String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]);
                let map = text
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                    .collect();
                return Some(Info(map));
            }
        }
    })
    .await
    .ok()
    .flatten()
}

impl Info {
    fn num(&self, key: &str) -> Option<f64> {
        self.0.get(key)?.parse().ok()
    }

    /// Every command's (calls, usec) from `cmdstat_<name>` lines.
    fn commands(&self) -> HashMap<&str, (f64, f64)> {
        let mut out = HashMap::new();
        for (k, v) in &self.0 {
            let Some(name) = k.strip_prefix("cmdstat_") else {
                continue;
            };
            let field = |f: &str| -> f64 {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('='))
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0.0)
            };
            out.insert(name, (field("calls"), field("usec")));
        }
        out
    }
}

/// The step's Redis fields, per message published during the window.
pub fn fields(before: &Info, after: &Info, published: u64, out: &mut Map<String, Value>) {
    let per = |key: &str| -> Option<f64> {
        let d = after.num(key)? - before.num(key)?;
        (published > 0).then(|| (d / published as f64 * 1000.0).round() / 1000.0)
    };
    out.insert(
        "redis_commands_per_publish".into(),
        json!(per("total_commands_processed")),
    );
    // Event-loop reads of client sockets: fewer per publish = more commands per round trip.
    out.insert(
        "redis_reads_per_publish".into(),
        json!(per("total_reads_processed")),
    );
    out.insert(
        "redis_writes_per_publish".into(),
        json!(per("total_writes_processed")),
    );
    out.insert(
        "redis_net_in_per_publish".into(),
        json!(per("total_net_input_bytes")),
    );
    out.insert(
        "redis_net_out_per_publish".into(),
        json!(per("total_net_output_bytes")),
    );
    // Redis's own CPU accounting (main thread and background threads together).
    let cpu = |i: &Info| Some(i.num("used_cpu_user")? + i.num("used_cpu_sys")?);
    if let (Some(c0), Some(c1)) = (cpu(before), cpu(after)) {
        if published > 0 {
            out.insert(
                "redis_cpu_us_per_publish".into(),
                json!(((c1 - c0) / published as f64 * 1e6 * 10.0).round() / 10.0),
            );
        }
    }
    // The commands run during the window: calls per publish and µs per call.
    let (b, a) = (before.commands(), after.commands());
    let mut cmds = Map::new();
    let mut names: Vec<&&str> = a.keys().collect();
    names.sort();
    for name in names {
        let (c1, u1) = a[*name];
        let (c0, u0) = b.get(*name).copied().unwrap_or((0.0, 0.0));
        let calls = c1 - c0;
        if calls <= 0.0 || published == 0 {
            continue;
        }
        cmds.insert(
            (*name).to_owned(),
            json!({
                "per_publish": (calls / published as f64 * 1000.0).round() / 1000.0,
                "us_per_call": ((u1 - u0) / calls * 100.0).round() / 100.0,
            }),
        );
    }
    out.insert("redis_commands".into(), Value::Object(cmds));
}
