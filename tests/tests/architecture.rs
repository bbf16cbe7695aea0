//! The framework knows no shop: no framework crate depends, directly or
//! through another, on the shop's crates (its catalog, its steps, its
//! saga, its gateway, its CLI). Read from `cargo metadata`, so a new
//! dependency that breaks the rule fails here, with the path that does.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const FRAMEWORK: [&str; 9] = [
    "jetsaga-envelope",
    "jetsaga-core",
    "jetsaga-sql",
    "jetsaga-dynamodb",
    "jetsaga-jetstream",
    "jetsaga-lambda",
    "jetsaga-otel",
    "jetsaga-runner",
    "travel-saga",
];

const SHOP: [&str; 12] = [
    "jetsaga-events",
    "jetsaga-order",
    "jetsaga-inventory",
    "jetsaga-customer",
    "jetsaga-payment",
    "jetsaga-shipping",
    "jetsaga-loyalty",
    "jetsaga-users",
    "jetsaga-saga",
    "jetsaga-http",
    "jetsaga-local",
    "jetsaga-infra",
];

#[test]
fn no_framework_crate_depends_on_the_shop() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // Normal (not dev, not build) dependencies between workspace crates.
    let mut depends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_string();
        let local = package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null() && d["path"].is_string())
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect();
        depends.insert(name, local);
    }
    for crate_name in FRAMEWORK {
        assert!(depends.contains_key(crate_name), "{crate_name} is not in the workspace");
        // Every path from it, breadth first, remembering how each crate was reached.
        let mut reached: BTreeMap<String, String> = BTreeMap::from([(crate_name.to_string(), crate_name.to_string())]);
        let mut queue = vec![crate_name.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(current) = queue.pop() {
            if !seen.insert(current.clone()) {
                continue;
            }
            for next in depends.get(&current).into_iter().flatten() {
                let path = format!("{} → {next}", reached[&current]);
                assert!(!SHOP.contains(&next.as_str()), "the framework depends on the shop: {path}");
                reached.entry(next.clone()).or_insert(path);
                queue.push(next.clone());
            }
        }
    }
}
