//! Vigil's collector.
//!
//! Today it holds what the collector computes over flow records without
//! storage: [`summary`], the traffic summary (totals, top talkers, services,
//! connection states) that `vigil demo` and `vigil flows` print. Ingest over
//! gRPC, the store, detection and the query language arrive with their issues
//! and will build on the same record type from `vigil-proto`.
#![deny(missing_docs)]

pub mod ingest;
pub mod query;
pub mod server;
pub mod store;
pub mod summary;
