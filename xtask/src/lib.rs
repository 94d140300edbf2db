//! Project tasks as a library: the network lab (`lab`) that end-to-end tests of other crates
//! bring up, and the demo. No scanner code lives here: the demo drives the `portscope` binary.

pub mod demo;
pub mod lab;
