//! Plain data types the collector's layers share: what ingest hands the
//! store ([`ingest`]), what analysts ask of stored flows ([`query`]) and
//! what detection concludes ([`alert`]).
//!
//! Values only: no I/O, no SQL, and no dependence on any other module of
//! this crate, so that the store, detection, query and server layers can
//! all depend on it and on nothing above themselves.

pub mod alert;
pub mod evidence;
pub mod ingest;
pub mod query;
