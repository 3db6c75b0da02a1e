//! `shiftlens-collector pki`: a small certificate authority for plants without their own, so installers need
//! not hand-write OpenSSL recipes. One directory holds the CA (`ca.pem`, `ca.key`) and every certificate it
//! issued (`{name}.pem`, `{name}.key`).
//!
//! What the broker's gate reads (docs/install.md): a gateway's certificate names the gateway in its subject
//! CN and the site in a SAN URI `urn:shiftlens:site:{site}` (and, for people reading it, the subject OU); a
//! feed reader's CN is its id, listed in `[broker] feed_readers`; the broker's server certificate names the
//! hosts gateways connect to. Invariants: keys are written with mode 0600 and never overwritten, so issuing a
//! name twice is refused rather than silently replacing a certificate in use; ids are checked like the wire
//! contract's ids before anything is written.

use crate::broker::SITE_URI;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use shiftlens_common::{GatewayId, SiteId};
use std::path::{Path, PathBuf};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const DAY_MS: i64 = 86_400_000;

/// Why the PKI could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} already exists: the CA is made once (remove the directory to start over)", path.display())]
    CaExists { path: PathBuf },
    #[error("{} already exists: choose another name or remove the old certificate and key first", path.display())]
    Exists { path: PathBuf },
    #[error("{}: not a certificate this tool can read: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("invalid {what} {value:?}: {reason}")]
    Id { what: &'static str, value: String, reason: String },
    #[error("validity must be 1 to 36500 days, not {0}")]
    Days(u32),
}

/// What a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A gateway of a site (client certificate).
    Gateway { site: SiteId, gateway: GatewayId },
    /// A feed consumer such as central IT (client certificate).
    FeedReader { id: String },
    /// The broker's server certificate for these DNS names or IP addresses.
    Server { name: String, hosts: Vec<String> },
}

/// A certificate found in the PKI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub file: String,
    pub cn: String,
    pub site: Option<String>,
    pub not_after_ms: i64,
}

/// The CA of one directory.
pub struct Ca {
    dir: PathBuf,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

/// The (year, month, day) `days` after `now_ms`, for rcgen's `date_time_ymd`.
fn expiry(now_ms: i64, days: u32) -> Result<(i32, u8, u8), PkiError> {
    use chrono::Datelike;
    if !(1..=36_500).contains(&days) {
        return Err(PkiError::Days(days));
    }
    let t = chrono::DateTime::from_timestamp_millis(now_ms + i64::from(days) * DAY_MS).unwrap_or_default();
    Ok((t.year(), t.month() as u8, t.day() as u8))
}

fn not_after(now_ms: i64, days: u32) -> Result<rcgen::CertificateParams, PkiError> {
    let (y, m, d) = expiry(now_ms, days)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(params)
}

impl Ca {
    /// Makes a CA named `name` valid for `days`, writing `{dir}/ca.pem` and `{dir}/ca.key` (creating `dir`).
    ///
    /// # Errors
    /// A CA already in `dir`, generation failures and unwritable files.
    pub fn init(dir: &Path, name: &str, days: u32, now_ms: i64) -> Result<Self, PkiError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key_path = dir.join("ca.key");
        if key_path.exists() {
            return Err(PkiError::CaExists { path: key_path });
        }
        let mut params = not_after(now_ms, days)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write(&key_path, key.serialize_pem().as_bytes(), true)?;
        write(&dir.join("ca.pem"), cert.pem().as_bytes(), false)?;
        Ok(Self { dir: dir.to_path_buf(), issuer: rcgen::Issuer::new(params, key) })
    }

    /// The CA already in `dir`.
    ///
    /// # Errors
    /// No CA there (run `pki init`), or unreadable files.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let read = |p: PathBuf| std::fs::read_to_string(&p).map_err(io(&p));
        let key = KeyPair::from_pem(&read(dir.join("ca.key"))?)?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(&read(dir.join("ca.pem"))?, key)?;
        Ok(Self { dir: dir.to_path_buf(), issuer })
    }

    /// Opens the CA in `dir`, or makes one named `name` there.
    ///
    /// # Errors
    /// As [`Ca::open`] and [`Ca::init`].
    pub fn open_or_init(dir: &Path, name: &str, now_ms: i64) -> Result<Self, PkiError> {
        if dir.join("ca.key").exists() {
            Self::open(dir)
        } else {
            Self::init(dir, name, 3650, now_ms)
        }
    }

    /// The CA certificate's path.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Where the certificate and key of `kind` are (or would be) written: `{site}.{gateway}` for a gateway,
    /// else its name, with `.pem` and `.key`.
    pub fn files(&self, kind: &Kind) -> (PathBuf, PathBuf) {
        let stem = match kind {
            Kind::Gateway { site, gateway } => format!("{site}.{gateway}"),
            Kind::FeedReader { id } => id.clone(),
            Kind::Server { name, .. } => name.clone(),
        };
        (self.dir.join(format!("{stem}.pem")), self.dir.join(format!("{stem}.key")))
    }

    /// Issues a certificate valid for `days`, written as `{file}.pem` and `{file}.key`; returns the paths.
    ///
    /// # Errors
    /// The files exist already, an invalid host, generation failures and unwritable files.
    pub fn issue(&self, kind: &Kind, days: u32, now_ms: i64) -> Result<(PathBuf, PathBuf), PkiError> {
        let (cn, sans, usage) = match kind {
            Kind::Gateway { gateway, .. } => (gateway.to_string(), Vec::new(), ExtendedKeyUsagePurpose::ClientAuth),
            Kind::FeedReader { id } => (id.clone(), Vec::new(), ExtendedKeyUsagePurpose::ClientAuth),
            Kind::Server { name, hosts } => (name.clone(), hosts.clone(), ExtendedKeyUsagePurpose::ServerAuth),
        };
        let (cert_path, key_path) = self.files(kind);
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(PkiError::Exists { path: p.clone() });
            }
        }
        let mut params = not_after(now_ms, days)?;
        for host in sans {
            params.subject_alt_names.push(match host.parse::<std::net::IpAddr>() {
                Ok(ip) => rcgen::SanType::IpAddress(ip),
                Err(_) => rcgen::SanType::DnsName(host.try_into()?),
            });
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Kind::Gateway { site, .. } = kind {
            params.distinguished_name.push(DnType::OrganizationalUnitName, site.to_string());
            let uri = format!("{SITE_URI}{site}").try_into()?;
            params.subject_alt_names.push(rcgen::SanType::URI(uri));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        write(&key_path, key.serialize_pem().as_bytes(), true)?;
        write(&cert_path, cert.pem().as_bytes(), false)?;
        Ok((cert_path, key_path))
    }
}

/// Checks a feed reader's or server's name like the wire contract's ids (`[a-z0-9_-]{1,64}`).
///
/// # Errors
/// The name breaks the rule.
pub fn check_name(what: &'static str, value: &str) -> Result<String, PkiError> {
    GatewayId::parse(value).map(|g| g.to_string()).map_err(|e| PkiError::Id {
        what,
        value: value.to_string(),
        reason: e.to_string(),
    })
}

/// Every certificate in `dir` (`*.pem`), soonest expiry first.
///
/// # Errors
/// The directory or a file cannot be read, or a `.pem` file is not a certificate.
pub fn list(dir: &Path) -> Result<Vec<Listed>, PkiError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_none_or(|e| e != "pem") {
            continue;
        }
        let text = std::fs::read(&path).map_err(io(&path))?;
        let parse = |reason: String| PkiError::Parse { path: path.clone(), reason };
        let (_, pem) = x509_parser::pem::parse_x509_pem(&text).map_err(|e| parse(e.to_string()))?;
        let (_, cert) = X509Certificate::from_der(&pem.contents).map_err(|e| parse(e.to_string()))?;
        let cn = cert.subject().iter_common_name().filter_map(|a| a.as_str().ok()).next().unwrap_or("").to_string();
        let site = cert.subject_alternative_name().ok().flatten().and_then(|san| {
            san.value.general_names.iter().find_map(|g| match g {
                GeneralName::URI(u) => u.strip_prefix(SITE_URI).map(str::to_string),
                _ => None,
            })
        });
        out.push(Listed {
            file: path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            cn,
            site,
            not_after_ms: cert.validity().not_after.timestamp().saturating_mul(1000),
        });
    }
    out.sort_by(|a, b| (a.not_after_ms, &a.file).cmp(&(b.not_after_ms, &b.file)));
    Ok(out)
}

/// `shiftlens-collector pki`.
#[derive(Debug, clap::Args)]
pub struct PkiArgs {
    /// The CA's directory (keep it offline or readable by root only: it holds the CA key).
    #[arg(long, default_value = "/etc/shiftlens/pki")]
    pub dir: PathBuf,
    #[command(subcommand)]
    pub command: PkiCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PkiCommand {
    /// Make the CA (ca.pem, ca.key) once.
    Init {
        #[arg(long, default_value = "ShiftLens CA")]
        name: String,
        /// Validity in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue a certificate signed by the CA: `gateway --site S --id G`, `feed-reader --id it-feed`,
    /// `server --name broker --host collector.plant.example`.
    Issue {
        #[command(subcommand)]
        what: IssueKind,
        /// Validity in days.
        #[arg(long, default_value_t = 825, global = true)]
        days: u32,
    },
    /// List the certificates in the directory, soonest expiry first, marking those expiring within --within.
    List {
        /// Horizon for the "expires soon" mark (e.g. 30d).
        #[arg(long, default_value = "30d")]
        within: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum IssueKind {
    /// A gateway's client certificate (CN = gateway, SAN URI urn:shiftlens:site:SITE, OU = site).
    Gateway {
        #[arg(long)]
        site: String,
        #[arg(long)]
        id: String,
    },
    /// A feed consumer's client certificate (CN = id; list the id in [broker] feed_readers).
    FeedReader {
        #[arg(long)]
        id: String,
    },
    /// The broker's server certificate (CN = name; each --host a DNS name or IP address gateways connect to).
    Server {
        #[arg(long, default_value = "broker")]
        name: String,
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
}

impl PkiArgs {
    /// Runs the subcommand; returns what to print.
    ///
    /// # Errors
    /// Bad names or horizons, and the failures of [`Ca`] and [`list`].
    pub fn run(&self, now_ms: i64) -> Result<String, PkiError> {
        match &self.command {
            PkiCommand::Init { name, days } => {
                let ca = Ca::init(&self.dir, name, *days, now_ms)?;
                Ok(format!(
                    "CA {name:?} made: {} (key {}, mode 0600)",
                    ca.ca_path().display(),
                    self.dir.join("ca.key").display()
                ))
            }
            PkiCommand::Issue { what, days } => {
                let kind = match what {
                    IssueKind::Gateway { site, id } => Kind::Gateway {
                        site: SiteId::parse(site.as_str()).map_err(|e| PkiError::Id {
                            what: "site",
                            value: site.clone(),
                            reason: e.to_string(),
                        })?,
                        gateway: GatewayId::parse(id.as_str()).map_err(|e| PkiError::Id {
                            what: "gateway",
                            value: id.clone(),
                            reason: e.to_string(),
                        })?,
                    },
                    IssueKind::FeedReader { id } => Kind::FeedReader { id: check_name("feed reader", id)? },
                    IssueKind::Server { name, hosts } => {
                        Kind::Server { name: check_name("server name", name)?, hosts: hosts.clone() }
                    }
                };
                let (cert, key) = Ca::open(&self.dir)?.issue(&kind, *days, now_ms)?;
                Ok(format!("issued {} (key {}, mode 0600), valid {days} days", cert.display(), key.display()))
            }
            PkiCommand::List { within } => {
                let horizon = crate::report::recert::parse_horizon(within).map_err(|e| PkiError::Id {
                    what: "horizon",
                    value: within.clone(),
                    reason: e.to_string(),
                })?;
                let mut out = format!("{:<32} {:<24} {:<16} {:<10} {}\n", "file", "cn", "site", "expires", "status");
                for l in list(&self.dir)? {
                    let date = chrono::DateTime::from_timestamp_millis(l.not_after_ms)
                        .map_or_else(String::new, |t| t.format("%Y-%m-%d").to_string());
                    let left = (l.not_after_ms - now_ms).div_euclid(DAY_MS);
                    let status = match l.not_after_ms - now_ms {
                        d if d <= 0 => "EXPIRED".to_string(),
                        d if d <= horizon => format!("expires in {left} days"),
                        _ => "ok".to_string(),
                    };
                    let site = l.site.as_deref().unwrap_or("-");
                    out.push_str(&format!("{:<32} {:<24} {:<16} {:<10} {status}\n", l.file, l.cn, site, date));
                }
                Ok(out)
            }
        }
    }
}

/// Writes a file that must not exist yet; private ones with mode 0600.
fn write(path: &Path, data: &[u8], private: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    opts.open(path).and_then(|mut f| f.write_all(data)).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000_000; // 2026-11-30

    #[test]
    fn a_gateway_certificate_names_its_site_and_expires_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(dir.path(), "Plant CA", 3650, NOW).unwrap();
        let kind =
            Kind::Gateway { site: SiteId::parse("plant-a").unwrap(), gateway: GatewayId::parse("gw-1").unwrap() };
        let (cert, key) = ca.issue(&kind, 30, NOW).unwrap();
        assert!(cert.ends_with("plant-a.gw-1.pem"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o077, 0);
        }
        // Issuing the same name twice is refused; a second CA in the same place too.
        assert!(matches!(ca.issue(&kind, 30, NOW), Err(PkiError::Exists { .. })));
        assert!(matches!(Ca::init(dir.path(), "again", 10, NOW), Err(PkiError::CaExists { .. })));
        let reopened = Ca::open(dir.path()).unwrap();
        reopened.issue(&Kind::FeedReader { id: "it-feed".into() }, 800, NOW).unwrap();
        let all = list(dir.path()).unwrap();
        let names: Vec<(&str, Option<&str>)> = all.iter().map(|l| (l.cn.as_str(), l.site.as_deref())).collect();
        assert_eq!(names, [("gw-1", Some("plant-a")), ("it-feed", None), ("Plant CA", None)]);
        let days = (all[0].not_after_ms - NOW) / DAY_MS;
        assert!((29..=30).contains(&days), "{days}");
    }

    #[test]
    fn bad_names_and_validities_are_refused_before_anything_is_written() {
        assert!(check_name("feed reader", "IT Feed").is_err());
        assert_eq!(check_name("feed reader", "it-feed").unwrap(), "it-feed");
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(Ca::init(dir.path(), "x", 0, NOW), Err(PkiError::Days(0))));
        assert!(!dir.path().join("ca.key").exists());
    }
}
