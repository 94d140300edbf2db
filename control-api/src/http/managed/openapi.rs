//! The OpenAPI document of the managed-scan API, served at `GET /api/v1/openapi.json`
//! (utoipa, from the handlers' annotations). Request bodies have schemas from their types;
//! response bodies from [`super::schema`], attached by [`TypedResponses`], which also adds
//! the alias paths, the 400 / 429 answers every operation can give, the rate-limit
//! headers, the single-field request constraints the handlers enforce and the links
//! between operations.

use super as api;
use super::schema as s;
use crate::http::error::ErrorBody;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, HeaderBuilder, ObjectBuilder, RefOr, Response, Type};
use utoipa::{Modify, OpenApi};

/// Declares the bearer scheme the paths refer to.
#[derive(Debug)]
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The managed-scan API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Portscope managed-scan API",
        description = "Port scans of targets inside the scope of a bearer token (CIDRs and \
            domain names), with quotas, schedules, alerts, findings and SECURITY-FIX.md. \
            One scan is at most 536,870,912 probes (addresses x ports: a /8 on 32 ports, \
            a /16 on 8,192 ports, a deep scan of a /24); a larger target or port list is \
            `400 bad_request`. \
            Errors are JSON `{\"error\": CODE, \"message\": TEXT}`. Every response carries \
            RateLimit-Limit / -Remaining / -Reset (60 requests per IP per minute)."
    ),
    modifiers(&Bearer, &TypedResponses),
    paths(
        api::post_scan,
        api::get_scan,
        api::list_scans,
        api::retest,
        api::cancel,
        api::fix,
        api::results,
        api::summary,
        api::trigger_all,
        api::list_targets,
        api::create_target,
        api::get_target,
        api::update_target,
        api::delete_target,
        api::scan_target,
        api::list_alerts,
        api::acknowledge,
        api::resolve,
        api::report_page
    ),
    components(schemas(
        api::ScanBody,
        api::TargetBody,
        ErrorBody,
        s::ManagedErrorBody,
        s::ScanQueued,
        s::ScanView,
        s::ScanList,
        s::Cancelled,
        s::ResultsView,
        s::SummaryView,
        s::TriggerAll,
        s::TargetView,
        s::TargetList,
        s::AlertView,
        s::AlertList
    ))
)]
pub struct ManagedApiDoc;

/// Paths served twice: (alias, documented path, methods).
const ALIASES: &[(&str, &str)] = &[
    ("/api/v1/scans/{id}", "/api/v1/scan/{id}"),
    ("/api/v1/scans/{id}/fix", "/api/v1/scan/{id}/fix"),
];

/// The 2xx schema of each (method, path).
fn success_schema(method: &HttpMethod, path: &str) -> Option<&'static str> {
    use HttpMethod::{Delete, Get, Patch, Post, Put};
    Some(match (method, path) {
        (Post, "/api/v1/scan")
        | (Post, "/api/v1/scan/{id}/retest")
        | (Post, "/api/v1/targets/{id}/scan") => "ScanQueued",
        (Get, "/api/v1/scan/{id}") => "ScanView",
        (Get, "/api/v1/scans") => "ScanList",
        (Post, "/api/v1/scan/{id}/cancel") => "Cancelled",
        (Get, "/api/v1/scans/{id}/results") => "ResultsView",
        (Get, "/api/v1/scans/{id}/summary") => "SummaryView",
        (Post, "/api/v1/scans/trigger-all") => "TriggerAll",
        (Get, "/api/v1/targets") => "TargetList",
        (Post, "/api/v1/targets") | (Get | Patch | Put, "/api/v1/targets/{id}") => "TargetView",
        (Get, "/api/v1/alerts") => "AlertList",
        (Post, "/api/v1/alerts/{id}/acknowledge" | "/api/v1/alerts/{id}/resolve") => "AlertView",
        (Delete, _) => return None,
        _ => return None,
    })
}

fn json_ref(name: &str) -> Content {
    Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
        name,
    ))))
}

/// The rate-limit headers every `/api/v1` answer carries.
fn with_rate_headers(mut r: Response) -> Response {
    for name in [
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ] {
        r.headers.insert(
            name.to_string(),
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .build(),
        );
    }
    r
}

fn type_operation(method: &HttpMethod, path: &str, op: &mut Operation) {
    let limited = Response::new(
        "`rate_limited` (60 requests per IP per minute), or a quota: `monthly_limit`, \
         `concurrent_limit`, `queue_full`; `Retry-After` says when to retry",
    );
    op.responses
        .responses
        .entry("429".into())
        .or_insert(RefOr::T(limited));
    if !op.responses.responses.contains_key("400") {
        op.responses.responses.insert(
            "400".into(),
            RefOr::T(Response::new(
                "`bad_request`: a malformed body, query or forwarded address",
            )),
        );
    }
    for (status, resp) in op.responses.responses.iter_mut() {
        let RefOr::T(resp) = resp else { continue };
        if status.starts_with('2') {
            if let Some(name) = success_schema(method, path) {
                resp.content
                    .insert("application/json".into(), json_ref(name));
            }
            // Text answers (SECURITY-FIX.md) are strings.
            for c in resp.content.values_mut() {
                c.schema.get_or_insert_with(|| {
                    RefOr::T(ObjectBuilder::new().schema_type(Type::String).into())
                });
            }
        } else if status.starts_with('4') || status.starts_with('5') {
            resp.content
                .insert("application/json".into(), json_ref("ManagedErrorBody"));
        }
        *resp = with_rate_headers(std::mem::take(resp));
    }
}

/// Attaches the response schemas and adds the alias paths.
#[derive(Debug)]
pub struct TypedResponses;

impl Modify for TypedResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (alias, of) in ALIASES {
            if let Some(mut item) = doc.paths.paths.get(*of).cloned() {
                // Operation ids stay unique: the alias's get a suffix.
                for_each_operation(&mut item, |_, op| {
                    op.operation_id = op.operation_id.take().map(|id| format!("{id}_alias"));
                });
                doc.paths.paths.insert((*alias).to_string(), item);
            }
        }
        // PUT on a target is PATCH under another method.
        if let Some(item) = doc.paths.paths.get_mut("/api/v1/targets/{id}") {
            if item.put.is_none() {
                let mut put = item.patch.clone();
                if let Some(op) = put.as_mut() {
                    op.operation_id = Some("replace_target".into());
                }
                item.put = put;
            }
        }
        doc.paths
            .paths
            .insert("/api/v1/openapi.json".into(), openapi_path());
        doc.paths
            .paths
            .insert("/api/v1/scan/{id}/events".into(), events_path());
        tighten_requests(doc);
        add_links(doc);
        for (path, item) in doc.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let canonical = ALIASES
                .iter()
                .find(|(a, _)| a == path)
                .map_or(path.as_str(), |(_, of)| of);
            for_each_operation(item, |m, op| type_operation(&m, canonical, op));
        }
    }
}

fn int_schema(min: i64, max: Option<i64>, nullable: bool) -> RefOr<utoipa::openapi::Schema> {
    let t = if nullable {
        utoipa::openapi::schema::SchemaType::from_iter([Type::Integer, Type::Null])
    } else {
        utoipa::openapi::schema::SchemaType::new(Type::Integer)
    };
    RefOr::T(
        ObjectBuilder::new()
            .schema_type(t)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(min as f64))
            .maximum(max.map(|m| m as f64))
            .into(),
    )
}

fn enum_schema(values: &[&str], nullable: bool) -> RefOr<utoipa::openapi::Schema> {
    let mut t = utoipa::openapi::schema::SchemaType::new(Type::String);
    if nullable {
        t = utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]);
    }
    let mut values: Vec<Option<&str>> = values.iter().copied().map(Some).collect();
    if nullable {
        values.push(None);
    }
    RefOr::T(
        ObjectBuilder::new()
            .schema_type(t)
            .enum_values(Some(values))
            .into(),
    )
}

/// The constraints the handlers enforce on single fields, so that generated requests
/// that satisfy the document are accepted (cross-field rules, the scope and name
/// resolution are in the descriptions; they answer 400 / 403).
fn tighten_requests(doc: &mut utoipa::openapi::OpenApi) {
    for item in doc.paths.paths.values_mut() {
        for_each_operation(item, |_, op| {
            for p in op.parameters.iter_mut().flatten() {
                match p.name.as_str() {
                    "limit" => p.schema = Some(int_schema(1, Some(api::MAX_LIMIT), false)),
                    "offset" => p.schema = Some(int_schema(0, Some(api::MAX_OFFSET), false)),
                    "status" => {
                        p.schema = Some(enum_schema(&["open", "acknowledged", "resolved"], false))
                    }
                    _ => {}
                }
            }
        });
    }
    let Some(c) = doc.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(utoipa::openapi::Schema::Object(o))) = c.schemas.get_mut("TargetBody") {
        if let Some(prop) = o.properties.get_mut("interval") {
            // 0 or null: no schedule; otherwise MIN_INTERVAL..=MAX_INTERVAL (in words:
            // JSON Schema cannot say "0 or at least 300" without a oneOf).
            *prop = int_schema(0, Some(api::MAX_INTERVAL), true);
        }
    }
    let profiles = ["fast", "deep", "custom"];
    let sev = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"];
    for (schema, field, s) in [
        ("ScanBody", "profile", enum_schema(&profiles, true)),
        ("TargetBody", "profile", enum_schema(&profiles, true)),
        ("TargetBody", "alertMinSeverity", enum_schema(&sev, true)),
    ] {
        if let Some(RefOr::T(utoipa::openapi::Schema::Object(o))) = c.schemas.get_mut(schema) {
            if let Some(prop) = o.properties.get_mut(field) {
                *prop = s;
            }
        }
    }
    for (schema, examples) in [
        (
            "ScanBody",
            vec![
                serde_json::json!({"target": "198.18.0.5"}),
                serde_json::json!({"target": "198.18.0.6", "profile": "custom", "ports": "22,80,443"}),
            ],
        ),
        (
            "TargetBody",
            vec![serde_json::json!({"target": "198.18.0.7", "label": "web", "interval": 3600})],
        ),
    ] {
        if let Some(RefOr::T(utoipa::openapi::Schema::Object(o))) = c.schemas.get_mut(schema) {
            o.examples = examples;
        }
    }
}

/// OpenAPI links: the ids a create answers with, and the operations that take them.
const LINKS: &[(&str, &str, &str, &[&str])] = &[
    (
        "/api/v1/scan",
        "201",
        "$response.body#/id",
        &["get_scan", "fix", "results", "summary", "retest", "cancel"],
    ),
    (
        "/api/v1/targets",
        "201",
        "$response.body#/id",
        &[
            "get_target",
            "update_target",
            "scan_target",
            "delete_target",
        ],
    ),
];

fn add_links(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::link::LinkBuilder;
    for (path, status, from, to) in LINKS {
        let Some(op) = doc.paths.paths.get_mut(*path).and_then(|i| i.post.as_mut()) else {
            continue;
        };
        let Some(RefOr::T(resp)) = op.responses.responses.get_mut(*status) else {
            continue;
        };
        for id in *to {
            // utoipa 5 serialises `Link::operation_id` as `operation_id`; OpenAPI spells
            // it `operationId`, so it goes in as a flattened extension field.
            let spelled: utoipa::openapi::extensions::Extensions =
                [("operationId", *id)].into_iter().collect();
            resp.links.insert(
                (*id).to_string(),
                RefOr::T(
                    LinkBuilder::new()
                        .parameter("id", *from)
                        .extensions(Some(spelled))
                        .build(),
                ),
            );
        }
    }
}

/// GET `/api/v1/openapi.json` (no token).
fn openapi_path() -> PathItem {
    use utoipa::openapi::ResponseBuilder;
    let ok = ResponseBuilder::new()
        .description("This document (OpenAPI 3.1)")
        .content(
            "application/json",
            Content::new(Some(RefOr::T(ObjectBuilder::new().into()))),
        )
        .build();
    let op = get_operation(
        "managed_openapi",
        "The OpenAPI document of the managed-scan API",
    );
    PathItem::new(HttpMethod::Get, op.response("200", ok).build())
}

/// A GET operation of the managed-scan API written by hand (not by `utoipa::path`).
fn get_operation(id: &str, summary: &str) -> utoipa::openapi::path::OperationBuilder {
    utoipa::openapi::path::OperationBuilder::new()
        .operation_id(Some(id))
        .tag("managed scans")
        .summary(Some(summary))
}

/// GET `/api/v1/scan/{id}/events` ([`crate::http::sse`]).
fn events_path() -> PathItem {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::security::SecurityRequirement;
    use utoipa::openapi::ResponseBuilder;
    let stream = ResponseBuilder::new()
        .description(
            "Server-Sent Events: `progress` ({status, chunksComplete, totalChunks}) on each \
             change, `port` ({host, port, state, service}) per open or filtered port as it \
             is recorded, then one `result` (the GET document) when the scan is final; the \
             stream then ends",
        )
        .content("text/event-stream", Content::new(None::<RefOr<_>>))
        .build();
    PathItem::new(
        HttpMethod::Get,
        get_operation("scan_events", "Live progress and ports of a scan")
            .parameter(
                ParameterBuilder::new()
                    .name("id")
                    .parameter_in(ParameterIn::Path)
                    .required(utoipa::openapi::Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some("Scan id")),
            )
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .response("200", stream)
            .response("401", Response::new("`unauthorized`"))
            .response("404", Response::new("`not_found` (or not this token's)"))
            .build(),
    )
}

fn for_each_operation(item: &mut PathItem, mut f: impl FnMut(HttpMethod, &mut Operation)) {
    let slots = [
        (HttpMethod::Get, &mut item.get),
        (HttpMethod::Post, &mut item.post),
        (HttpMethod::Put, &mut item.put),
        (HttpMethod::Patch, &mut item.patch),
        (HttpMethod::Delete, &mut item.delete),
    ];
    for (m, op) in slots {
        if let Some(op) = op.as_mut() {
            f(m, op);
        }
    }
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::RefOr;
    use utoipa::OpenApi;

    /// Every `/api/v1` operation declares a typed 2xx (204 aside), a 4xx and a 429, each
    /// with a schema, and the aliases are documented.
    #[test]
    fn every_operation_is_typed() {
        let doc = super::ManagedApiDoc::openapi();
        let mut ops = 0;
        for (path, item) in doc
            .paths
            .paths
            .iter()
            .filter(|(p, _)| p.starts_with("/api/v1/"))
        {
            let mut item = item.clone();
            super::for_each_operation(&mut item, |_, op| {
                ops += 1;
                let r = &op.responses.responses;
                assert!(r.contains_key("429"), "{path}: no 429");
                assert!(r.keys().any(|k| k.starts_with('4') && k != "429"), "{path}");
                for (status, resp) in r {
                    let RefOr::T(resp) = resp else {
                        panic!("{path}: ref")
                    };
                    if status == "204" {
                        continue;
                    }
                    assert!(
                        !resp.content.is_empty()
                            && resp.content.values().all(|c| c.schema.is_some()),
                        "{path} {status}: no schema"
                    );
                }
            });
        }
        // 18 operations under /api/v1 (the 19th is /report), 2 aliases, PUT, the document,
        // the event stream.
        assert_eq!(ops, 23);
        assert!(doc.paths.paths.contains_key("/api/v1/scans/{id}"));
        assert!(doc.paths.paths.contains_key("/api/v1/scans/{id}/fix"));
    }
}
