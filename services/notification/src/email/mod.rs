//! Email over SMTP, for the dispatcher: the transport `SMTP_URL` names (lettre on tokio, TLS by
//! rustls), the message a notification becomes, and what the server's answer means for it.
//!
//! The message is `multipart/alternative` (the text part, then the HTML part, both rendered by
//! [`templates`]) with the notification's subject and the `Message-ID` `<notification_id@shop>`:
//! a resend after a crash between the server's acceptance and its record carries the same id,
//! so it is recognisable.

pub mod templates;

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use shop_shared::ids::NotificationId;

/// How long one SMTP command may take before the attempt counts as unreachable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// One email to send.
#[derive(Debug, Clone, Copy)]
pub struct Email<'a> {
    /// The notification's id (its `Message-ID` is `<id@shop>`).
    pub notification_id: NotificationId,
    /// The recipient's address.
    pub to: &'a str,
    /// The subject line.
    pub subject: &'a str,
    /// The text part.
    pub text: &'a str,
    /// The HTML part.
    pub html: &'a str,
}

/// Why an email was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Refused for good (a 5xx answer), or it cannot be an email at all (a recipient that is no
    /// address): never retried.
    #[error("{0}")]
    Permanent(String),
    /// Refused for now (a 4xx answer), or the server could not be reached: retried later.
    #[error("{0}")]
    Transient(String),
}

/// A connection to the mail server of `SMTP_URL`, and the sender address.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `SMTP_URL` with its password masked, for messages.
    url: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("url", &self.url)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer of `url` (`smtp://[user:pass@]host[:port]`: STARTTLS when the server offers
    /// it, port 25 by default; `smtps://…`: TLS from the start, port 465; lettre's `?tls=required`
    /// also works), sending as `from`. Nothing is connected until the first email.
    pub fn new(url: &str, from: &str) -> anyhow::Result<Self> {
        let shown = shop_shared::diagnose::redact(url);
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("SMTP_FROM={from:?} is not a mailbox ({e})"))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|e| {
            anyhow::anyhow!(
                "SMTP_URL={shown} is not a mail server URL (smtp://[user:pass@]host[:port] or smtps://…): {e}"
            )
        })?;
        if url.starts_with("smtp://") && !url.contains("tls=") {
            // STARTTLS whenever the server offers it.
            let host = host_of(url);
            let tls = TlsParameters::new(host.to_owned())
                .map_err(|e| anyhow::anyhow!("SMTP_URL={shown}: {e}"))?;
            builder = builder.tls(Tls::Opportunistic(tls));
        }
        Ok(Self {
            transport: builder.timeout(Some(COMMAND_TIMEOUT)).build(),
            from,
            url: shown,
        })
    }

    /// `SMTP_URL`, password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Hands `email` to the server; `Ok` once it took it.
    pub async fn send(&self, email: &Email<'_>) -> Result<(), SendError> {
        let to: Mailbox = email.to.parse().map_err(|e| {
            SendError::Permanent(format!(
                "the recipient {} is not an email address ({e})",
                shop_shared::input::shown(email.to)
            ))
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            .message_id(Some(message_id(email.notification_id)))
            .multipart(MultiPart::alternative_plain_html(
                email.text.to_owned(),
                email.html.to_owned(),
            ))
            .map_err(|e| SendError::Permanent(format!("the email cannot be built: {e}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Permanent(answer(&e))),
            Err(e) => Err(SendError::Transient(answer(&e))),
        }
    }
}

/// The `Message-ID` of a notification's email.
pub fn message_id(notification_id: NotificationId) -> String {
    format!("<{notification_id}@shop>")
}

/// The server's answer, or why there was none, in one line (the causes appended).
fn answer(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text.replace(['\r', '\n'], " ")
}

/// The host of a `smtp://[user:pass@]host[:port][/…]` URL.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port
            .split_once(']')
            .map_or(host_port, |(h, _)| h.trim_start_matches('['));
    }
    host_port.split(':').next().unwrap_or(host_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_read_past_credentials_port_and_path() {
        assert_eq!(host_of("smtp://mail.example.com"), "mail.example.com");
        assert_eq!(host_of("smtp://u:p@w@mail:1025/ehlo"), "mail");
        assert_eq!(host_of("smtp://[::1]:25"), "::1");
    }

    #[test]
    fn a_bad_url_or_sender_is_refused_with_the_setting_named_and_no_password() {
        let e = Mailer::new("http://u:secret@x", "a@b")
            .unwrap_err()
            .to_string();
        assert!(e.contains("SMTP_URL=http://u:***@x"), "{e}");
        let e = Mailer::new("smtp://localhost:25", "no mailbox")
            .unwrap_err()
            .to_string();
        assert!(e.contains("SMTP_FROM"), "{e}");
    }

    #[test]
    fn the_message_id_is_the_notifications() {
        let id = NotificationId::from(uuid::Uuid::nil());
        assert_eq!(message_id(id), format!("<{id}@shop>"));
    }
}
