//! Connection limits: WebSocket connections in total and per client IP address; HTTP
//! connections that are not WebSockets (yet), with the oldest closed to make room; and the
//! process's file-descriptor budget that both must fit in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub struct ConnectionLimits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// A slot held by one open connection; dropping it frees the slot.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for a connection from `ip`, or says which limit is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.total >= self.max_total {
            return Err("the server is at its connection limit");
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err("too many connections from this address");
        }
        *n += 1;
        c.total += 1;
        Ok(Slot {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// HTTP connections that are not WebSockets: handshakes in progress, requests for pages and
/// `/healthz`, idle keep-alive connections. Every accepted TCP connection is one until it
/// upgrades or ends, so a client that opens connections and sends nothing is bounded too.
///
/// At a limit the *oldest* such connection is closed to make room, not the new one: an
/// honest request is answered within milliseconds of connecting, so silent connections
/// (however many are opened) never stop `/healthz` or a WebSocket handshake from getting in.
pub struct PendingLimits {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<PendingState>,
}

#[derive(Default)]
struct PendingState {
    next_id: u64,
    /// By age: ids increase.
    all: BTreeMap<u64, (IpAddr, Arc<Notify>)>,
    per_ip: HashMap<IpAddr, BTreeSet<u64>>,
}

impl PendingState {
    fn remove(&mut self, id: u64) -> Option<Arc<Notify>> {
        let (ip, evict) = self.all.remove(&id)?;
        if let Some(ids) = self.per_ip.get_mut(&ip) {
            ids.remove(&id);
            if ids.is_empty() {
                self.per_ip.remove(&ip);
            }
        }
        Some(evict)
    }
}

/// An HTTP connection's place among the pending ones; dropping it frees the place.
pub struct PendingSlot {
    limits: Arc<PendingLimits>,
    id: u64,
    /// Notified when the connection is closed to make room for a newer one.
    pub evicted: Arc<Notify>,
}

impl PendingLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<PendingLimits> {
        Arc::new(PendingLimits {
            max_total: max_total.max(1),
            max_per_ip: max_per_ip.max(1),
            state: Mutex::new(PendingState::default()),
        })
    }

    /// Admits a new connection from `ip`, evicting the oldest one of that address (or of
    /// all) where a limit is reached. Returns the slot and how many were evicted.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> (PendingSlot, usize) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = 0;
        let oldest_of_ip = st
            .per_ip
            .get(&ip)
            .filter(|ids| ids.len() >= self.max_per_ip)
            .and_then(|ids| ids.first().copied());
        if let Some(id) = oldest_of_ip {
            if let Some(n) = st.remove(id) {
                n.notify_one();
                evicted += 1;
            }
        }
        if st.all.len() >= self.max_total {
            if let Some(id) = st.all.keys().next().copied() {
                if let Some(n) = st.remove(id) {
                    n.notify_one();
                    evicted += 1;
                }
            }
        }
        let id = st.next_id;
        st.next_id += 1;
        let evict = Arc::new(Notify::new());
        st.all.insert(id, (ip, evict.clone()));
        st.per_ip.entry(ip).or_default().insert(id);
        (
            PendingSlot {
                limits: self.clone(),
                id,
                evicted: evict,
            },
            evicted,
        )
    }

    /// Pending connections right now.
    pub fn count(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .all
            .len()
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut st = self.limits.state.lock().unwrap_or_else(|e| e.into_inner());
        st.remove(self.id);
    }
}

/// File descriptors kept free for what is not a client connection: the listener, the
/// document store, log files, the runtime's own.
pub const FD_RESERVE: usize = 64;

/// Raises the soft limit on open files to the hard limit (as Go and nginx's
/// `worker_rlimit_nofile` do: the soft default, often 1,024, is far below what a server
/// needs) and returns the limit in force, or `None` where it cannot be read.
pub fn raise_fd_limit() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through a valid, exclusive pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the `rlimit` behind a valid pointer to a local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Some(usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
}

/// Fits the connection limits into `fd_limit` open files: returns (WebSocket connections,
/// pending HTTP connections) such that both together, plus [`FD_RESERVE`], never need more
/// descriptors than the process may open. Accepting then never fails for want of one, so
/// `/healthz` keeps answering when the server is full.
pub fn fit_to_fds(max_connections: usize, max_pending: usize, fd_limit: usize) -> (usize, usize) {
    let usable = fd_limit.saturating_sub(FD_RESERVE).max(2);
    let pending = max_pending.min(usable / 4).max(1);
    let connections = max_connections.min(usable - pending).max(1);
    (connections, pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_connections_make_room_by_closing_the_oldest() {
        let limits = PendingLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let (a1, _) = limits.admit(a);
        let (a2, _) = limits.admit(a);
        // A third from `a` closes a's oldest.
        let (a3, evicted) = limits.admit(a);
        assert_eq!(evicted, 1);
        assert_eq!(limits.count(), 2);
        drop(a1); // already gone: freeing it again changes nothing
        assert_eq!(limits.count(), 2);
        // `b` fits (3 in all); the next one, from anywhere, closes the oldest of all (a2).
        let (_b1, evicted) = limits.admit(b);
        assert_eq!(evicted, 0);
        let (_b2, evicted) = limits.admit(b);
        assert_eq!(evicted, 1);
        assert_eq!(limits.count(), 3);
        drop(a2);
        assert_eq!(limits.count(), 3, "a2 was evicted, not counted twice");
        drop(a3);
        assert_eq!(limits.count(), 2);
    }

    #[test]
    fn limits_fit_the_file_descriptors() {
        assert_eq!(
            fit_to_fds(100_000, 1024, 20_000),
            (20_000 - 64 - 1024, 1024)
        );
        assert_eq!(fit_to_fds(100, 1024, 20_000), (100, 1024));
        let (c, p) = fit_to_fds(100_000, 1024, 1024);
        assert!(c + p + FD_RESERVE <= 1024, "{c} {p}");
    }

    #[test]
    fn counts_per_ip_and_in_total() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limits.acquire(a).unwrap();
        let _s2 = limits.acquire(a).unwrap();
        assert!(limits.acquire(a).is_err());
        let _s3 = limits.acquire(b).unwrap();
        assert!(limits.acquire(b).is_err(), "total limit");
        drop(s1);
        assert!(limits.acquire(a).is_ok());
    }
}
