//! Identifiers: connection ids unique within the process, random tokens for epochs.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// 64 unpredictable-enough bits: the standard library seeds `RandomState` from the OS.
/// Used for names (epochs, node ids), never for secrets.
pub fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// A short random token, e.g. an epoch: 12 base-36 characters.
pub fn random_token() -> String {
    base36(random_u64(), 12)
}

/// This process's name among the nodes sharing a Redis, and the prefix of its connection
/// ids, so that ids stay unique across nodes and restarts.
pub fn node_id() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| base36(random_u64(), 6))
}

/// The next connection id: `<node>.<counter>`, e.g. `k3f9a2.1f`.
pub fn next_conn_id() -> (u64, String) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (n, format!("{}.{}", node_id(), base36(n, 0)))
}

/// `n` in base 36, left-padded with zeros to `width` digits (and cut to the low `width`
/// digits when `width` is not zero).
fn base36(n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = if width > 0 {
        n % 36u64.pow(width as u32)
    } else {
        n
    };
    let mut out = Vec::new();
    while n > 0 || out.is_empty() {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.resize(out.len().max(width), b'0');
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_are_unique() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| next_conn_id().1).collect();
        assert_eq!(ids.len(), 1000);
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 12);
    }
}
