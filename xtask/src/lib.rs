//! Project tasks as a library: the network lab (`lab`) that end-to-end tests of other crates
//! bring up, the demo and the peer benchmark (`bench`). No scanner code lives here: the demo
//! and the benchmark drive the `portscope` binary (and the benchmark masscan, zmap and nmap).
//! `pg` runs a throwaway PostgreSQL server for tests, `nodes` an engine per scanner namespace,
//! `http` makes HTTP requests from a chosen lab address.

pub mod args;
pub mod bench;
pub mod cluster;
pub mod demo;
pub mod http;
pub mod lab;
pub mod nodes;
pub mod pg;
pub mod release;
pub mod soak;
pub mod stack;
