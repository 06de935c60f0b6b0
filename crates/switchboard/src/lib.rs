//! Switchboard: a real-time messaging server. Clients connect over WebSocket, join rooms,
//! publish messages and see who is there; see docs/architecture.md for how the parts fit.

pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod connection;
pub mod documents;
pub mod hub;
pub mod ids;
pub mod limits;
pub mod mint;
pub mod outbox;
pub mod outgoing;
pub mod protocol;
pub mod rate;
pub mod responses;
pub mod server;
pub mod session;
pub mod shards;
pub mod socket;
pub mod tls;
pub mod web;
