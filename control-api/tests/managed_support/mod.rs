//! The old path of the managed-scan harness, for test files written against it: the harness
//! is `support::managed` (with `support`'s shared pieces). New tests use `mod support;`.

#[path = "../support/mod.rs"]
mod support;

pub use support::managed::*;
#[allow(unused_imports)] // each test binary uses a different part of the harness
pub use support::{Reply, T0_MS};
