//! E-mail over SMTP with lettre: STARTTLS (required) or TLS from the first byte, rustls on ring with the
//! system's roots plus an optional plant CA; no TLS only to a loopback relay (checked by the config).

use crate::escalate::config::{SmtpConfig, SmtpTls};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use std::time::Duration;

/// A configured SMTP relay.
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// Builds the transport (no connection yet).
    ///
    /// # Errors
    /// A bad sender address, an unreadable password or CA file, a TLS setup failure.
    pub fn new(c: &SmtpConfig) -> Result<Self, String> {
        let host = c.host.get_ref().as_str();
        let from: Mailbox = c.from.get_ref().parse().map_err(|e| format!("from: {e}"))?;
        let tls = *c.tls.get_ref();
        let port = c.port.unwrap_or(match tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        });
        let params = || -> Result<TlsParameters, String> {
            let mut b = TlsParameters::builder(host.to_string());
            if let Some(ca) = &c.ca {
                let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls().map_err(|e| format!("TLS setup: {e}"))
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(Duration::from_secs(20)));
        b = match tls {
            SmtpTls::Starttls => b.tls(Tls::Required(params()?)),
            SmtpTls::Tls => b.tls(Tls::Wrapper(params()?)),
            SmtpTls::None => b.tls(Tls::None),
        };
        if let (Some(user), Some(file)) = (&c.username, &c.password_file) {
            let pass = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            b = b.credentials(Credentials::new(user.clone(), pass.trim().to_string()));
        }
        Ok(Self { transport: b.build(), from })
    }

    /// Sends one e-mail.
    ///
    /// # Errors
    /// A bad recipient address or an SMTP failure; the text never holds the address.
    pub async fn send(&self, to: &str, subject: &str, text: String) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|_| "the recipient's address is not valid".to_string())?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(text)
            .map_err(|e| format!("building the message: {e}"))?;
        self.transport.send(email).await.map(|_| ()).map_err(|e| smtp_error(&e))
    }
}

/// An SMTP error without the addresses a server may echo: its kind and status code only.
fn smtp_error(e: &lettre::transport::smtp::Error) -> String {
    let kind = if e.is_permanent() {
        "permanent"
    } else if e.is_transient() {
        "transient"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_tls() {
        "TLS"
    } else {
        "connection"
    };
    match e.status() {
        Some(code) => format!("SMTP {kind} error {code}"),
        None => format!("SMTP {kind} error"),
    }
}
