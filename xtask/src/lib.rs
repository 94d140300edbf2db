//! Lab library (being written).
