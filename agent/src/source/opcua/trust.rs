//! Trust in an OPC UA server certificate: fingerprints, what an operator is shown, and the check made before
//! every connect.
//!
//! Invariant: a server certificate is trusted only explicitly: it is in `{pki_dir}/trusted` (put there by
//! `shiftlens-agent trust`) or its SHA-256 fingerprint is pinned in the config. An unknown certificate is saved
//! to `{pki_dir}/rejected` and named in an error together with the command that trusts it.

use super::OpcUaEndpoint;
use opcua::client::Client;
use opcua::crypto::{CertificateStore, X509};
use sha2::{Digest, Sha256};
use tracing::info;

/// Parses a SHA-256 fingerprint written as hex, with or without colons and a `sha256:` prefix.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = s.strip_prefix("sha256:").or_else(|| s.strip_prefix("SHA256:")).unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != ':' && !c.is_whitespace()).collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 fingerprint of a DER certificate, as `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// What the operator needs to know about a server certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub sha256: String,
    /// The file name the PKI store uses for it (`CN [sha1].der`).
    pub file_name: String,
}

/// Reads subject, fingerprint and store file name of a DER certificate.
///
/// # Errors
/// When the bytes are not an X.509 certificate.
pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let cert = X509::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(CertInfo {
        subject: cert.subject_name(),
        sha256: fingerprint(der),
        file_name: CertificateStore::cert_file_name(&cert),
    })
}

/// With a pin: a matching certificate is put into `trusted/`, any other is refused. Without: an
/// untrusted certificate is saved to `rejected/` and named with the command that trusts it.
pub(super) fn check_trust(ep: &OpcUaEndpoint, client: &Client, der: &[u8]) -> Result<(), String> {
    let info = cert_info(der).map_err(|e| format!("server sent a bad certificate: {e}"))?;
    let store = client.certificate_store().read();
    let trusted = store.trusted_certs_dir().join(&info.file_name);
    let rejected = store.rejected_certs_dir().join(&info.file_name);
    if let Some(pin) = &ep.server_fingerprint {
        let want = parse_fingerprint(pin);
        if want.map(|w| w.as_slice() == Sha256::digest(der).as_slice()) != Some(true) {
            return Err(format!(
                "server certificate {} has SHA-256 {}, which does not match the pinned server_fingerprint {}",
                info.subject, info.sha256, pin
            ));
        }
        if !trusted.exists() {
            std::fs::create_dir_all(store.trusted_certs_dir())
                .and_then(|()| std::fs::write(&trusted, der))
                .map_err(|e| format!("cannot store pinned certificate in {}: {e}", trusted.display()))?;
            let _ = std::fs::remove_file(&rejected);
            info!(endpoint = %ep.id(), subject = %info.subject, sha256 = %info.sha256, "trusted pinned server certificate");
        }
        return Ok(());
    }
    if trusted.exists() {
        return Ok(());
    }
    let _ = std::fs::create_dir_all(store.rejected_certs_dir()).and_then(|()| std::fs::write(&rejected, der));
    Err(format!(
        "server certificate is not trusted: subject {}, SHA-256 {}, saved as {}; trust it with `{}` \
         or pin it with server_fingerprint = \"{}\"",
        info.subject,
        info.sha256,
        rejected.display(),
        ep.trust_command(),
        info.sha256
    ))
}
