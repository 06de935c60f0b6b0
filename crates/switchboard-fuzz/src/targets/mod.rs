//! The harnesses. Each takes arbitrary bytes and returns `Err` when an invariant breaks;
//! the engine also fails an input that panics or allocates over the limits.

pub mod protocol;
pub mod ws_decoder;
pub mod ws_handshake;
pub mod yjs_wire;

pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&[u8]) -> Result<(), String>,
    /// Seed inputs built with the real encoders (`switchboard-fuzz seeds` writes them to
    /// `corpus/<name>/`).
    pub seeds: fn() -> Vec<(&'static str, Vec<u8>)>,
    /// The folder of `corpus/` holding its seeds (targets may share one).
    pub corpus: &'static str,
    /// Tokens the mutator inserts.
    pub dict: &'static [&'static [u8]],
    pub max_len: usize,
}

pub const TARGETS: &[Target] = &[
    ws_decoder::TARGET,
    ws_handshake::TARGET,
    protocol::TARGET,
    yjs_wire::TARGET,
    yjs_wire::APPLY,
];

pub fn find(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// `Err(message)` unless `cond`.
pub(crate) fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}
