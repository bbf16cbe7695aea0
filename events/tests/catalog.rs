//! The wire contract cannot drift silently: fixtures round-trip, samples
//! decode, and the generated schemas and AsyncAPI match what is checked in.

use std::path::{Path, PathBuf};

use jetsaga_events::{CreateOrder, Envelope, catalog, subjects};

fn events_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Compares generated text with the checked-in file, or rewrites the file
/// when `JETSAGA_BLESS=1`.
fn check_generated(path: &Path, generated: &str) -> Result<(), String> {
    if std::env::var("JETSAGA_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, generated).unwrap();
        return Ok(());
    }
    match std::fs::read_to_string(path) {
        Ok(existing) if existing == generated => Ok(()),
        Ok(_) => Err(format!("{} is out of date", path.display())),
        Err(_) => Err(format!("{} is missing", path.display())),
    }
}

#[test]
fn every_fixture_round_trips_through_its_type() {
    for entry in catalog::entries() {
        let path = events_dir().join("fixtures").join(format!("{}.json", entry.subject));
        let text = read(&path);
        let original: serde_json::Value = serde_json::from_str(&text).unwrap();
        let decoded =
            (entry.roundtrip)(text.as_bytes()).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
        assert_eq!(decoded, original, "{} changes when decoded and encoded again", path.display());
    }
}

#[test]
fn the_envelope_fixture_round_trips() {
    let text = read(&events_dir().join("fixtures/envelope.json"));
    let envelope = Envelope::decode(text.as_bytes()).unwrap();
    assert_eq!(envelope.event_type, subjects::ORDERS_EVT_CREATED);
    let again: serde_json::Value = serde_json::from_slice(&envelope.encode()).unwrap();
    let original: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again, original);
    let created: jetsaga_events::OrderCreated = envelope.data_as().unwrap();
    assert_eq!(created.order_id, "ord-7f3a");
    assert_eq!(envelope.saga_key.as_deref(), Some("ord-7f3a"));
}

/// Envelopes written before the saga key was generic (events still in a
/// stream, a dead letter or a schedule) name it `order_id`: read the same.
#[test]
fn an_envelope_with_the_old_key_name_reads_the_same() {
    let text = read(&events_dir().join("fixtures/envelope.json"));
    let old = text.replacen("\"saga_key\"", "\"order_id\"", 1);
    assert_ne!(old, text);
    assert_eq!(Envelope::decode(old.as_bytes()).unwrap(), Envelope::decode(text.as_bytes()).unwrap());
}

#[test]
fn every_sample_decodes_as_the_subject_it_is_for() {
    let samples = [
        ("create-order.json", subjects::ORDERS_CMD_CREATE),
        ("create-order-with-id.json", subjects::ORDERS_CMD_CREATE),
        ("cancel-order.json", subjects::ORDERS_CMD_CANCEL),
        ("upsert-product.json", subjects::INVENTORY_CMD_UPSERT_PRODUCT),
        ("create-customer.json", subjects::CUSTOMERS_CMD_CREATE),
        ("get-order.json", subjects::ORDERS_QUERY_GET),
    ];
    let on_disk = std::fs::read_dir(events_dir().join("samples")).unwrap().count();
    assert_eq!(on_disk, samples.len(), "every file in events/samples/ needs a line in this test");
    for (file, subject) in samples {
        let entry = catalog::find(subject).unwrap();
        let text = read(&events_dir().join("samples").join(file));
        (entry.roundtrip)(text.as_bytes()).unwrap_or_else(|e| panic!("samples/{file}: {e}"));
    }
}

#[test]
fn checked_in_json_schemas_match_the_rust_types() {
    let dir = events_dir().join("schemas");
    let mut problems = Vec::new();
    let files = catalog::json_schema_files();
    for (name, text) in &files {
        if let Err(p) = check_generated(&dir.join(name), text) {
            problems.push(p);
        }
    }
    let on_disk = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    if on_disk != files.len() {
        problems.push(format!("events/schemas has {on_disk} files, the catalog generates {}", files.len()));
    }
    assert!(
        problems.is_empty(),
        "{}\nregenerate with: JETSAGA_BLESS=1 cargo test -p jetsaga-events",
        problems.join("\n")
    );
}

#[test]
fn checked_in_asyncapi_matches_the_catalog() {
    let document = catalog::asyncapi_document();
    let parsed: serde_json::Value = serde_json::from_str(&document).unwrap();
    for entry in catalog::entries() {
        let channel = &parsed["channels"][entry.subject.replace('.', "_")];
        assert_eq!(channel["address"], entry.subject);
    }
    if let Err(p) = check_generated(&events_dir().join("asyncapi.json"), &document) {
        panic!("{p}\nregenerate with: JETSAGA_BLESS=1 cargo test -p jetsaga-events");
    }
}

#[test]
fn a_bad_field_is_named_with_what_was_expected_and_what_arrived() {
    let err = jetsaga_events::decode_payload::<CreateOrder>(
        br#"{"customer_id":"c-1","items":[{"product_id":"p-1","quantity":"two"}]}"#,
    )
    .unwrap_err();
    assert_eq!(err.path, "items[0].quantity");
    let text = err.to_string();
    assert!(text.starts_with("invalid orders.cmd.create: field `items[0].quantity`: "), "{text}");
    assert!(text.contains("string \"two\"") && text.contains("expected u32"), "{text}");

    let err = jetsaga_events::decode_payload::<CreateOrder>(br#"{"items":[]}"#).unwrap_err();
    assert!(err.to_string().contains("missing field `customer_id`"), "{err}");

    let err = jetsaga_events::decode_payload::<CreateOrder>(b"hello").unwrap_err();
    assert!(err.to_string().contains("not valid JSON"), "{err}");
}

#[test]
fn a_malformed_envelope_says_which_field_is_wrong() {
    let err = Envelope::decode(br#"{"id":"x","type":"orders.evt.created","correlation_id":"c","occurred_at":"yesterday","version":1,"data":{}}"#)
        .unwrap_err();
    assert_eq!(err.what, "envelope");
    assert_eq!(err.path, "occurred_at");
    assert!(err.to_string().contains("occurred_at"), "{err}");

    let err = Envelope::decode(br#"{"id":"","type":"orders.evt.created","correlation_id":"c","occurred_at":"2026-01-01T00:00:00Z","version":1,"data":{}}"#)
        .unwrap_err();
    assert_eq!(err.path, "id");
}
