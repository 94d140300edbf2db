//! Optional alert e-mail of managed-scan monitors: a small [`Mailer`] trait, the SMTP
//! implementation (lettre, rustls) used when `smtp-url` is configured, and address
//! checks. Not a mail queue: delivery is retried a few times, then logged as failed.

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::fmt;

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
