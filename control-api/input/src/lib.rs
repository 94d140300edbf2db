//! Pure parsing and checking of untrusted API input: addresses, CIDR sets, forwarded
//! headers, callback URLs, scopes, targets and port profiles.
//!
//! **Invariant:** nothing here does I/O, is async or reads a clock: the control API does
//! the file reads, DNS lookups and HTTP around these checks and maps the error enums below
//! onto its HTTP errors. Being small and pure, this crate is what `control-api/fuzz`
//! fuzzes (the fuzz build then instruments this and its few dependencies, not the API's
//! whole tree).
//!
//! - [`netaddr`]: address normalisation, CIDRs, CIDR sets, the prefix-to-ASN table and
//!   the client address behind `X-Forwarded-For`.
//! - [`callback`]: which webhook URLs and addresses are acceptable.
//! - [`scope`]: managed-scan targets and token scopes.
//! - [`order`]: port profiles and the per-scan probe cap.

pub mod callback;
pub mod netaddr;
pub mod order;
pub mod scope;
