//! `shiftlens-agent check`: the validation of [`Config::parse_and_validate`] plus what `run` would fail on
//! later and validation cannot see without I/O: every file the config names exists and is readable (TLS CA,
//! certificate and key, OPC UA password and identity files), the client certificate
//! and key belong together, the MQTT client id equals the certificate's CN (the collector's broker refuses any
//! other) and so does `gateway` (it may publish only its own topics), and no certificate has expired. A
//! certificate that expires within [`EXPIRY_WARNING`], a missing serial port and a missing outbox directory
//! (other than the default one, which the systemd unit makes) are warnings.
//!
//! Every problem is reported at once, each located at the option it is about.

use super::RawConfig as Config;
use crate::source::opcua::Identity;
use shiftlens_common::config::{ConfigError, ConfigFile};
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, SystemTime};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Certificates expiring sooner than this give a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// What `check` found: errors (exit code 2) and warnings (reported, exit code 0).
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

/// Validates `file` and, when it parses, checks the files it names, at time `now`.
pub fn run(file: &ConfigFile, now: SystemTime) -> Findings {
    let (config, mut errors) = Config::parse_and_validate(file);
    let mut warnings = Vec::new();
    if let (Some(config), Ok(doc)) = (config, DeTable::parse(&file.text)) {
        let mut c = Checker { file, doc: &doc, now, errors: Vec::new(), warnings: Vec::new() };
        c.all(&config);
        errors.extend(c.errors);
        warnings = c.warnings;
    }
    Findings { errors: super::sorted(file, errors), warnings: super::sorted(file, warnings) }
}

/// A step of a key path: a key or an array index.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}
use Seg::{Index, Key};

struct Checker<'a> {
    file: &'a ConfigFile,
    doc: &'a Spanned<DeTable<'a>>,
    now: SystemTime,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Checker<'_> {
    fn all(&mut self, config: &Config) {
        self.outbox(config);
        self.uplink(config);
        for (i, ep) in config.opcua.iter().enumerate() {
            let ep = ep.get_ref();
            match ep.identity.get_ref() {
                Identity::User { password_file: Some(f), .. } => {
                    let at = [Key("opcua"), Index(i), Key("identity"), Key("user"), Key("password_file")];
                    if let Some(text) = self.read(&at, "password_file", f) {
                        if text.iter().all(|b| b"\r\n".contains(b)) {
                            self.error(&at, format!("password_file {} is empty", f.display()));
                        }
                    }
                }
                Identity::Certificate { cert, key } => {
                    let at = [Key("opcua"), Index(i), Key("identity"), Key("certificate")];
                    self.read(&[at[0], at[1], at[2], at[3], Key("cert")], "identity certificate", cert);
                    self.read(&[at[0], at[1], at[2], at[3], Key("key")], "identity key", key);
                }
                _ => {}
            }
        }
        for (i, d) in config.modbus.iter().enumerate() {
            if let Some(serial) = &d.get_ref().serial {
                if !Path::new(serial.get_ref()).exists() {
                    let at = [Key("modbus"), Index(i), Key("serial")];
                    self.warn(&at, format!("serial port {} does not exist (yet)", serial.get_ref()));
                }
            }
        }
    }

    fn outbox(&mut self, config: &Config) {
        let path = &config.outbox.path;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        // The systemd unit's StateDirectory makes the default directory at the first start.
        if !dir.is_dir() && *path != crate::outbox::OutboxConfig::default().path {
            let msg = format!(
                "the outbox's directory {} does not exist (yet); the agent cannot start without it",
                dir.display()
            );
            self.warn(&[Key("outbox"), Key("path")], msg);
        } else if path.is_dir() {
            self.error(&[Key("outbox"), Key("path")], format!("outbox path {} is a directory", path.display()));
        }
    }

    fn uplink(&mut self, config: &Config) {
        let u = &config.uplink;
        if !u.broker().is_ok_and(|b| b.tls) {
            return;
        }
        if let Some(ca) = &u.ca {
            let at = [Key("uplink"), Key("ca")];
            for der in &self.certs(&at, "CA file", ca) {
                self.validity(&at, "CA certificate", ca, der);
            }
        }
        let (Some(cert_path), Some(key_path)) = (&u.cert, &u.key) else { return };
        let (cert_at, key_at) = ([Key("uplink"), Key("cert")], [Key("uplink"), Key("key")]);
        let certs = self.certs(&cert_at, "client certificate", cert_path);
        let key = match shiftlens_common::pem::private_key("client key", key_path) {
            Ok(k) => Some(k),
            Err(e) => {
                self.error(&key_at, e.to_string());
                None
            }
        };
        let Some(leaf) = certs.first() else { return };
        self.validity(&cert_at, "client certificate", cert_path, leaf);
        if let Some(key) = key {
            crate::uplink::mqtt::install_crypto_provider();
            let matched =
                rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| e.to_string()).and_then(|k| {
                    rustls::sign::CertifiedKey::new(certs.clone(), k).keys_match().map_err(|e| e.to_string())
                });
            if let Err(e) = matched {
                let msg = format!(
                    "client key {} does not belong to the certificate {} ({e})",
                    key_path.display(),
                    cert_path.display()
                );
                self.error(&key_at, msg);
            }
        }
        let cn = match x509_parser::parse_x509_certificate(leaf) {
            Ok((_, c)) => c.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_string),
            Err(_) => return, // already reported by validity()
        };
        let Some(cn) = cn else {
            self.error(&cert_at, format!("client certificate {} has no subject CN", cert_path.display()));
            return;
        };
        let client_id = u.client_id.clone().unwrap_or_else(|| format!("shiftlens-{}-{}", config.site, config.gateway));
        if client_id != cn {
            let msg = format!(
                "client id {client_id:?} is not the certificate's CN {cn:?}: the collector's broker refuses it; set \
                 client_id = {cn:?}"
            );
            if u.client_id.is_some() {
                self.error(&[Key("uplink"), Key("client_id")], msg);
            } else {
                self.error(&cert_at, msg);
            }
        }
        if config.gateway.as_str() != cn {
            let msg = format!(
                "gateway {:?} is not the certificate's CN {cn:?}: the collector accepts events only on the topics of \
                 the gateway its certificate names",
                config.gateway.as_str()
            );
            self.error(&[Key("gateway")], msg);
        }
    }

    /// The certificates of a PEM file (at least one), or an error (the one PEM loader, `common::pem`).
    fn certs(
        &mut self,
        at: &[Seg<'_>],
        what: &'static str,
        path: &Path,
    ) -> Vec<rustls::pki_types::CertificateDer<'static>> {
        shiftlens_common::pem::certificates(what, path).unwrap_or_else(|e| {
            self.error(at, e.to_string());
            Vec::new()
        })
    }

    /// An expired (or not yet valid) certificate is an error, one expiring within [`EXPIRY_WARNING`] a warning.
    fn validity(&mut self, at: &[Seg<'_>], what: &str, path: &Path, der: &[u8]) {
        let cert = match x509_parser::parse_x509_certificate(der) {
            Ok((_, c)) => c,
            Err(e) => {
                self.error(at, format!("{what} in {} cannot be parsed: {e}", path.display()));
                return;
            }
        };
        let now = self.now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let (not_before, not_after) = (cert.validity().not_before, cert.validity().not_after);
        if not_after.timestamp() < now {
            self.error(at, format!("{what} in {} expired on {not_after}", path.display()));
        } else if not_before.timestamp() > now {
            self.error(at, format!("{what} in {} is not valid before {not_before}", path.display()));
        } else if not_after.timestamp() - now < EXPIRY_WARNING.as_secs() as i64 {
            let days = (not_after.timestamp() - now) / 86_400;
            self.warn(at, format!("{what} in {} expires in {days} days, on {not_after}", path.display()));
        }
    }

    /// Reads a file the config names; an error at `at` when it cannot be read.
    fn read(&mut self, at: &[Seg<'_>], what: &str, path: &Path) -> Option<Vec<u8>> {
        match std::fs::read(path) {
            Ok(b) => Some(b),
            Err(e) => {
                self.error(at, format!("cannot read {what} {}: {e}", path.display()));
                None
            }
        }
    }

    fn error(&mut self, at: &[Seg<'_>], msg: String) {
        let e = self.file.error_at(self.locate(at), msg);
        self.errors.push(e);
    }

    fn warn(&mut self, at: &[Seg<'_>], msg: String) {
        let e = self.file.error_at(self.locate(at), format!("warning: {msg}"));
        self.warnings.push(e);
    }

    /// The span of the value at `path`, or of the deepest part of it that is in the file (a defaulted option
    /// points at its section).
    fn locate(&self, path: &[Seg<'_>]) -> Range<usize> {
        let mut span = 0..0;
        let mut table: Option<&DeTable<'_>> = Some(self.doc.get_ref());
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        for seg in path {
            let next = match (seg, table, value.map(Spanned::get_ref)) {
                (Key(k), Some(t), _) => t.iter().find(|(key, _)| key.get_ref() == k).map(|(key, v)| {
                    span = key.span();
                    v
                }),
                (Index(i), None, Some(DeValue::Array(a))) => a.into_iter().nth(*i),
                _ => None,
            };
            let Some(v) = next else { break };
            if !matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) || matches!(seg, Index(_)) {
                span = v.span();
            }
            value = Some(v);
            table = match v.get_ref() {
                DeValue::Table(t) => Some(t),
                _ => None,
            };
        }
        span
    }
}
