//! The managed-scan tables now live in [`crate::store`] (one module per table group, the
//! only SQL of the crate); this path stays for the callers.

pub use crate::store::{AlertRow, MPortRow, MScanRow, MStore, TargetRow, LIVE};
