//! `jetsaga infra credentials`: the secrets of a deployment without a
//! secret store (compose): a random password per NATS user, and a private
//! CA with the server's certificate. Run on every start, it keeps what
//! exists, so restarts never change a password.
//!
//! Layout under the output directory (one volume per directory, so a
//! process mounts only its own):
//!
//! - `<user>/password`, `<user>/ca.crt` for every NATS user;
//! - `nats/passwords.conf` (the server's `$JETSAGA_<USER>_PASSWORD`
//!   variables), `nats/tls.crt`, `nats/tls.key`, `nats/ca.crt`.
//!
//! The CA's key is not kept: nothing else is ever signed with it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

/// The server's names in its certificate: the compose service, and this host.
const SERVER_NAMES: [&str; 2] = ["nats", "localhost"];

/// What a run made, for its one line of output (no secret in it).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Made {
    /// NATS users with a password.
    pub users: usize,
    /// Of those, made by this run.
    pub new_passwords: usize,
    /// Whether this run made the CA and the server's certificate.
    pub new_certificate: bool,
}

/// Writes what is missing under `out`, then hands every file to `owner`
/// (the user id the services run as) when given.
pub fn write(out: &Path, owner: Option<u32>) -> anyhow::Result<Made> {
    let users = jetsaga_infra::nats::users();
    let mut made = Made { users: users.len(), ..Made::default() };
    let mut variables = String::from("# NATS passwords, made by `jetsaga infra credentials`. Secret.\n");
    for user in &users {
        let dir = out.join(user);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("password");
        if !path.exists() {
            write_file(&path, &crate::gateway::random_secret(), 0o400)?;
            made.new_passwords += 1;
        }
        let password = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let password = password.trim();
        anyhow::ensure!(
            !password.is_empty() && password.chars().all(|c| c.is_ascii_alphanumeric()),
            "{} must hold letters and digits only (delete it to make a new one)",
            path.display()
        );
        variables.push_str(&format!("JETSAGA_{}_PASSWORD: \"{password}\"\n", user.to_uppercase()));
    }
    let server = out.join("nats");
    std::fs::create_dir_all(&server).with_context(|| format!("cannot create {}", server.display()))?;
    write_file(&server.join("passwords.conf"), &variables, 0o400)?;
    let [cert, key, ca] = ["tls.crt", "tls.key", "ca.crt"].map(|name| server.join(name));
    if !(cert.exists() && key.exists() && ca.exists()) {
        let (ca_pem, cert_pem, key_pem) = certificates()?;
        write_file(&ca, &ca_pem, 0o444)?;
        write_file(&key, &key_pem, 0o400)?;
        write_file(&cert, &cert_pem, 0o444)?;
        made.new_certificate = true;
    }
    let ca_pem = std::fs::read_to_string(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
    for user in &users {
        write_file(&out.join(user).join("ca.crt"), &ca_pem, 0o444)?;
    }
    if let Some(owner) = owner {
        for dir in users.iter().map(|u| out.join(u)).chain([server]) {
            for entry in std::fs::read_dir(&dir)? {
                std::os::unix::fs::chown(entry?.path(), Some(owner), Some(owner))?;
            }
            std::os::unix::fs::chown(&dir, Some(owner), Some(owner))
                .with_context(|| format!("cannot hand {} to user {owner}", dir.display()))?;
        }
    }
    Ok(made)
}

/// Writes whole or not at all (a crash mid-write must not leave half a password).
fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A CA, and the server's certificate signed by it (for server and client
/// authentication, so it could serve routes too), valid ten years.
/// Returns `(ca.crt, tls.crt, tls.key)` as PEM.
fn certificates() -> anyhow::Result<(String, String, String)> {
    use chrono::Datelike;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let today = chrono::Utc::now().date_naive();
    let validity = |params: &mut CertificateParams| {
        params.not_before = rcgen::date_time_ymd(today.year(), today.month() as u8, today.day() as u8);
        params.not_after = rcgen::date_time_ymd(today.year() + 10, today.month() as u8, 1);
    };
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.distinguished_name.push(DnType::CommonName, "jetsaga NATS CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut ca_params);
    let ca = ca_params.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())?;
    params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params.distinguished_name.push(DnType::CommonName, "nats");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params);
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_keeps_every_password_and_the_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), None).unwrap();
        assert!(first.new_certificate);
        assert_eq!(first.new_passwords, first.users);
        let order = std::fs::read_to_string(dir.path().join("order/password")).unwrap();
        let cert = std::fs::read_to_string(dir.path().join("nats/tls.crt")).unwrap();
        let again = write(dir.path(), None).unwrap();
        assert_eq!(again, Made { users: first.users, new_passwords: 0, new_certificate: false });
        assert_eq!(std::fs::read_to_string(dir.path().join("order/password")).unwrap(), order);
        assert_eq!(std::fs::read_to_string(dir.path().join("nats/tls.crt")).unwrap(), cert);
        let variables = std::fs::read_to_string(dir.path().join("nats/passwords.conf")).unwrap();
        assert!(variables.contains(&format!("JETSAGA_ORDER_PASSWORD: \"{order}\"")), "{variables}");
        // Each user's directory holds its own password and nobody else's.
        let entries: Vec<_> =
            std::fs::read_dir(dir.path().join("order")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
    }

    #[test]
    fn a_tampered_password_file_is_refused_not_used() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), None).unwrap();
        let path = dir.path().join("users/password");
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "x\" }\nauthorization { user: evil").unwrap();
        let error = write(dir.path(), None).unwrap_err().to_string();
        assert!(error.contains("users/password must hold letters and digits only"), "{error}");
    }
}
