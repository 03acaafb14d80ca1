//! Vigil's integration tests: one binary, one module per area.

mod alloc;
mod cli;
mod corpus;
mod detection;
mod engine;
mod transport;
mod util;
