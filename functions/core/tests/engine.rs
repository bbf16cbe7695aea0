//! Engine semantics through the unit-test harness, with a tiny stock-keeping
//! function: redelivery is a no-op, rejection discards writes, batches see
//! their own writes, malformed input is dead-lettered.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jetsaga_core::testing::{TestFunction, envelope_for};
use jetsaga_core::{
    Commit, CommitError, Ctx, Engine, Function, FunctionSpec, HandlerError, Incoming, Item, MemoryStore, OutboxRecord,
    Outcome, Store, StoreError, async_trait,
};
use jetsaga_events::{CreateCustomer, Envelope, InventoryReleased, ReservationFailed, UpsertProduct};

/// Treats `inventory.cmd.upsert_product` as "take `stock` units of a
/// product" and `customers.cmd.create` as a retryable failure.
struct Taker;

static SPEC: FunctionSpec = FunctionSpec {
    name: "taker",
    description: "test function",
    subscribes: &["inventory.cmd.upsert_product", "customers.cmd.create"],
    accepts: &[],
    direct: &[],
    emits: &["inventory.evt.released", "inventory.evt.reservation_failed"],
    queries: &[],
    key_field: None,
};

#[async_trait]
impl Function for Taker {
    fn spec(&self) -> &'static FunctionSpec {
        &SPEC
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        if event.event_type == "customers.cmd.create" {
            let _: CreateCustomer = event.data_as()?;
            return Err(HandlerError::retryable("the bank is down"));
        }
        let take: UpsertProduct = event.data_as()?;
        let key = format!("left/{}", take.product_id);
        let left: u32 = ctx.get(&key).await?.unwrap_or(10);
        // Write first, so the test can see that a rejection discards it.
        ctx.put(&key, &left.saturating_sub(take.stock));
        if take.stock > left {
            let reason = format!("want {}, have {left}", take.stock);
            return Err(HandlerError::rejected(reason.clone(), &ReservationFailed { order_id: take.name, reason }));
        }
        ctx.emit(InventoryReleased { order_id: take.name });
        Ok(())
    }
}

fn take(product: &str, n: u32, order: &str) -> UpsertProduct {
    UpsertProduct { product_id: product.into(), name: order.into(), price_cents: 0, stock: n }
}

#[tokio::test]
async fn redelivering_the_same_event_changes_nothing() {
    let t = TestFunction::new(Taker);
    let event = envelope_for(&take("p", 3, "o-1"));
    let first = t.deliver(event.clone()).await;
    let again = t.deliver(event).await;
    assert_eq!(first.single::<InventoryReleased>().order_id, "o-1");
    assert_eq!(t.state::<u32>("left/p").await, Some(7));
    // Already published, so nothing is left to re-publish, and stock is untouched.
    again.assert_nothing_emitted();
    assert_eq!(t.state::<u32>("left/p").await, Some(7));
}

#[tokio::test]
async fn an_unpublished_outbox_is_handed_out_again_on_redelivery() {
    let t = TestFunction::new(Taker);
    let event = envelope_for(&take("p", 3, "o-1"));
    let incoming = jetsaga_core::Incoming::new(event.clone());
    // First delivery commits, but the runtime "crashes" before publishing.
    let Outcome::Publish(first) = t.engine().handle_one(&incoming).await else { panic!("not processed") };
    let Outcome::Repeated { outbox: second, .. } = t.engine().handle_one(&incoming).await else {
        panic!("not answered as processed before")
    };
    assert_eq!(first, second, "the same events, with the same ids, are published again");
    assert_eq!(t.state::<u32>("left/p").await, Some(7));
}

#[tokio::test]
async fn a_rejection_publishes_its_failure_event_and_discards_writes() {
    let t = TestFunction::new(Taker);
    let run = t.when(&take("p", 11, "o-big")).await;
    let failed: ReservationFailed = run.single();
    assert_eq!(failed.reason, "want 11, have 10");
    assert_eq!(run.rejection_reason(), "want 11, have 10");
    assert_eq!(t.state::<u32>("left/p").await, None, "the rejected handler's write must not be committed");
}

#[tokio::test]
async fn malformed_input_is_dead_lettered_with_the_field_named() {
    let t = TestFunction::new(Taker);
    let mut event = envelope_for(&take("p", 1, "o"));
    event.data = serde_json::json!({"product_id": "p", "name": "o", "price_cents": 1, "stock": -1});
    let run = t.deliver(event).await;
    let reason = run.dead_letter_reason();
    assert!(reason.contains("field `stock`") && reason.contains("-1"), "{reason}");
}

#[tokio::test]
async fn retryable_failures_ask_for_a_retry_and_store_nothing() {
    let t = TestFunction::new(Taker);
    let run = t.when(&CreateCustomer { customer_id: "c".into(), name: "n".into(), credit_limit_cents: 1 }).await;
    assert_eq!(run.outcome, Outcome::Retry("the bank is down".into()));
}

#[tokio::test]
async fn a_batch_sees_its_own_writes_and_never_oversells() {
    let t = TestFunction::new(Taker);
    let events: Vec<Envelope> = (0..5).map(|i| envelope_for(&take("p", 3, &format!("o-{i}")))).collect();
    let runs = t.deliver_batch(events).await;
    let types: Vec<Vec<&str>> = runs.iter().map(|r| r.emitted_types()).collect();
    assert_eq!(
        types,
        vec![
            vec!["inventory.evt.released"],
            vec!["inventory.evt.released"],
            vec!["inventory.evt.released"],
            vec!["inventory.evt.reservation_failed"],
            vec!["inventory.evt.reservation_failed"],
        ]
    );
    assert_eq!(t.state::<u32>("left/p").await, Some(1));
}

#[tokio::test]
async fn a_batch_with_a_redelivered_event_still_processes_everything_once() {
    let t = TestFunction::new(Taker);
    let first = envelope_for(&take("p", 2, "o-1"));
    t.deliver(first.clone()).await;
    let batch = vec![envelope_for(&take("p", 1, "o-2")), first, envelope_for(&take("p", 1, "o-3"))];
    let runs = t.deliver_batch(batch).await;
    assert_eq!(runs[0].single::<InventoryReleased>().order_id, "o-2");
    runs[1].assert_nothing_emitted();
    assert_eq!(runs[2].single::<InventoryReleased>().order_id, "o-3");
    assert_eq!(t.state::<u32>("left/p").await, Some(6));
}

#[tokio::test]
async fn emitted_events_carry_saga_metadata_and_trace_context() {
    let t = TestFunction::new(Taker);
    let input = envelope_for(&take("p", 1, "o-1"));
    let run = t.deliver(input.clone()).await;
    let out = &run.emitted[0];
    assert_eq!(out.causation_id.as_deref(), Some(input.id.as_str()));
    assert_eq!(out.correlation_id, input.correlation_id);
    assert_eq!(out.saga_key.as_deref(), Some("o-1"));
    assert_ne!(out.id, input.id);
}

/// [`Taker`] with a prefetch hint: the right key, or a useless one.
struct Hinted {
    right: bool,
}

#[async_trait]
impl Function for Hinted {
    fn spec(&self) -> &'static FunctionSpec {
        &SPEC
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        Taker.handle(ctx, event).await
    }

    fn prefetch(&self, event: &Envelope) -> Vec<String> {
        let product = event.data["product_id"].as_str().unwrap_or_default();
        vec![if self.right { format!("left/{product}") } else { format!("elsewhere/{product}") }]
    }
}

/// A memory store that counts reads.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryStore,
    gets: AtomicUsize,
    get_manys: AtomicUsize,
    /// A key the store cannot take (reads and commits touching it fail).
    poison: Option<String>,
}

impl CountingStore {
    fn refuse(&self, keys: impl IntoIterator<Item = impl AsRef<str>>) -> Result<(), StoreError> {
        match &self.poison {
            Some(poison) if keys.into_iter().any(|k| k.as_ref() == poison) => {
                Err(StoreError::new("counting", format!("cannot take {poison}")))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for CountingStore {
    fn backend(&self) -> &'static str {
        "counting"
    }
    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Item>>, StoreError> {
        self.get_manys.fetch_add(1, Ordering::SeqCst);
        self.refuse(keys)?;
        let mut found = Vec::new();
        for key in keys {
            found.push(self.inner.get(key).await?);
        }
        Ok(found)
    }
    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Item)>, StoreError> {
        self.inner.scan(prefix).await
    }
    async fn commit(&self, commits: &[Commit]) -> Result<(), CommitError> {
        self.refuse(commits.iter().flat_map(|c| c.writes.iter().map(|w| w.key.as_str())))?;
        self.inner.commit(commits).await
    }
    async fn processed(&self, event_id: &str) -> Result<Option<Vec<OutboxRecord>>, StoreError> {
        self.inner.processed(event_id).await
    }
    async fn receipt(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        self.inner.receipt(event_id).await
    }
    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.inner.unpublished(limit).await
    }
    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        self.inner.mark_published(ids).await
    }
}

async fn run_hinted(right: bool) -> (Arc<CountingStore>, Vec<Outcome>) {
    let store = Arc::new(CountingStore::default());
    let engine = Engine::new(Arc::new(Hinted { right }), store.clone());
    // Ten takes of one unit from three products, then one too many from p0.
    let mut batch: Vec<Incoming> =
        (0..10).map(|i| Incoming::new(envelope_for(&take(&format!("p{}", i % 3), 1, &format!("o-{i}"))))).collect();
    batch.push(Incoming::new(envelope_for(&take("p0", 7, "o-greedy"))));
    let outcomes = engine.handle_batch(&batch).await;
    (store, outcomes)
}

#[tokio::test]
async fn a_batch_reads_its_hinted_keys_in_one_round_trip() {
    let (store, outcomes) = run_hinted(true).await;
    assert_eq!(store.get_manys.load(Ordering::SeqCst), 1, "one prefetch for the whole batch");
    assert_eq!(store.gets.load(Ordering::SeqCst), 0, "no key read on its own");
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Outcome::Publish(_))).count(), 10);
    assert!(matches!(&outcomes[10], Outcome::Rejected { reason, .. } if reason == "want 7, have 6"));
    let left = store.inner.get("left/p0").await.unwrap().unwrap();
    assert_eq!(left.value, b"6");
}

#[tokio::test]
async fn a_wrong_hint_costs_reads_but_changes_no_result() {
    let (store, outcomes) = run_hinted(false).await;
    assert_eq!(store.gets.load(Ordering::SeqCst), 3, "each product read once, then from the batch's own writes");
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Outcome::Publish(_))).count(), 10);
    assert!(matches!(&outcomes[10], Outcome::Rejected { reason, .. } if reason == "want 7, have 6"));
}

#[tokio::test]
async fn an_event_the_store_cannot_take_fails_alone_and_its_batch_goes_through() {
    for right in [true, false] {
        let store = Arc::new(CountingStore { poison: Some("left/bad".into()), ..CountingStore::default() });
        let engine = Engine::new(Arc::new(Hinted { right }), store.clone());
        let batch: Vec<Incoming> = [take("p", 1, "o-1"), take("bad", 1, "o-bad"), take("q", 1, "o-2")]
            .iter()
            .map(|t| Incoming::new(envelope_for(t)))
            .collect();
        let outcomes = engine.handle_batch(&batch).await;
        assert!(matches!(outcomes[0], Outcome::Publish(_)), "{outcomes:?}");
        assert!(
            matches!(&outcomes[1], Outcome::Unavailable(reason) if reason.contains("cannot take left/bad")),
            "{outcomes:?}"
        );
        assert!(matches!(outcomes[2], Outcome::Publish(_)), "{outcomes:?}");
        assert_eq!(store.inner.get("left/q").await.unwrap().unwrap().value, b"9");
    }
}

#[tokio::test]
async fn a_retry_gets_the_first_answer_and_a_reused_id_is_a_conflict() {
    let t = TestFunction::new(Taker);
    // Refused the first time (10 left, 12 wanted): refused again, the same way.
    let greedy = envelope_for(&take("p", 12, "o-1"));
    let first = t.deliver(greedy.clone()).await;
    assert_eq!(first.rejection_reason(), "want 12, have 10");
    let Outcome::Repeated { receipt, .. } = t.engine().handle_one(&Incoming::new(greedy.clone())).await else {
        panic!("a retry is answered as the first time")
    };
    assert_eq!(receipt.rejected.as_deref(), Some("want 12, have 10"));
    assert_eq!(receipt.events, ["inventory.evt.reservation_failed"]);
    assert_eq!(receipt.saga_key.as_deref(), Some("o-1"), "the order its failure event names");

    // The same id with another payload is not a retry: it is refused, and changes nothing.
    let mut reused = greedy.clone();
    reused.data = serde_json::to_value(take("p", 1, "o-1")).unwrap();
    let Outcome::Conflict(reason) = t.engine().handle_one(&Incoming::new(reused)).await else {
        panic!("a reused id must be a conflict")
    };
    assert!(reason.contains(&greedy.id) && reason.contains("a different inventory.cmd.upsert_product"), "{reason}");
    assert_eq!(t.state::<u32>("left/p").await, None, "nothing was taken");

    // Key order and spacing of the payload do not make a retry a different input.
    let ok = envelope_for(&take("p", 1, "o-2"));
    t.deliver(ok.clone()).await.single::<InventoryReleased>();
    let mut reordered = ok.clone();
    reordered.data =
        serde_json::from_str(r#"{"stock": 1, "price_cents": 0, "name": "o-2", "product_id": "p"}"#).unwrap();
    let Outcome::Repeated { receipt, .. } = t.engine().handle_one(&Incoming::new(reordered)).await else {
        panic!("the same payload, reordered, is a retry")
    };
    assert_eq!((receipt.rejected, receipt.events), (None, vec!["inventory.evt.released".to_string()]));
}

/// Takes a command and an event, keeps nothing.
struct Both;

static BOTH: FunctionSpec = FunctionSpec {
    name: "both",
    subscribes: &["inventory.evt.released"],
    accepts: &["inventory.cmd.upsert_product"],
    emits: &["inventory.evt.reservation_failed"],
    ..SPEC
};

#[async_trait]
impl Function for Both {
    fn spec(&self) -> &'static FunctionSpec {
        &BOTH
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        ctx.emit(ReservationFailed { order_id: event.id.clone(), reason: event.event_type.clone() });
        Ok(())
    }
}

#[tokio::test]
async fn a_command_cannot_take_the_id_of_an_event_before_it_comes() {
    // A client sends a command under the id an event will have (it chose its
    // `Nats-Msg-Id`); the event, when it comes, is processed all the same,
    // and the two emit different events.
    let t = TestFunction::new(Both);
    let event = envelope_for(&InventoryReleased { order_id: "o-1".into() });
    let command = Envelope { id: event.id.clone(), ..envelope_for(&take("p", 1, "o-1")) };
    let first = t.deliver(command).await.single::<ReservationFailed>();
    let run = t.deliver(event).await;
    assert!(matches!(run.outcome, Outcome::Publish(_)), "{:?}", run.outcome);
    assert_eq!(run.single::<ReservationFailed>().reason, "inventory.evt.released");
    assert_eq!(first.reason, "inventory.cmd.upsert_product");
    assert_ne!(
        run.emitted[0].id,
        t.deliver(envelope_for(&InventoryReleased { order_id: "o-2".into() })).await.emitted[0].id
    );
}
