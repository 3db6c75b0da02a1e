//! A throw-away PKI for the demo and the end-to-end tests: one CA, a server certificate for the collector's
//! broker and a client certificate per gateway, written as PEM files (rcgen, no OpenSSL).
//!
//! Invariants: the gateway id is the client certificate's subject CN and its site the subject OU (the
//! collector's broker takes the identity (site, gateway) from them); private keys are written with mode 0600 on Unix; nothing is ever overwritten
//! silently by a different CA: [`Pki::create`] always makes a fresh CA and rewrites its own files.
//! Production plants should use their own CA (docs/install.md); this module is for trying things out.

use std::path::{Path, PathBuf};

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// A certificate, its private key and the CA that signed it, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that writes the certificates it signs into one directory.
pub struct Pki {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (`ca.pem`).
    pub ca: PathBuf,
}

impl Pki {
    /// Makes a new CA named `name` and writes its certificate to `{dir}/ca.pem` (creating `dir`).
    ///
    /// # Errors
    /// Generation failures and unwritable files.
    pub fn create(dir: &Path, name: &str) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca = dir.join("ca.pem");
        write(&ca, cert.pem().as_bytes(), false)?;
        Ok(Self { dir: dir.to_path_buf(), issuer: rcgen::Issuer::new(params, key), ca })
    }

    /// A server certificate for the collector's broker, valid for `hosts` (DNS names or IP addresses,
    /// e.g. `localhost` and `127.0.0.1`), written as `{name}.pem` and `{name}.key`.
    ///
    /// # Errors
    /// A host that is neither a DNS name nor an IP address, generation failures and unwritable files.
    pub fn server(&self, name: &str, hosts: &[&str]) -> Result<CertFiles, PkiError> {
        let sans: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        self.leaf(name, None, sans, rcgen::ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate whose subject CN is `gateway` and OU `site`, written as `{gateway}.pem` and
    /// `{gateway}.key`.
    ///
    /// # Errors
    /// Generation failures and unwritable files.
    pub fn client(&self, site: &str, gateway: &str) -> Result<CertFiles, PkiError> {
        self.leaf(gateway, Some(site), Vec::new(), rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(
        &self,
        cn: &str,
        ou: Option<&str>,
        sans: Vec<String>,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> Result<CertFiles, PkiError> {
        let mut params = rcgen::CertificateParams::new(sans)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if let Some(ou) = ou {
            params.distinguished_name.push(rcgen::DnType::OrganizationalUnitName, ou);
        }
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = CertFiles {
            ca: self.ca.clone(),
            cert: self.dir.join(format!("{cn}.pem")),
            key: self.dir.join(format!("{cn}.key")),
        };
        write(&files.cert, cert.pem().as_bytes(), false)?;
        write(&files.key, key.serialize_pem().as_bytes(), true)?;
        Ok(files)
    }
}

fn write(path: &Path, data: &[u8], private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let err = |source| PkiError::Write { path: path.to_path_buf(), source };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    opts.open(path).and_then(|mut f| f.write_all(data)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_signs_a_server_and_client_certificates_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path(), "test").unwrap();
        let server = pki.server("broker", &["localhost", "127.0.0.1"]).unwrap();
        let client = pki.client("plant-a", "gw-line1").unwrap();
        for f in [&server.cert, &client.cert, &pki.ca] {
            assert!(std::fs::read_to_string(f).unwrap().starts_with("-----BEGIN CERTIFICATE-----"), "{f:?}");
        }
        assert_eq!(server.ca, pki.ca);
        assert!(client.cert.ends_with("gw-line1.pem"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&client.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
        }
        let err = pki.server("bad", &["bäd"]).unwrap_err();
        assert!(err.to_string().contains("cannot generate"), "{err}");
    }
}
