//! The bench crate's library: what both `weft-bench` and the workspace's tests run. Today the
//! reliability runs (soak and chaos); the benchmark tools proper stay in the binary.

pub mod reliability;
