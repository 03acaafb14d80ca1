//! Vigil's collector.
//!
//! - [`server`]: the daemon — tonic `Ingest` (validated by [`ingest`],
//!   acknowledged after the commit) and `Query` services, Prometheus metrics,
//!   retention; configured by [`config`] (`collector.toml`).
//! - [`store`]: the [`store::FlowStore`] trait and the embedded SQLite engine.
//! - [`query`]: the analysts' filter language and query shapes.
//! - [`detect`]: detectors over the stored flows, against the protected
//!   assets; alerts with their evidence ([`webhook`] posts them).
//! - [`summary`]: the traffic summary that `vigil demo` prints.
//!
//! It depends on `vigil-proto` only: sensors reach it through gRPC.
#![deny(missing_docs)]

pub mod config;
pub mod detect;
pub mod ingest;
pub mod model;
pub mod query;
pub mod server;
pub mod store;
pub mod summary;
pub mod webhook;

#[cfg(test)]
mod testutil;
