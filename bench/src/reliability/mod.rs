//! Reliability runs on the namespace cluster (`weft-testbed`), as commands that print figures:
//! the soak (`bench/soak`, and `crates/weft/tests/soak.rs`'s short version of the same code) and
//! the chaos scenarios (`bench/chaos`). A library so that the CI test runs exactly the code the
//! recorded runs ran. Everything here needs root.

pub mod apps;
pub mod chaos;
pub mod mesh;
pub mod soak;
pub mod traffic;
