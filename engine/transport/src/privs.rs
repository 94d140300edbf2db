//! Capability checks and dropping. (Being written: see the transport task.)
