//! Vigil's shared vocabulary.
//!
//! The sensor and the collector meet only through this crate: the flow record
//! that a sensor emits and a collector stores is defined here once. The
//! `vigil.v1` gRPC messages join it with the transport issue; the record's
//! field names are already the contract that `vigil flows --format jsonl`
//! prints and that tools build on.
#![deny(missing_docs)]

pub mod flow;
pub mod time;

pub use flow::{
    CommunityId, ConnState, EndReason, FlowRecord, History, TunnelInfo, TunnelType, Vlans,
    proto_name,
};
