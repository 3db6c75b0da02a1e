//! `shiftlens-agent trust`: moves an OPC UA server certificate that the agent rejected from
//! `{pki_dir}/rejected` into `{pki_dir}/trusted`, so the next connect goes through, and prints its
//! SHA-256 fingerprint for pinning (`server_fingerprint`) instead.
//!
//! Invariant: nothing is trusted without the operator naming it. With several rejected certificates the
//! operator must pick one by `--fingerprint`; with a fingerprint, only a certificate matching it moves.

use crate::source::opcua::{cert_info, parse_fingerprint, CertInfo, OpcUaEndpoint};
use crate::Config;
use std::path::{Path, PathBuf};

/// Why nothing was trusted; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TrustError(String);

/// Trusts a rejected server certificate of `endpoint` (needed when the config has several OPC UA
/// endpoints); returns what was done, for printing.
///
/// # Errors
/// Unknown endpoint, no or several rejected certificates, no match for `fingerprint`, file errors.
pub fn trust(config: &Config, endpoint: Option<&str>, fingerprint: Option<&str>) -> Result<String, TrustError> {
    trust_endpoint(pick(config, endpoint)?, fingerprint)
}

/// Trusts a rejected server certificate of one endpoint: the only one, or the one matching `fingerprint`.
///
/// # Errors
/// No or several rejected certificates, no match for `fingerprint`, file errors.
pub fn trust_endpoint(ep: &OpcUaEndpoint, fingerprint: Option<&str>) -> Result<String, TrustError> {
    let want = match fingerprint {
        Some(f) => Some(parse_fingerprint(f).ok_or_else(|| {
            TrustError(format!("--fingerprint {f:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"))
        })?),
        None => None,
    };
    let matches = |c: &CertInfo| want.is_none_or(|w| parse_fingerprint(&c.sha256) == Some(w));
    let trusted_dir = ep.pki_dir.join("trusted");
    if want.is_some() {
        if let Some((_, c)) = certs(&trusted_dir)?.into_iter().find(|(_, c)| matches(c)) {
            return Ok(format!("server certificate {} (SHA-256 {}) is already trusted", c.subject, c.sha256));
        }
    }
    let rejected_dir = ep.pki_dir.join("rejected");
    let rejected = certs(&rejected_dir)?;
    let mut chosen: Vec<&(PathBuf, CertInfo)> = rejected.iter().filter(|(_, c)| matches(c)).collect();
    let list = || rejected.iter().map(|(_, c)| format!("\n  {} SHA-256 {}", c.subject, c.sha256)).collect::<String>();
    let (path, info) = match (chosen.len(), want) {
        (1, _) => chosen.remove(0),
        (0, None) => {
            return Err(TrustError(format!(
                "no rejected certificate in {}: let the agent connect to {} once (run it) so the server's \
                 certificate is saved there",
                rejected_dir.display(),
                ep.endpoint
            )))
        }
        (0, Some(_)) => {
            return Err(TrustError(format!(
                "no rejected certificate in {} has that fingerprint; rejected ones:{}",
                rejected_dir.display(),
                list()
            )))
        }
        _ => {
            return Err(TrustError(format!(
                "several rejected certificates in {}: choose one with --fingerprint SHA256{}",
                rejected_dir.display(),
                list()
            )))
        }
    };
    std::fs::create_dir_all(&trusted_dir)
        .map_err(|e| TrustError(format!("cannot create {}: {e}", trusted_dir.display())))?;
    let target = trusted_dir.join(&info.file_name);
    std::fs::rename(path, &target)
        .map_err(|e| TrustError(format!("cannot move {} to {}: {e}", path.display(), target.display())))?;
    Ok(format!(
        "trusted server certificate {} (SHA-256 {}) for endpoint {}: moved to {}\n\
         (to pin it instead, set in [[opcua]] id = {:?}: server_fingerprint = \"{}\")",
        info.subject,
        info.sha256,
        ep.id(),
        target.display(),
        ep.id(),
        info.sha256
    ))
}

fn pick<'a>(config: &'a Config, id: Option<&str>) -> Result<&'a OpcUaEndpoint, TrustError> {
    let eps: Vec<&OpcUaEndpoint> = config.opcua.iter().collect();
    let ids = || eps.iter().map(|e| e.id()).collect::<Vec<_>>().join(", ");
    match (id, eps.as_slice()) {
        (_, []) => Err(TrustError("the config has no [[opcua]] endpoint".into())),
        (None, [one]) => Ok(one),
        (None, _) => Err(TrustError(format!("several OPC UA endpoints: choose one with --endpoint ({})", ids()))),
        (Some(id), _) => eps
            .iter()
            .find(|e| e.id() == id)
            .copied()
            .ok_or_else(|| TrustError(format!("no OPC UA endpoint {id:?} in the config (there are: {})", ids()))),
    }
}

/// The certificates (`*.der`) in a directory; a missing directory has none.
fn certs(dir: &Path) -> Result<Vec<(PathBuf, CertInfo)>, TrustError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TrustError(format!("cannot read {}: {e}", dir.display()))),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "der") {
            continue;
        }
        let der = std::fs::read(&path).map_err(|e| TrustError(format!("cannot read {}: {e}", path.display())))?;
        match cert_info(&der) {
            Ok(info) => out.push((path, info)),
            Err(e) => tracing::warn!(file = %path.display(), error = %e, "skipping unreadable certificate"),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}
