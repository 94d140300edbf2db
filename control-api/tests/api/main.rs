//! The self-scan API end to end in-process: router via `oneshot`, fake engine, temp SQLite
//! file, manual clock. Exact status codes, bodies and headers of seed 000. A scan is a job
//! scan: the API's in-process worker sends each chunk to the fake engine as its own engine
//! scan, and the tests answer those chunk runs.

#[path = "../support/mod.rs"]
mod support;

mod callbacks;
mod durable;
mod http;
mod limits;
mod requesters;
mod scans;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use portscope_control_api::engine::fake::FakeEngine;
use portscope_control_api::model::{ScanType, Status};
use portscope_core::results::PortState::{Closed, Filtered, Open};
use portscope_proto::{Request as EngineRequest, ScanKind};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::{Harness, T0};

const FAST_SPEC: &str = "21,22,23,25,53,80,110,111,135,139,143,443,445,465,587,993,995,1433,1521,2049,3306,3389,5432,5900,6379,8080,8443,9000,9200,11211,27017,50000";

fn assert_ratelimit_headers(r: &support::Reply) {
    assert_eq!(r.header("x-ratelimit-limit"), Some("30"), "{:?}", r.headers);
    assert!(r.header("x-ratelimit-remaining").is_some());
    assert!(r.header_u64("x-ratelimit-reset") > T0);
}
