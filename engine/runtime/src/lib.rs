//! Scan runtime (being written).
