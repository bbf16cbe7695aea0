//! The checked-in deployment files are exactly what the functions'
//! declarations generate (`jetsaga infra write` regenerates them).

use std::path::Path;

#[test]
fn checked_in_infra_files_match_the_functions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut stale = Vec::new();
    for (path, generated) in jetsaga_infra::files() {
        match std::fs::read_to_string(root.join(path)) {
            Ok(existing) if existing == generated => {}
            _ => stale.push(path),
        }
    }
    assert!(stale.is_empty(), "{stale:?} out of date: run `cargo run --bin jetsaga -- infra write`");
}
