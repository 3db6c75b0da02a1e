//! The one PEM loader: certificates (a chain or a CA bundle) and private keys read from files, for the
//! agent's uplink and the collector's broker alike.
//!
//! Errors name what the file is for and its path (`cannot read CA file /etc/...: No such file`), so an
//! operator knows which setting to fix. The DER types are rustls' (`rustls-pki-types`); building a
//! `rustls` config from them stays with the caller.

use rustls_pki_types::pem::PemObject;
pub use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};

/// Why a PEM file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{what} {}: {detail}", path.display())]
    Bad { what: &'static str, path: PathBuf, detail: String },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read { what, path: path.to_path_buf(), source })
}

/// Every certificate in a PEM file, in file order; `what` names the file in errors ("CA file").
///
/// # Errors
/// The file cannot be read, holds a malformed certificate, or holds none.
pub fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bad = |detail: String| PemError::Bad { what, path: path.to_path_buf(), detail };
    let certs = CertificateDer::pem_slice_iter(&read(what, path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1); `what` names the file in errors.
///
/// # Errors
/// The file cannot be read or holds no usable private key.
pub fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_slice(&read(what, path)?).map_err(|e| PemError::Bad {
        what,
        path: path.to_path_buf(),
        detail: format!("is not a PEM private key ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // One PEM certificate block. The loader decodes PEM, not DER, so its bytes need not be a valid certificate.
    const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUB2ZbXjXPg8Y9D5pQk8OXyBpqD9gwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MB4XDTI0MDEwMTAwMDAwMFoXDTM0MDEwMTAw
MDAwMFowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEq3Cqk6i9cWnGd4mY3m9m3v1nE6yQ0m8y2aYtF9tH8v3mJz2m3XK4kqO8
wq0bL7L6mP1E8vq7Yb0FvP8y3tYy6qNTMFEwHQYDVR0OBBYEFJ3Pj4Xf3D1Lx4k1
2w2Q9y8x3mY9MB8GA1UdIwQYMBaAFJ3Pj4Xf3D1Lx4k12w2Q9y8x3mY9MA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgZ3mY8v3Ff6l3mG3x8m9w0n2k
2m0mZ1v9z8b6y3f7d3ACIQDv4m1y7v8c3l2k9m8r3n4p5q6s7t8u9v0w1x2y3z4a
5A==
-----END CERTIFICATE-----
";

    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn pem_errors_name_the_file_and_its_role() {
        let dir = std::env::temp_dir().join(format!("shiftlens-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = certificates("CA file", &missing).unwrap_err().to_string();
        assert!(e.starts_with(&format!("cannot read CA file {}", missing.display())), "{e}");
        let empty = file(&dir, "empty.pem", "not PEM at all\n");
        let e = certificates("client certificate", &empty).unwrap_err().to_string();
        assert_eq!(e, format!("client certificate {}: holds no PEM certificate", empty.display()));
        let e = private_key("client key", &empty).unwrap_err().to_string();
        assert!(e.starts_with(&format!("client key {}: ", empty.display())), "{e}");
        let one = file(&dir, "one.pem", CERT);
        assert_eq!(certificates("CA file", &one).unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
