//! Vigil's sensor: capture, decode and bidirectional flow tracking.
//!
//! The data path, each stage a module:
//! [`capture`] (pcap/pcapng files) → [`decode`] (frames to `PacketMeta`) →
//! [`pipeline`] (dispatch to shards) → [`flow`] (per-shard tables) →
//! [`export`] (JSON lines, CSV, tables). [`fanout`] runs shared-nothing
//! workers (read, decode and track inline), the model of AF_PACKET fanout.
//! [`synth`] writes deterministic captures for tests, benchmarks and the demo.
#![deny(missing_docs)]

pub mod capture;
pub mod config;
pub mod decode;
pub mod export;
pub mod fanout;
pub mod flow;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod pipeline;
pub mod synth;
