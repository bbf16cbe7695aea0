//! TLS to NATS, from the variables the `nats` CLI reads.
//!
//! - `NATS_CA`: a PEM file of the certificate authority that signed the
//!   servers' certificates (a private CA; a public one needs nothing);
//! - `NATS_CERT` and `NATS_KEY`: a client certificate and its key, for
//!   servers that verify clients (mutual TLS).
//!
//! Any of them, or a `tls://` URL, makes TLS *required*: a server that
//! offers none is refused rather than sent a password in clear.

use std::path::PathBuf;

/// What the environment asks of TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `NATS_CA`.
    pub ca: Option<PathBuf>,
    /// `NATS_CERT` and `NATS_KEY`.
    pub client: Option<(PathBuf, PathBuf)>,
    /// TLS required (any of the above, or a `tls://` server URL).
    pub required: bool,
}

impl TlsSettings {
    /// Reads `NATS_CA`, `NATS_CERT` and `NATS_KEY`; `urls` are the servers
    /// (a `tls://` one requires TLS). An error names the variable at fault.
    pub fn from_env(var: impl Fn(&str) -> Option<String>, urls: &[String]) -> Result<Self, String> {
        let file = |name: &str| -> Result<Option<PathBuf>, String> {
            match var(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(path) => {
                    let path = PathBuf::from(path);
                    if path.is_file() {
                        Ok(Some(path))
                    } else {
                        Err(format!("{name}={}: no such file (a PEM file)", path.display()))
                    }
                }
            }
        };
        let ca = file("NATS_CA")?;
        let client = match (file("NATS_CERT")?, file("NATS_KEY")?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("NATS_CERT and NATS_KEY go together: a client certificate and its key".into()),
        };
        let required = ca.is_some() || client.is_some() || urls.iter().any(|u| u.trim().starts_with("tls://"));
        Ok(Self { ca, client, required })
    }

    /// `options` with these settings.
    pub fn apply(&self, mut options: async_nats::ConnectOptions) -> async_nats::ConnectOptions {
        install_crypto_provider();
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options.require_tls(self.required)
    }
}

/// Chooses rustls's process-wide crypto provider (ring, as async-nats
/// builds with). The AWS SDK brings aws-lc-rs as well, and with two
/// providers rustls cannot pick one: the first TLS connection to NATS
/// would panic. Choosing again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_required_as_soon_as_anything_asks_for_it() {
        let dir = tempfile_dir();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
        };
        let plain = TlsSettings::from_env(env(&[]), &["nats://a:4222".into()]).unwrap();
        assert!(!plain.required);
        let by_url = TlsSettings::from_env(env(&[]), &["nats://a:4222".into(), "tls://b:4222".into()]).unwrap();
        assert!(by_url.required);
        let ca_path = ca.display().to_string();
        let with_ca = TlsSettings::from_env(|n: &str| (n == "NATS_CA").then(|| ca_path.clone()), &[]).unwrap();
        assert_eq!((with_ca.ca.as_deref(), with_ca.required), (Some(ca.as_path()), true));
        let missing = TlsSettings::from_env(env(&[("NATS_CA", "/no/such/ca.pem")]), &[]).unwrap_err();
        assert_eq!(missing, "NATS_CA=/no/such/ca.pem: no such file (a PEM file)");
        let half = TlsSettings::from_env(|n: &str| (n == "NATS_CERT").then(|| ca_path.clone()), &[]).unwrap_err();
        assert!(half.contains("NATS_CERT and NATS_KEY go together"), "{half}");
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jetsaga-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
