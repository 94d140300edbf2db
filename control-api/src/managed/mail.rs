//! Optional alert e-mail of managed-scan monitors: a small [`Mailer`] trait, the SMTP
//! implementation (lettre, rustls) used when `smtp-url` is configured, address checks, and
//! the monitor e-mail itself ([`MonitorEmail`]): written by the transaction that completes
//! its scan as a durable delivery job ([`crate::delivery`]) and sent by a delivery worker
//! ([`send_monitor_email`]); an SMTP failure fails the job's run and the queue runs it
//! again, up to its attempts.

use super::findings::Severity;
use super::store::{AlertRow, MScanRow};
use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Sends one plain-text e-mail.
#[async_trait]
pub trait Mailer: Send + Sync + fmt::Debug + 'static {
    /// Sends `body` to `to`; the error says why not.
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String>;
}

/// Whether `s` is one acceptable recipient address (`name@domain`, at most 254 bytes).
pub fn valid_address(s: &str) -> bool {
    s.len() <= 254 && s.parse::<lettre::Address>().is_ok()
}

/// One monitor e-mail, as queued (the payload of a delivery job).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorEmail {
    /// The recipient (checked by [`valid_address`] when the target was saved).
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
}

impl MonitorEmail {
    /// The e-mail to `to` about scan `row`'s new alerts `picked` (at or above the target's
    /// threshold, not empty).
    pub fn of_alerts(to: String, row: &MScanRow, picked: &[AlertRow]) -> MonitorEmail {
        let worst = picked
            .iter()
            .filter_map(|a| Severity::parse(&a.severity))
            .max()
            .unwrap_or(Severity::Info);
        let subject = format!(
            "[portscope] {} alert(s) on {} ({})",
            picked.len(),
            row.target,
            worst.as_str()
        );
        let mut text = format!(
            "Scan {} of {} found changes since the previous scan:\n\n",
            row.id, row.target
        );
        for a in picked {
            text.push_str(&format!("- [{}] {}\n", a.severity, a.message));
        }
        text.push_str(&format!(
            "\nReport: /report/{}?key={}\n",
            row.id, row.report_key
        ));
        MonitorEmail { to, subject, text }
    }
}

/// Why a monitor e-mail was not sent (its delivery job's run fails; the queue runs it again).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// This node has no mailer (`smtp-url` is not configured here).
    #[error("no mailer on this node: configure smtp-url on every API node")]
    NoMailer,
    /// The SMTP server did not take it.
    #[error("{0}")]
    Smtp(String),
}

/// One run of a monitor e-mail's delivery job.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// The delivery job's id.
    pub delivery: &'a str,
    /// This run, from 1.
    pub attempt: usize,
    /// The queue's attempts in all.
    pub attempts: usize,
    /// The wait after a failed first run, doubled per run.
    pub backoff: Duration,
}

/// Sends a queued monitor e-mail through `mailer` once. A failed run (not the last) first
/// waits `run.backoff`, doubled per attempt, so the queue's runs spread out as the old
/// in-process retries did; a crash while waiting leaves the job to be run again.
pub async fn send_monitor_email(
    mailer: Option<&Arc<dyn Mailer>>,
    mail: &MonitorEmail,
    run: Run<'_>,
) -> Result<(), SendError> {
    let Run {
        delivery, attempt, ..
    } = run;
    let sent = match mailer {
        Some(m) => m
            .send(&mail.to, &mail.subject, &mail.text)
            .await
            .map_err(SendError::Smtp),
        None => Err(SendError::NoMailer),
    };
    match &sent {
        Ok(()) => tracing::info!(%delivery, to = %mail.to, attempt, "monitor e-mail sent"),
        Err(e) => {
            let last = attempt >= run.attempts;
            tracing::warn!(%delivery, to = %mail.to, attempt, last, error = %e,
                "monitor e-mail not sent");
            if !last {
                let doublings = attempt.saturating_sub(1).min(8) as u32;
                tokio::time::sleep(run.backoff * 2u32.pow(doublings)).await;
            }
        }
    }
    sent
}

/// SMTP through lettre.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The transport holds the credentials: never print it.
        f.debug_struct("SmtpMailer")
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// From `smtp-url` and `smtp-from`.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("smtp-url is not usable: {e}"))?
            .build();
        let from = from
            .parse::<Mailbox>()
            .map_err(|e| format!("smtp-from {from:?} is not an address: {e}"))?;
        Ok(SmtpMailer { transport, from })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|e| format!("bad recipient: {e}"))?;
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(body.to_string())
            .map_err(|e| format!("cannot build the message: {e}"))?;
        self.transport
            .send(msg)
            .await
            .map(|_| ())
            .map_err(|e| format!("SMTP: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_config() {
        assert!(valid_address("ops@example.com"));
        for bad in [
            "",
            "ops",
            "ops@",
            "a b@example.com",
            "ops@example.com\r\nBcc: x@y.z",
        ] {
            assert!(!valid_address(bad), "{bad}");
        }
        assert!(SmtpMailer::new("smtp://127.0.0.1:2525", "Portscope <alerts@example.com>").is_ok());
        assert!(SmtpMailer::new("nope://x", "alerts@example.com").is_err());
        assert!(SmtpMailer::new("smtp://127.0.0.1:2525", "not an address").is_err());
    }
}
