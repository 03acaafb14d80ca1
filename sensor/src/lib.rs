//! Vigil's sensor: capture, decode and bidirectional flow tracking.
//!
//! The data path, each stage a module:
//! [`capture`] (pcap/pcapng files, AF_PACKET rings, libpcap) → [`decode`] (frames to `PacketMeta`) →
//! [`pipeline`] (runs; dispatch to shards) → [`flow`] (per-shard tables) →
//! [`export`] (JSON lines, CSV, tables). [`fanout`] runs shared-nothing
//! workers (read, decode and track inline): on capture files, each walking
//! the whole file for its share, and on streams split by flow, the model of
//! AF_PACKET fanout;
//! [`live`] runs them on live AF_PACKET sockets. [`rewrite`] moves a
//! capture's addresses into test ranges for replay onto an interface.
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
pub mod live;
pub mod pipeline;
pub mod rewrite;
pub mod synth;
