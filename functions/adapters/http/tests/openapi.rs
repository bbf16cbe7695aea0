//! The checked-in OpenAPI document is what the code generates
//! (`JETSAGA_BLESS=1 cargo test -p jetsaga-http` rewrites it).

use std::path::Path;

#[test]
fn the_checked_in_openapi_document_matches_the_routes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../events/openapi.json");
    let generated = jetsaga_http::openapi::text();
    if std::env::var("JETSAGA_BLESS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        existing == generated,
        "events/openapi.json is out of date: run JETSAGA_BLESS=1 cargo test -p jetsaga-http"
    );
}

#[test]
fn every_route_is_described_with_its_problems() {
    let document = jetsaga_http::openapi::document();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    for path in ["/api/users", "/api/session", "/api/orders", "/api/orders/{id}/events", "/api/sagas", "/readyz"] {
        assert!(paths.contains_key(path), "{path} is missing");
    }
    let create = &document["paths"]["/api/orders"]["post"];
    assert!(create["responses"]["409"]["content"]["application/problem+json"].is_object());
    assert!(create["requestBody"]["content"]["application/json"]["schema"]["$ref"].is_string());
    // Every reference resolves.
    let text = document.to_string();
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for name in text.split("#/components/schemas/").skip(1).map(|rest| rest.split('"').next().unwrap()) {
        assert!(schemas.contains_key(name), "unresolved $ref to {name}");
    }
}
