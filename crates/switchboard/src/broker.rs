//! How hubs on several nodes share rooms.
//!
//! The hub calls its broker at the points where a room's life crosses node boundaries:
//! when the room opens on this node, when it assigns a publication its offset, when
//! presence changes, and when the last local member leaves. The in-memory broker is the
//! single-node case: there are no peers to tell, so the room's epoch is born here and lives
//! as long as the room does. A Redis broker plugs in behind the same trait (pub/sub for
//! fan-out, streams for history, hashes for presence) without changing the hub's callers.

use std::sync::Arc;

use switchboard_ws::Frame;

pub trait Broker: Send + Sync + 'static {
    /// Names the broker in logs and `/healthz`.
    fn name(&self) -> &'static str;
    /// A room opens on this node: returns the epoch its offsets count in. A new epoch
    /// means the room's earlier offsets (and history) are gone.
    fn open_room(&self, room: &str) -> Arc<str>;
    /// A publication got `offset` in `room` on this node; other nodes must deliver `frame`
    /// to their members of the room.
    fn forward_message(&self, room: &str, offset: u64, frame: &Frame);
    /// Presence changed in `room`; other nodes must deliver `frame` to their members.
    fn forward_presence(&self, room: &str, frame: &Frame);
    /// The last member of `room` on this node left.
    fn close_room(&self, room: &str);
}

/// The single-node broker: every room lives in this process.
#[derive(Debug, Default)]
pub struct MemoryBroker;

impl Broker for MemoryBroker {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn open_room(&self, _room: &str) -> Arc<str> {
        crate::ids::random_token().into()
    }

    fn forward_message(&self, _room: &str, _offset: u64, _frame: &Frame) {
        // One node: the hub has already delivered to every member there is.
    }

    fn forward_presence(&self, _room: &str, _frame: &Frame) {}

    fn close_room(&self, _room: &str) {}
}
