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
//!
//! With `--jwt` ([`write_decentralized`]), NATS's decentralized auth
//! instead, as `nsc` sets it up: an operator, a system account, the
//! account `SAGA` with JetStream, and a user JWT per process with the same
//! permissions as the password users, each in `<user>/user.creds`;
//! `nats/operator.conf` is the server's part (operator, system account,
//! the accounts preloaded in a memory resolver). The keys' seeds stay in
//! `keys/`, so a later run signs with the same keys.

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
        hand_over(out, users.iter().map(String::as_str).chain(["nats"]), owner)?;
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

/// What [`write_decentralized`] made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MadeDecentralized {
    /// NATS users with a `.creds` file.
    pub users: usize,
    /// Of those, made by this run (a user's key is kept once made).
    pub new_users: usize,
    /// Whether this run made the operator's and accounts' keys.
    pub new_operator: bool,
    /// The `SAGA` account's public key (KEDA's scaler names the account by it).
    pub account: String,
}

/// Writes operator-mode credentials under `out` (see the module's
/// documentation), keeping the keys that exist.
pub fn write_decentralized(out: &Path, owner: Option<u32>) -> anyhow::Result<MadeDecentralized> {
    use nkeys::KeyPair;
    let keys = out.join("keys");
    std::fs::create_dir_all(&keys).with_context(|| format!("cannot create {}", keys.display()))?;
    let mut made = MadeDecentralized::default();
    let mut key = |name: &str, new: fn() -> KeyPair| -> anyhow::Result<KeyPair> {
        let (key, made_now) = key_at(&keys.join(format!("{name}.nk")), new)?;
        made.new_operator |= made_now;
        Ok(key)
    };
    let operator = key("operator", KeyPair::new_operator)?;
    let system = key("system-account", KeyPair::new_account)?;
    let saga = key("saga-account", KeyPair::new_account)?;
    made.account = saga.public_key();

    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1
    });
    let operator_jwt = jwt::encode(
        &operator.public_key(),
        "jetsaga",
        serde_json::json!({"type": "operator", "version": 2, "system_account": system.public_key()}),
        &operator,
    )?;
    let system_jwt = jwt::encode(
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
        &operator,
    )?;
    let mut saga_limits = unlimited.clone();
    // JetStream on, without limits of its own (the streams carry theirs);
    // no bearer tokens: every user proves it holds its key.
    for (limit, value) in [
        ("mem_storage", serde_json::json!(-1)),
        ("disk_storage", serde_json::json!(-1)),
        ("streams", serde_json::json!(-1)),
        ("consumer", serde_json::json!(-1)),
        ("disallow_bearer", serde_json::json!(true)),
    ] {
        saga_limits[limit] = value;
    }
    let saga_jwt = jwt::encode(
        &saga.public_key(),
        "SAGA",
        serde_json::json!({"type": "account", "version": 2, "limits": saga_limits}),
        &operator,
    )?;

    let users = jetsaga_infra::nats::user_permissions();
    made.users = users.len();
    for (user, permissions) in &users {
        let dir = out.join(user);
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (key, made_now) = key_at(&keys.join(format!("user-{user}.nk")), KeyPair::new_user)?;
        made.new_users += usize::from(made_now);
        let seed = key.seed().map_err(|e| anyhow::anyhow!("{user}'s key has no seed: {e}"))?;
        let mut claims = serde_json::json!({"type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1});
        if let Some(p) = permissions {
            claims["pub"] = serde_json::json!({"allow": p.publish});
            if !p.deny_publish.is_empty() {
                claims["pub"]["deny"] = serde_json::json!(p.deny_publish);
            }
            claims["sub"] = serde_json::json!({"allow": p.subscribe});
            // May answer each request once (the password users' `allow_responses: true`).
            claims["resp"] = serde_json::json!({"max": 1, "ttl": 0});
        }
        let token = jwt::encode(&key.public_key(), user, claims, &saga)?;
        write_file(&dir.join("user.creds"), &jwt::creds(&token, &seed), 0o400)?;
    }
    let server = out.join("nats");
    std::fs::create_dir_all(&server)?;
    write_file(
        &server.join("operator.conf"),
        &format!(
            "# NATS decentralized auth, made by `jetsaga infra credentials --jwt`.\n\
             # A user's JWT travels in its CONNECT line: the gateway's and the bridge's\n\
             # (many subjects) exceed the default 4 KiB.\n\
             max_control_line: 65536\n\
             operator: \"{operator_jwt}\"\n\
             system_account: \"{}\"\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {}: \"{system_jwt}\"\n  {}: \"{saga_jwt}\"\n}}\n",
            system.public_key(),
            system.public_key(),
            saga.public_key()
        ),
        0o400,
    )?;
    if let Some(owner) = owner {
        hand_over(out, users.iter().map(|(u, _)| u.as_str()).chain(["nats", "keys"]), owner)?;
    }
    Ok(made)
}

/// The NATS key whose seed `path` holds, made by `new` and kept there if
/// it is missing; and whether it was made now.
fn key_at(path: &Path, new: fn() -> nkeys::KeyPair) -> anyhow::Result<(nkeys::KeyPair, bool)> {
    let missing = !path.exists();
    if missing {
        let seed = new().seed().map_err(|e| anyhow::anyhow!("cannot make a NATS key: {e}"))?;
        write_file(path, &seed, 0o400)?;
    }
    let seed = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = nkeys::KeyPair::from_seed(seed.trim())
        .map_err(|e| anyhow::anyhow!("{} is not a NATS key seed: {e}", path.display()))?;
    Ok((key, missing))
}

/// Gives every file of the named directories under `out`, and the
/// directories, to `owner`.
fn hand_over<'a>(out: &Path, dirs: impl Iterator<Item = &'a str>, owner: u32) -> anyhow::Result<()> {
    for dir in dirs.map(|d| out.join(d)) {
        for entry in std::fs::read_dir(&dir)? {
            std::os::unix::fs::chown(entry?.path(), Some(owner), Some(owner))?;
        }
        std::os::unix::fs::chown(&dir, Some(owner), Some(owner))
            .with_context(|| format!("cannot hand {} to user {owner}", dir.display()))?;
    }
    Ok(())
}

/// NATS JWTs (`nats-io/jwt` v2): header, claims and an ed25519 signature by
/// the issuer's nkey, base64url each. (Written here: the Rust crates for
/// them either make no operator JWTs or rewrite their own sources at
/// build time.)
mod jwt {
    use data_encoding::{BASE32HEX_NOPAD, BASE64URL_NOPAD};
    use sha2::{Digest, Sha256};

    const HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

    /// A JWT about `subject`, with `nats` as its NATS claims, signed by `issuer`.
    pub fn encode(
        subject: &str,
        name: &str,
        nats: serde_json::Value,
        issuer: &nkeys::KeyPair,
    ) -> anyhow::Result<String> {
        let mut claims = serde_json::json!({
            "jti": "",
            "iat": chrono::Utc::now().timestamp(),
            "iss": issuer.public_key(),
            "name": name,
            "sub": subject,
            "nats": nats,
        });
        // The id is the hash of the claims without it, as nats-io/jwt makes it.
        claims["jti"] = serde_json::json!(BASE32HEX_NOPAD.encode(&Sha256::digest(serde_json::to_vec(&claims)?)));
        let signed = format!(
            "{}.{}",
            BASE64URL_NOPAD.encode(HEADER.as_bytes()),
            BASE64URL_NOPAD.encode(&serde_json::to_vec(&claims)?)
        );
        let signature = issuer.sign(signed.as_bytes()).map_err(|e| anyhow::anyhow!("cannot sign a JWT: {e}"))?;
        Ok(format!("{signed}.{}", BASE64URL_NOPAD.encode(&signature)))
    }

    /// A `.creds` file, as `nsc` writes it: the user's JWT and its seed.
    pub fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n"
        )
    }
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
    fn jwt_credentials_keep_their_keys_and_give_each_user_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let first = write_decentralized(dir.path(), None).unwrap();
        assert!(first.new_operator && first.new_users == first.users && first.account.starts_with('A'));
        let seed_of = |user: &str| {
            let creds = std::fs::read_to_string(dir.path().join(user).join("user.creds")).unwrap();
            creds.lines().skip_while(|l| !l.contains("BEGIN USER NKEY SEED")).nth(1).unwrap().to_string()
        };
        let (order, users) = (seed_of("order"), seed_of("users"));
        assert_ne!(order, users);
        let again = write_decentralized(dir.path(), None).unwrap();
        assert_eq!((again.new_operator, again.new_users, again.account), (false, 0, first.account));
        assert_eq!(seed_of("order"), order, "a later run keeps the user's key");
        let server = std::fs::read_to_string(dir.path().join("nats/operator.conf")).unwrap();
        assert!(server.contains("resolver: MEMORY") && server.contains("system_account:"), "{server}");
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
