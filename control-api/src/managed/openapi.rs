//! The OpenAPI document of the managed-scan API, served at `GET /api/v1/openapi.json`
//! (utoipa, from the handlers' annotations). Request bodies have schemas from their types;
//! response bodies from [`super::schema`], attached by its modifier.

use super::api;
use super::schema::{self as s, TypedResponses};
use crate::error::ErrorBody;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
