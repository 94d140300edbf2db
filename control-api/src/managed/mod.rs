//! Managed scans (issue 4): the token-authenticated `/api/v1` API of seeds 001-003 for
//! port scans of scoped targets, and the per-scan HTML report at `/report/{id}`.
//!
//! - [`tokens`]: bearer tokens (hashed, CLI-managed). [`scope`]: what a token may scan.
//! - [`service`]: checks, quotas, job scans, cancel; [`finisher`]: completion, alerts,
//!   monitors; [`scheduler`]: due saved targets.
//! - [`store`]: the tables. [`findings`]: the severity rubric and grade.
//! - [`report`]: `SECURITY-FIX.md` and the HTML page; [`chart`]: its exposure chart
//!   (inline SVG). [`mail`]: alert e-mail (optional SMTP).
//!
//! The handlers, JSON shapes and OpenAPI documents of these routes are in
//! [`crate::http::managed`] and [`crate::http::seed002`].
//!
//! **Invariant:** every scan, however started (POST, retest, saved target, trigger-all,
//! scheduler), passes [`service::ManagedService::submit`], which re-checks the token's
//! scope; the engine only ever gets addresses, never names. This module does not serve
//! the self-scan API and does not change it.

pub mod alerts;
pub mod chart;
pub mod findings;
pub mod finisher;
pub mod mail;
pub mod monitor;
pub mod order;
pub mod report;
pub mod scheduler;
pub mod scope;
pub mod service;
pub mod store;
pub mod tokens;

pub use crate::util::random_hex;

/// Shortest schedule interval, seconds.
pub const MIN_INTERVAL: i64 = 300;
/// Longest schedule interval, seconds (366 days): larger values would push the next run
/// past any useful horizon and, unchecked, overflow the time arithmetic.
pub const MAX_INTERVAL: i64 = 366 * 86_400;

/// The UTC date of Unix seconds (clamped to the calendar `time` supports).
fn utc_date(secs: i64) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap_or(if secs < 0 {
            time::OffsetDateTime::UNIX_EPOCH
        } else {
            time::PrimitiveDateTime::MAX.assume_utc()
        })
        .date()
}

/// `2026-04-03T12:00:00.000Z` from Unix ms.
pub fn iso_ms(ms: i64) -> String {
    const FMT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        + time::Duration::milliseconds(ms.rem_euclid(1000));
    t.format(FMT).unwrap_or_default()
}

/// `serialize_with` helpers: how stored columns read in the JSON of `/api/v1`.
pub mod as_json {
    use serde::Serializer;

    /// Unix seconds as ISO 8601 ([`super::iso_ms`]).
    pub fn iso<S: Serializer>(secs: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::iso_ms(secs.saturating_mul(1000)))
    }

    /// Unix seconds, if any, as ISO 8601 (or `null`).
    pub fn opt_iso<S: Serializer>(secs: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match secs {
            Some(secs) => iso(secs, s),
            None => s.serialize_none(),
        }
    }

    /// A 0/1 column as a boolean.
    pub fn flag<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*v == 1)
    }
}

/// `2026-04-03` from Unix seconds.
pub fn date(secs: i64) -> String {
    let d = utc_date(secs);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Unix seconds of the first instant of the UTC month containing `secs`.
pub fn month_start_secs(secs: i64) -> i64 {
    let d = utc_date(secs);
    let first = d.replace_day(1).unwrap_or(d);
    first.midnight().assume_utc().unix_timestamp()
}

/// Unix seconds of the first instant of the next UTC month.
pub fn next_month_start_secs(secs: i64) -> i64 {
    let d = utc_date(secs);
    let (y, m) = match d.month() {
        time::Month::December => (d.year() + 1, time::Month::January),
        m => (d.year(), m.next()),
    };
    time::Date::from_calendar_date(y, m, 1)
        .map_or(i64::MAX, |f| f.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(iso_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_ms(1_711_940_800_123), "2024-04-01T03:06:40.123Z");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(month_start_secs(1_711_940_800), 1_711_929_600);
        assert_eq!(next_month_start_secs(1_711_940_800), 1_714_521_600);
        assert_eq!(next_month_start_secs(1_703_980_800), 1_704_067_200); // Dec -> Jan
    }
}
