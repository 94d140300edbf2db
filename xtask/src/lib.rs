//! Project tasks as a library: the network lab (`lab`) that end-to-end tests of other crates bring up. No scanner code lives here.

pub mod lab;
