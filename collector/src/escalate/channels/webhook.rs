//! The webhook: `POST` of the JSON [`Message`](super::Message) to `[escalation.webhook] url`, signed with
//! `X-ShiftLens-Signature: sha256=<hex HMAC-SHA256 of the body>` under the secret of `secret_file`. HTTPS
//! through rustls (ring, the system's roots); plain HTTP only to loopback (checked by the config). Any 2xx
//! answer is a delivery.

use crate::escalate::config::split_url;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper::header;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// The signature header's name.
pub const SIGNATURE: &str = "x-shiftlens-signature";
/// Connect, TLS, request and answer together.
const TIMEOUT: Duration = Duration::from_secs(15);

/// A configured webhook endpoint.
pub struct Webhook {
    tls: Option<Arc<rustls::ClientConfig>>,
    host: String,
    port: u16,
    path: String,
    secret: Vec<u8>,
}

/// Why the webhook could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook url is not an http(s) URL")]
    Url,
    #[error("cannot read the webhook secret {path}: {source}")]
    Secret { path: String, source: std::io::Error },
    #[error("the webhook secret {0} is empty")]
    Empty(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable_key());
    mac.update(body);
    let sig = mac.finalize().into_bytes();
    format!("sha256={}", sig.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[allow(clippy::panic)]
fn unreachable_key() -> Hmac<Sha256> {
    panic!("HMAC accepts keys of every length")
}

impl Webhook {
    /// Reads the secret and prepares TLS.
    ///
    /// # Errors
    /// A bad URL, an unreadable or empty secret file, no usable root certificates.
    pub fn new(url: &str, secret_file: &Path) -> Result<Self, WebhookError> {
        let (https, host, port, path) = split_url(url).ok_or(WebhookError::Url)?;
        let secret = std::fs::read_to_string(secret_file)
            .map_err(|source| WebhookError::Secret { path: secret_file.display().to_string(), source })?;
        let secret = secret.trim().as_bytes().to_vec();
        if secret.is_empty() {
            return Err(WebhookError::Empty(secret_file.display().to_string()));
        }
        let tls = if https { Some(Arc::new(client_tls(None).map_err(WebhookError::Tls)?)) } else { None };
        Ok(Self { tls, host: host.trim_start_matches('[').trim_end_matches(']').to_string(), port, path, secret })
    }

    /// Posts `body` once.
    ///
    /// # Errors
    /// A connection, TLS or HTTP failure, a timeout, or a non-2xx status; the text never holds the body.
    pub async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        tokio::time::timeout(TIMEOUT, self.post_once(body))
            .await
            .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
    }

    async fn post_once(&self, body: Vec<u8>) -> Result<(), String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let authority = if (self.tls.is_some() && self.port == 443) || (self.tls.is_none() && self.port == 80) {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let req = hyper::Request::post(&self.path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("shiftlens-collector/", env!("CARGO_PKG_VERSION")))
            .header(SIGNATURE, sign(&self.secret, &body))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        match &self.tls {
            Some(cfg) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("server name: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                send(tls, req).await
            }
            None => send(tcp, req).await,
        }
    }
}

async fn send<S>(io: S, req: hyper::Request<Full<Bytes>>) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"));
    driver.abort();
    let status = res?.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP status {status}"))
    }
}

/// A rustls client config on ring with the system's root certificates, plus those of `extra` (PEM).
///
/// # Errors
/// No root certificate at all, or an unreadable `extra`.
pub fn client_tls(extra: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(c);
    }
    if let Some(p) = extra {
        use rustls::pki_types::pem::PemObject;
        let pem = std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.map_err(|e| format!("{}: {e}", p.display()))?).map_err(|e| e.to_string())?;
        }
    }
    if roots.is_empty() {
        return Err("no root certificates found (system store empty)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
