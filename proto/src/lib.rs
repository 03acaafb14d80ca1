//! Vigil's shared vocabulary.
//!
//! The sensor and the collector meet only through this crate: the flow record
//! that a sensor emits and a collector stores is defined here once, and so
//! is the `vigil.v1` gRPC protocol ([`wire`]) with checked conversions
//! between the two. The record's field names are the contract that
//! `vigil flows --format jsonl` prints and that tools build on.
#![deny(missing_docs)]

pub mod app;
pub mod attest;
pub mod flow;
pub mod keys;
pub mod merkle;
pub mod time;
pub mod units;
pub mod wire;

pub use app::{App, AppProto};
pub use flow::{
    CommunityId, ConnState, EndReason, FlowRecord, History, TunnelInfo, TunnelType, Vlans,
    proto_name,
};
pub use wire::{WireError, pb, valid_sensor_id};
