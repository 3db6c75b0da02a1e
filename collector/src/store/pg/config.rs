//! Validation of the PostgreSQL keys of `[store]` (no I/O; every error with file:line:col).

use super::is_local;
use crate::store::{Backend, RawStoreConfig};
use shiftlens_common::config::{ConfigError, ConfigFile};
use std::str::FromStr;
use tokio_postgres::config::SslMode;

/// Checks `backend`, `url`, `password_file`, `ca` and `insecure` together.
pub fn validate(c: &RawStoreConfig, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    if c.backend == Backend::Sqlite {
        for (span, key) in [
            (c.url.as_ref().map(|u| u.span()), "url"),
            (c.password_file.as_ref().map(|p| p.span()), "password_file"),
            (c.ca.as_ref().map(|p| p.span()), "ca"),
        ] {
            if let Some(span) = span {
                errors.push(file.error_at(span, format!("{key} is only used with backend = \"postgres\"")));
            }
        }
        return;
    }
    let Some(url) = &c.url else {
        errors.push(file.error_at(0..0, "[store] backend = \"postgres\" needs url"));
        return;
    };
    let parsed = match tokio_postgres::Config::from_str(url.get_ref()) {
        Ok(p) => p,
        Err(e) => {
            let msg =
                format!("url: {e} (expected postgresql://user@host:port/dbname, sslmode disable, prefer or require)");
            errors.push(file.error_at(url.span(), msg));
            return;
        }
    };
    let at = |msg: &str| file.error_at(url.span(), msg.to_string());
    if parsed.get_password().is_some() {
        errors.push(at("url holds a password: put it in password_file instead (the config must not hold it)"));
    }
    if parsed.get_hosts().is_empty() {
        errors.push(at("url names no host"));
    }
    if parsed.get_user().is_none() {
        errors.push(at("url names no user (postgresql://user@host/dbname)"));
    }
    if c.ca.is_none() {
        if parsed.get_ssl_mode() == SslMode::Require {
            errors.push(at("sslmode=require needs ca (the CA that signed the server's certificate)"));
        } else if !c.insecure && !parsed.get_hosts().iter().all(is_local) {
            errors.push(at("plaintext PostgreSQL to a non-loopback host: set ca (TLS) or insecure = true"));
        }
    } else if parsed.get_ssl_mode() == SslMode::Disable {
        errors.push(at("sslmode=disable contradicts ca: remove one of them"));
    }
}

#[cfg(test)]
mod tests {
    fn load(text: &str) -> Result<crate::Config, String> {
        let file = shiftlens_common::config::ConfigFile::from_text("c.toml", text.to_string());
        crate::Config::from_file(&file).map_err(|e| e.to_string())
    }

    #[test]
    fn postgres_keys_are_checked_where_written() {
        let ok = load(
            "[store]\nbackend = \"postgres\"\nurl = \"postgresql://sl@localhost:5432/sl\"\npassword_file = \"/p\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        let ok = load(
            "[store]\nbackend = \"postgres\"\nurl = \"postgresql://sl@db.example/sl?sslmode=require\"\nca = \"/ca.pem\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        let e = load("[store]\nbackend = \"postgres\"\n").unwrap_err();
        assert!(e.contains("c.toml:1:1: [store] backend = \"postgres\" needs url"), "{e}");
        let e = load("[store]\nbackend = \"postgres\"\nurl = \"postgresql://sl:secret@localhost/sl\"\n").unwrap_err();
        assert!(e.contains("c.toml:3:7: url holds a password"), "{e}");
        assert!(!e.contains("secret"), "the password must not be echoed: {e}");
        let e = load("[store]\nbackend = \"postgres\"\nurl = \"postgresql://sl@db.example/sl\"\n").unwrap_err();
        assert!(e.contains("c.toml:3:7: plaintext PostgreSQL to a non-loopback host"), "{e}");
        let ok = load("[store]\nbackend = \"postgres\"\nurl = \"postgresql://sl@db.example/sl\"\ninsecure = true\n");
        assert!(ok.is_ok(), "{ok:?}");
        let e = load("[store]\nbackend = \"postgres\"\nurl = \"postgresql://sl@localhost/sl?sslmode=require\"\n")
            .unwrap_err();
        assert!(e.contains("c.toml:3:7: sslmode=require needs ca"), "{e}");
        let e =
            load("[store]\nbackend = \"postgres\"\nurl = \"postgresql://sl@h/sl?sslmode=verify-full\"\n").unwrap_err();
        assert!(e.contains("c.toml:3:7: url: "), "{e}");
        let e = load("[store]\nbackend = \"mysql\"\n").unwrap_err();
        assert!(e.contains("c.toml:2:11"), "{e}");
        let e = load("[store]\nurl = \"postgresql://sl@localhost/sl\"\n").unwrap_err();
        assert!(e.contains("c.toml:2:7: url is only used with backend = \"postgres\""), "{e}");
    }
}
