//! The DynamoDB store passes the shared store conformance suite against a
//! real DynamoDB-compatible endpoint (moto's server, or AWS_ENDPOINT_URL).

use std::sync::Arc;

use jetsaga_core::Store;
use jetsaga_dynamodb::DynamoStore;
use jetsaga_tests::moto::Endpoint;

async fn make() -> Arc<dyn Store> {
    // Each test owns its endpoint; leak it so it lives as long as the store.
    let endpoint: &'static Endpoint = Box::leak(Box::new(Endpoint::start()));
    let table = format!("conformance-{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::new(endpoint.dynamodb().await, table);
    store.create_table_if_missing().await.unwrap();
    Arc::new(store)
}

jetsaga_core::store_conformance_tests!(make());

#[tokio::test]
async fn creating_the_table_twice_is_harmless_and_a_batch_over_the_limit_is_refused() {
    let endpoint = Endpoint::start();
    let store = DynamoStore::new(endpoint.dynamodb().await, "twice");
    store.create_table_if_missing().await.unwrap();
    store.create_table_if_missing().await.unwrap();
    let commits: Vec<jetsaga_core::Commit> =
        (0..101).map(|i| jetsaga_core::Commit { event_id: format!("e{i}"), ..Default::default() }).collect();
    let refused = store.commit(&commits).await.unwrap_err();
    assert!(matches!(refused, jetsaga_core::CommitError::TooLarge { .. }), "{refused}");
    assert!(refused.to_string().contains("101 items"), "{refused}");
    store.delete_table().await.unwrap();
}

/// A table written before schedules had attributes of their own (they were
/// written into `subj`) needs no migration: its pending records read as new
/// ones, whether the relay or a redelivery asks.
#[tokio::test]
async fn outbox_items_in_the_old_form_read_as_new_ones() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let endpoint = Endpoint::start();
    let client = endpoint.dynamodb().await;
    let store = DynamoStore::new(client.clone(), "old-form");
    store.create_table_if_missing().await.unwrap();
    let (stored, expected) = jetsaga_core::conformance::old_form_outbox();
    let s = |v: &str| AttributeValue::S(v.into());
    for (id, subject) in &stored {
        client
            .put_item()
            .table_name("old-form")
            .item("pk", s("outbox"))
            .item("sk", s(id))
            .item("ev", s("e1"))
            .item("subj", s(subject))
            .item("payload", AttributeValue::B(b"{}".to_vec().into()))
            .send()
            .await
            .unwrap();
    }
    let outbox = AttributeValue::L(stored.iter().map(|(id, _)| s(id)).collect());
    client
        .put_item()
        .table_name("old-form")
        .item("pk", s("inbox#e1"))
        .item("sk", s("inbox"))
        .item("outbox", outbox)
        .send()
        .await
        .unwrap();
    assert_eq!(store.unpublished(10).await.unwrap(), expected);
    assert_eq!(store.processed("e1").await.unwrap(), Some(expected));
    store.delete_table().await.unwrap();
}
