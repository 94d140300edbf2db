//! The JSON shapes of `/api/v1` (seed 003 names: `reportUrl`, `gradeScore`, camelCase
//! timestamps) and of the monitor webhook: where managed rows become JSON. A saved target
//! and an alert serialize themselves (their serde attributes on [`TargetRow`] and
//! [`AlertRow`] are their JSON and their OpenAPI schema); the rest is built here.

use super::S;
use crate::http::error::ApiError;
use crate::managed::alerts::AlertKind;
use crate::managed::findings::{self, OpenPort};
use crate::managed::iso_ms;
use crate::managed::store::{AlertRow, MPortRow, MScanRow, TargetRow};
use crate::model::Status;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use portscope_core::results::PortState;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `/report/{id}?key=...`.
pub fn report_url(r: &MScanRow) -> String {
    format!("/report/{}?key={}", r.id, r.report_key)
}

pub(super) fn opt_iso(secs: Option<i64>) -> Value {
    secs.map_or(Value::Null, |s| json!(iso_ms(s * 1000)))
}

/// Open ports of a scan; `new` lists the (host, port) pairs that opened since the previous
/// scan of the target (its `new_open_port` alerts).
pub(crate) fn open_ports(ports: &[MPortRow], new: &[(String, i64)]) -> Vec<OpenPort> {
    ports
        .iter()
        .filter(|p| p.state == PortState::Open.as_str())
        .map(|p| OpenPort {
            host: p.host.clone(),
            port: u16::try_from(p.port).unwrap_or(0),
            banner: p.banner.clone(),
            new: new.iter().any(|(h, q)| *h == p.host && *q == p.port),
        })
        .collect()
}

/// The (host, port) pairs a scan found newly open (from its alerts).
pub(crate) async fn newly_open(s: &S, scan: &str) -> Result<Vec<(String, i64)>, ApiError> {
    Ok(s.service
        .store()
        .alerts_of_scan(scan)
        .await?
        .into_iter()
        .filter(|a| a.kind == AlertKind::NewOpenPort)
        .map(|a| (a.host, a.port))
        .collect())
}

pub(super) fn port_json(p: &MPortRow) -> Value {
    let port = u16::try_from(p.port).unwrap_or(0);
    json!({
        "host": p.host, "port": port, "state": p.state,
        "service": crate::model::service_name(port), "banner": p.banner,
    })
}

/// Per host: open, filtered and (once complete) closed counts. Hosts of a CIDR appear
/// when they had an open or filtered port; named addresses always appear.
pub fn host_summary(row: &MScanRow, ports: &[MPortRow]) -> Vec<Value> {
    let mut hosts: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for a in row.addresses.split(',').filter(|a| !a.contains('/')) {
        hosts.entry(a.to_string()).or_default();
    }
    for p in ports {
        let e = hosts.entry(p.host.clone()).or_default();
        if p.state == PortState::Open.as_str() {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
    hosts
        .into_iter()
        .map(|(host, (open, filtered))| {
            let closed =
                (row.status == Status::Complete).then(|| (row.port_count - open - filtered).max(0));
            json!({"host": host, "open": open, "filtered": filtered, "closed": closed})
        })
        .collect()
}

/// The full scan view (GET `/scan/{id}`), partial while running.
pub fn scan_json(row: &MScanRow, ports: &[MPortRow], new: &[(String, i64)]) -> Value {
    let found = findings::findings(&open_ports(ports, new));
    let counts = findings::counts(&found);
    let open = ports
        .iter()
        .filter(|p| p.state == PortState::Open.as_str())
        .count();
    let filtered = ports.len() - open;
    let complete = row.status == Status::Complete;
    json!({
        "id": row.id,
        "target": row.target,
        "domain": row.domain,
        "status": row.status,
        "profile": row.profile,
        "ports": row.ports,
        "addresses": row.addresses.split(',').collect::<Vec<_>>(),
        "grade": row.grade,
        "gradeScore": row.grade_score,
        "reportUrl": report_url(row),
        "fixUrl": format!("/api/v1/scan/{}/fix", row.id),
        "createdAt": iso_ms(row.created_at_ms),
        "startedAt": opt_iso(row.started_at),
        "completedAt": opt_iso(row.completed_at),
        "error": row.error,
        "progress": {"chunksComplete": row.chunks_complete, "totalChunks": row.total_chunks},
        "partial": !complete,
        "summary": {
            "hosts": host_summary(row, ports).len(),
            "open": open,
            "filtered": filtered,
            "findings": counts,
        },
        "results": ports.iter().map(port_json).collect::<Vec<_>>(),
        "findings": found,
    })
}

pub(super) fn queued_json(row: &MScanRow) -> Value {
    json!({"id": row.id, "status": row.status, "reportUrl": report_url(row)})
}

pub(super) fn created(row: &MScanRow) -> Response {
    (StatusCode::CREATED, Json(queued_json(row))).into_response()
}

/// Alert JSON (keys sorted, as in every `json!` body).
pub fn alert_json(a: &AlertRow) -> Value {
    serde_json::to_value(a).unwrap_or_default()
}

/// A monitor webhook's body: `{event: "alerts", scanId, targetId, target, alerts}`.
pub fn monitor_body(row: &MScanRow, alerts: &[AlertRow]) -> Vec<u8> {
    let body = json!({
        "event": "alerts",
        "scanId": row.id,
        "targetId": row.target_id,
        "target": row.target,
        "alerts": alerts.iter().map(alert_json).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Saved-target JSON (keys sorted, as in every `json!` body).
pub(super) fn target_json(t: &TargetRow) -> Value {
    serde_json::to_value(t).unwrap_or_default()
}
