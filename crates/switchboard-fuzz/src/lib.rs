//! Fuzz harnesses for Switchboard's parsers, and the engine that drives them on stable
//! Rust (docs/fuzzing.md).

pub mod alloc;
pub mod cov;
pub mod engine;
pub mod targets;

/// Every allocation of a binary or test linking this crate is counted, so that the
/// harnesses can fail inputs that make the code under test reserve too much.
#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;
