//! Engine <-> control-API message protocol: placeholder until the control-API issue.
//!
//! Frames will be a 4-byte big-endian length, a 1-byte version, then a JSON body; this crate
//! will hold the message types and the checked frame codec, and no I/O.
