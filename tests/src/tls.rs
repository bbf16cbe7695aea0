//! Certificates for tests of TLS, made by the project's own script
//! (`scripts/nats-certs`, which the rehearsals and users run too).

use std::path::{Path, PathBuf};

/// Makes a CA and a node certificate for `names` (plus localhost and
/// 127.0.0.1) in `dir`; returns `dir`, holding ca.crt, tls.crt and tls.key.
pub fn certificates(dir: &Path, names: &[&str]) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/nats-certs");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg(dir)
        .args(names)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} failed (it needs openssl):\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    dir.to_path_buf()
}
