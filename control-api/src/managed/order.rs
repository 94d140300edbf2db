//! What a managed scan order is before it is queued. The profile, port and size checks
//! are [`portscope_input::order`] (re-exported here); their errors are 400s.

use crate::http::error::ApiError;
pub use portscope_input::order::{
    check_size, cidr_addresses, profile_ports, OrderError, MAX_SCAN_PROBES,
};

/// A scan to start.
#[derive(Debug, Clone, Default)]
pub struct ScanOrder {
    /// IP, CIDR or host name.
    pub target: String,
    /// Domain label (defaults to the target when it is a name).
    pub domain: Option<String>,
    /// `fast` (default), `deep` or `custom`.
    pub profile: Option<String>,
    /// Port spec (implies `custom`).
    pub ports: Option<String>,
    /// Saved target this runs for.
    pub target_id: Option<String>,
}

impl From<OrderError> for ApiError {
    /// Every refused profile, port list or size is a 400 with the error's text.
    fn from(e: OrderError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}
