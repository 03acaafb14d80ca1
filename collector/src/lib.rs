//! Vigil's collector: sensors' batches in, flows stored, attacks on the
//! protected assets detected, flows and alerts answered.
//!
//! The path through it, each step a module:
//! - [`ingest`]: what a batch from a sensor must be (validation, a plain
//!   function over the wire message);
//! - [`store`]: narrow traits over [`model`] types, one query planner
//!   ([`store::plan`]), and two engines that render its plans: the
//!   embedded SQLite store and ClickHouse;
//! - [`detect`]: detectors over the committed flows, against the protected
//!   assets; incidents and alerts with their evidence ([`webhook`] posts
//!   them);
//! - [`query`]: the analysts' filter language, and the reference answers
//!   computed in memory.
//!
//! [`server`] runs them as a daemon (gRPC services, the writer and
//! detection threads, metrics, retention, TLS), configured by [`config`]
//! (`collector.toml`); [`summary`] is the traffic summary `vigil demo`
//! prints. Dependencies point one way: `model` depends on nothing here,
//! `store` on `model`, `detect` and `query` on `model`, `server` on all.
//!
//! It depends on `vigil-proto` only: sensors reach it through gRPC.
#![deny(missing_docs)]

pub mod config;
pub mod detect;
pub mod evidence;
pub mod http;
pub mod hunt;
pub mod ingest;
pub mod model;
pub mod query;
pub mod server;
pub mod share;
pub mod store;
pub mod summary;
pub mod tokens;
pub mod webhook;

#[cfg(test)]
mod testutil;
