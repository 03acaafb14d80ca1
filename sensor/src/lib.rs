//! Vigil's sensor: packets in, bidirectional flow records out.
//!
//! The data path, each stage a module that depends only on those before
//! it: [`capture`] (pcap/pcapng files, AF_PACKET rings, libpcap: raw
//! frames) → [`decode`] (frames to `PacketMeta`s with their canonical flow
//! keys) → [`flow`] (per-worker flow tables on packet time) → [`run`] (the
//! run modes that drive them: file workers, the dispatcher, live AF_PACKET
//! fanout) → [`export`] (JSON lines, CSV, tables; the gRPC exporter with
//! its disk spool). [`config`] reads `sensor.toml`. Beside the path:
//! [`rewrite`] moves a capture's addresses into test ranges for replay onto
//! an interface, and [`synth`] writes deterministic captures for tests,
//! benchmarks and the demo.
#![deny(missing_docs)]

pub mod app;
pub mod capture;
pub mod config;
mod cpu;
pub mod decode;
pub mod export;
pub mod flow;
#[cfg(any(fuzzing, test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod metrics;
pub mod rewrite;
pub mod run;
pub mod synth;
