//! Vigil's integration tests: one binary, one module per area.

mod access;
mod alloc;
mod api;
mod appmeta;
mod bundles;
mod cli;
mod clickhouse;
mod console;
mod corpus;
mod custody;
mod detection;
mod encap;
mod engine;
mod evidence;
mod layout;
mod live;
mod metrics;
mod package;
mod pki;
mod query;
mod share;
mod transport;
mod util;
