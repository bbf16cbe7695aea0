//! The store conformance suite. Every backend runs the same cases through
//! [`store_conformance_tests!`](crate::store_conformance_tests), so
//! SQLite, PostgreSQL, DynamoDB and memory cannot drift apart.

use std::sync::Arc;

use crate::store::{Commit, CommitError, Expect, Item, OutboxRecord, Store, Write};

fn put(key: &str, value: &str, expect: Expect) -> Write {
    Write::new(key, Some(value.as_bytes().to_vec()), expect)
}

fn record(id: &str) -> OutboxRecord {
    OutboxRecord {
        id: id.into(),
        subject: "test.evt.done".into(),
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        schedule: None,
    }
}

fn commit(event_id: &str, writes: Vec<Write>, outbox: Vec<OutboxRecord>) -> Commit {
    Commit { event_id: event_id.into(), writes, outbox, receipt: None }
}

async fn value(store: &dyn Store, key: &str) -> Option<(String, u64)> {
    store.get(key).await.unwrap().map(|Item { value, version }| (String::from_utf8(value).unwrap(), version))
}

/// Insert, read, update by version, delete, re-insert.
pub async fn versions_count_writes(store: Arc<dyn Store>) {
    assert_eq!(value(&*store, "k").await, None);
    store.commit(&[commit("e1", vec![put("k", "a", Expect::Absent)], vec![])]).await.unwrap();
    assert_eq!(value(&*store, "k").await, Some(("a".into(), 1)));
    store.commit(&[commit("e2", vec![put("k", "b", Expect::Version(1))], vec![])]).await.unwrap();
    assert_eq!(value(&*store, "k").await, Some(("b".into(), 2)));
    store.commit(&[commit("e3", vec![Write::new("k", None, Expect::Version(2))], vec![])]).await.unwrap();
    assert_eq!(value(&*store, "k").await, None);
    store.commit(&[commit("e4", vec![put("k", "c", Expect::Absent)], vec![])]).await.unwrap();
    assert_eq!(value(&*store, "k").await, Some(("c".into(), 1)));
    store
        .commit(&[commit("e5", vec![put("k", "d", Expect::Any), put("fresh", "x", Expect::Any)], vec![])])
        .await
        .unwrap();
    assert_eq!(value(&*store, "k").await, Some(("d".into(), 2)));
    assert_eq!(value(&*store, "fresh").await, Some(("x".into(), 1)));
}

/// A failed condition is reported with its key and changes nothing.
pub async fn failed_conditions_change_nothing(store: Arc<dyn Store>) {
    store.commit(&[commit("e1", vec![put("k", "a", Expect::Absent)], vec![])]).await.unwrap();
    let stale = store.commit(&[commit("e2", vec![put("k", "b", Expect::Version(7))], vec![])]).await;
    assert_eq!(stale, Err(CommitError::Conflict { key: "k".into() }));
    let exists = store.commit(&[commit("e3", vec![put("k", "b", Expect::Absent)], vec![])]).await;
    assert_eq!(exists, Err(CommitError::Conflict { key: "k".into() }));
    let missing = store.commit(&[commit("e4", vec![put("nope", "b", Expect::Version(1))], vec![])]).await;
    assert_eq!(missing, Err(CommitError::Conflict { key: "nope".into() }));
    let delete = Write::new("k", None, Expect::Version(9));
    assert!(matches!(store.commit(&[commit("e5", vec![delete], vec![])]).await, Err(CommitError::Conflict { .. })));
    assert_eq!(value(&*store, "k").await, Some(("a".into(), 1)));
    assert_eq!(value(&*store, "nope").await, None);
    for refused in ["e2", "e3", "e4", "e5"] {
        assert_eq!(store.processed(refused).await.unwrap(), None, "{refused} must not be in the inbox");
    }
}

/// State, inbox and outbox of one commit are written together or not at all.
pub async fn commits_are_all_or_nothing(store: Arc<dyn Store>) {
    store.commit(&[commit("seed", vec![put("b", "1", Expect::Absent)], vec![])]).await.unwrap();
    let writes = vec![put("a", "new", Expect::Absent), put("b", "2", Expect::Version(5))];
    let refused = store.commit(&[commit("e1", writes, vec![record("out-1")])]).await;
    assert_eq!(refused, Err(CommitError::Conflict { key: "b".into() }));
    assert_eq!(value(&*store, "a").await, None, "the first write must be rolled back");
    assert_eq!(store.processed("e1").await.unwrap(), None);
    assert!(store.unpublished(10).await.unwrap().is_empty());

    let writes = vec![put("a", "new", Expect::Absent), put("b", "2", Expect::Version(1))];
    store.commit(&[commit("e1", writes, vec![record("out-1"), record("out-2")])]).await.unwrap();
    assert_eq!(value(&*store, "a").await, Some(("new".into(), 1)));
    assert_eq!(value(&*store, "b").await, Some(("2".into(), 2)));
    assert_eq!(store.processed("e1").await.unwrap(), Some(vec![record("out-1"), record("out-2")]));
}

/// Several commits of one batch writing the same keys: each key ends at
/// the last value, its version counting every write; a delete in between
/// restarts the count.
pub async fn batches_chain_writes_on_one_key(store: Arc<dyn Store>) {
    store
        .commit(&[commit("seed", vec![put("hot", "0", Expect::Absent), put("gone", "0", Expect::Absent)], vec![])])
        .await
        .unwrap();
    let delete = |key: &str, expect| Write::new(key, None, expect);
    let batch = [
        commit("e1", vec![put("hot", "1", Expect::Version(1)), put("new", "a", Expect::Absent)], vec![record("o1")]),
        commit("e2", vec![put("hot", "2", Expect::Version(2)), delete("new", Expect::Version(1))], vec![]),
        commit("e3", vec![put("hot", "3", Expect::Version(3)), put("new", "b", Expect::Absent)], vec![record("o3")]),
        commit("e4", vec![put("blind", "x", Expect::Any), delete("gone", Expect::Version(1))], vec![]),
        commit("e5", vec![put("blind", "y", Expect::Any), delete("temp", Expect::Absent)], vec![]),
    ];
    store.commit(&batch).await.unwrap();
    assert_eq!(value(&*store, "hot").await, Some(("3".into(), 4)));
    assert_eq!(value(&*store, "new").await, Some(("b".into(), 1)));
    assert_eq!(value(&*store, "blind").await, Some(("y".into(), 2)));
    assert_eq!(value(&*store, "gone").await, None);
    assert_eq!(store.unpublished(10).await.unwrap(), vec![record("o1"), record("o3")]);
    // Unconditional writes on an existing key keep counting.
    store.commit(&[commit("e6", vec![put("blind", "z", Expect::Any)], vec![])]).await.unwrap();
    assert_eq!(value(&*store, "blind").await, Some(("z".into(), 3)));
    // A stale chain is refused as a whole, naming its key.
    let stale = [
        commit("e7", vec![put("hot", "4", Expect::Version(3))], vec![]),
        commit("e8", vec![put("hot", "5", Expect::Version(4))], vec![]),
    ];
    assert_eq!(store.commit(&stale).await, Err(CommitError::Conflict { key: "hot".into() }));
    assert_eq!(value(&*store, "hot").await, Some(("3".into(), 4)));
    // A key that must stay absent but exists refuses the batch.
    let absent = [commit("e9", vec![put("new", "c", Expect::Absent)], vec![])];
    assert_eq!(store.commit(&absent).await, Err(CommitError::Conflict { key: "new".into() }));
}

/// Many keys read at once: one answer per key, in the order asked.
pub async fn many_keys_read_at_once(store: Arc<dyn Store>) {
    store
        .commit(&[commit("seed", vec![put("a", "1", Expect::Absent), put("c", "3", Expect::Absent)], vec![])])
        .await
        .unwrap();
    let keys: Vec<String> = ["c", "missing", "a", "c"].map(String::from).to_vec();
    let found = store.get_many(&keys).await.unwrap();
    let found: Vec<Option<(Vec<u8>, u64)>> = found.into_iter().map(|i| i.map(|i| (i.value, i.version))).collect();
    assert_eq!(found, vec![Some((b"3".to_vec(), 1)), None, Some((b"1".to_vec(), 1)), Some((b"3".to_vec(), 1))]);
    assert!(store.get_many(&[]).await.unwrap().is_empty());
    // More keys than one round trip of some backends takes (DynamoDB: 100).
    let many: Vec<String> = (0..250).map(|i| if i % 50 == 0 { "a".to_string() } else { format!("k{i}") }).collect();
    let found = store.get_many(&many).await.unwrap();
    assert_eq!(found.len(), 250);
    for (key, item) in many.iter().zip(found) {
        assert_eq!(item.map(|i| i.value), (key == "a").then(|| b"1".to_vec()), "{key}");
    }
}

/// A batch of commits is one transaction: one bad commit refuses them all.
pub async fn batches_are_all_or_nothing(store: Arc<dyn Store>) {
    let batch = [
        commit("e1", vec![put("x", "1", Expect::Absent)], vec![record("o1")]),
        commit("e2", vec![put("x", "2", Expect::Version(1))], vec![record("o2")]),
        commit("e3", vec![put("y", "1", Expect::Version(3))], vec![record("o3")]),
    ];
    assert_eq!(store.commit(&batch).await, Err(CommitError::Conflict { key: "y".into() }));
    assert_eq!(value(&*store, "x").await, None);
    assert_eq!(store.processed("e1").await.unwrap(), None);
    assert!(store.unpublished(10).await.unwrap().is_empty());

    let batch = [
        commit("e1", vec![put("x", "1", Expect::Absent)], vec![record("o1")]),
        commit("e2", vec![put("x", "2", Expect::Version(1))], vec![record("o2")]),
        commit("e3", vec![], vec![]),
    ];
    store.commit(&batch).await.unwrap();
    assert_eq!(value(&*store, "x").await, Some(("2".into(), 2)));
    assert_eq!(store.processed("e3").await.unwrap(), Some(vec![]));
    let ids: Vec<String> = store.unpublished(10).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["o1", "o2"]);
}

/// The inbox refuses an event id seen before, leaving state as after one delivery.
pub async fn the_inbox_refuses_duplicates(store: Arc<dyn Store>) {
    store.commit(&[commit("e1", vec![put("n", "1", Expect::Absent)], vec![record("o1")])]).await.unwrap();
    let again = store.commit(&[commit("e1", vec![put("n", "2", Expect::Version(1))], vec![record("o1-b")])]).await;
    assert_eq!(again, Err(CommitError::Duplicate { event_id: "e1".into() }));
    assert_eq!(value(&*store, "n").await, Some(("1".into(), 1)));
    assert_eq!(store.processed("e1").await.unwrap(), Some(vec![record("o1")]));
    // A redelivery derives the same outbox ids as the first delivery; while
    // those are still unpublished, the answer is still "processed before"
    // (not a failure of the outbox's unique ids), so it is answered as such.
    let redelivered = store.commit(&[commit("e1", vec![put("n", "2", Expect::Version(1))], vec![record("o1")])]).await;
    assert_eq!(redelivered, Err(CommitError::Duplicate { event_id: "e1".into() }));
    assert_eq!(store.processed("e1").await.unwrap(), Some(vec![record("o1")]));
    let twice_in_one_batch = store.commit(&[commit("e2", vec![], vec![]), commit("e2", vec![], vec![])]).await;
    assert_eq!(twice_in_one_batch, Err(CommitError::Duplicate { event_id: "e2".into() }));
    assert_eq!(store.processed("e2").await.unwrap(), None);
}

/// The outbox lists unpublished records oldest first until they are marked published.
pub async fn the_outbox_drains(store: Arc<dyn Store>) {
    for i in 0..5 {
        let out = vec![record(&format!("o{i}a")), record(&format!("o{i}b"))];
        store.commit(&[commit(&format!("e{i}"), vec![], out)]).await.unwrap();
    }
    let all: Vec<String> = store.unpublished(100).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(all, ["o0a", "o0b", "o1a", "o1b", "o2a", "o2b", "o3a", "o3b", "o4a", "o4b"]);
    assert_eq!(store.unpublished(3).await.unwrap().len(), 3);
    assert_eq!(store.unpublished(1).await.unwrap()[0], record("o0a"));
    store.mark_published(&["o0a".into(), "o0b".into(), "o1a".into()]).await.unwrap();
    let left: Vec<String> = store.unpublished(100).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(left, ["o1b", "o2a", "o2b", "o3a", "o3b", "o4a", "o4b"]);
    assert_eq!(store.processed("e0").await.unwrap(), Some(vec![]));
    assert_eq!(store.processed("e1").await.unwrap(), Some(vec![record("o1b")]));
    store.mark_published(&[]).await.unwrap();
    // Many at once (more than one round trip of some backends takes:
    // DynamoDB, 25), with ids marked before, twice, or never committed.
    let many: Vec<OutboxRecord> = (0..40).map(|i| record(&format!("p{i:02}"))).collect();
    store.commit(&[commit("e-many", vec![], many)]).await.unwrap();
    let mut ids: Vec<String> = store.unpublished(100).await.unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 47);
    ids.extend(["o0a", "p00", "never"].map(String::from));
    store.mark_published(&ids).await.unwrap();
    assert!(store.unpublished(100).await.unwrap().is_empty());
}

/// A schedule and a cancel come back out of the outbox as they went in,
/// beside their event's subject, whether read as pending or as a repeat's.
pub async fn schedules_are_kept_with_their_records(store: Arc<dyn Store>) {
    use crate::schedule::{Schedule, name_for};
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:30.250Z").unwrap().with_timezone(&chrono::Utc);
    let scheduled = OutboxRecord {
        subject: "test.evt.deadline_passed".into(),
        schedule: Some(Schedule::At { name: name_for("test", "key 1"), at }),
        ..record("s1")
    };
    let cancel = OutboxRecord {
        subject: "test.evt.deadline_canceled".into(),
        schedule: Some(Schedule::Cancel { name: name_for("test", "key 1") }),
        ..record("s2")
    };
    let out = vec![record("s0"), scheduled, cancel];
    store.commit(&[commit("e1", vec![], out.clone())]).await.unwrap();
    assert_eq!(store.unpublished(10).await.unwrap(), out);
    assert_eq!(store.processed("e1").await.unwrap(), Some(out));
}

/// What an outbox held in the old in-band form (the schedule written into
/// the subject): `(id, stored subject)` pairs, and the records each store
/// must read them as after the upgrade. Each backend's upgrade test writes
/// the pairs in its own old layout (with payload `{}`).
pub fn old_form_outbox() -> (Vec<(&'static str, String)>, Vec<OutboxRecord>) {
    use crate::schedule::{Schedule, name_for};
    let name = name_for("order", "o-1");
    let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T12:00:30.250Z").unwrap().to_utc();
    let stored = vec![
        ("o1", "orders.evt.created".to_string()),
        ("o2", format!("{name} @at 2026-12-07T12:00:30.250Z orders.evt.deadline_passed")),
        ("o3", format!("orders.evt.deadline_canceled purge {name}")),
    ];
    let record = |id: &str, subject: &str, schedule| OutboxRecord {
        id: id.into(),
        subject: subject.into(),
        payload: b"{}".to_vec(),
        traceparent: None,
        schedule,
    };
    let expected = vec![
        record("o1", "orders.evt.created", None),
        record("o2", "orders.evt.deadline_passed", Some(Schedule::At { name: name.clone(), at })),
        record("o3", "orders.evt.deadline_canceled", Some(Schedule::Cancel { name })),
    ];
    (stored, expected)
}

/// Scans return exactly the keys under a prefix, in order; SQL wildcards are literal.
pub async fn scans_match_prefixes_literally(store: Arc<dyn Store>) {
    let keys = ["product/b", "product/a", "product_x", "products", "customer/a", "product/%", "product/a/1"];
    let writes = keys.iter().map(|k| put(k, k, Expect::Absent)).collect();
    store.commit(&[commit("e1", writes, vec![])]).await.unwrap();
    let found: Vec<String> = store.scan("product/").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(found, ["product/%", "product/a", "product/a/1", "product/b"]);
    let found: Vec<String> = store.scan("product_").await.unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(found, ["product_x"]);
    assert!(store.scan("zzz").await.unwrap().is_empty());
}

/// A page of a prefix starts after the key given (or at the prefix),
/// holds at most the number asked for, in key order, and never strays
/// past the prefix, whatever `after` says.
pub async fn scans_come_a_page_at_a_time(store: Arc<dyn Store>) {
    let keys = ["idx/a/3", "idx/a/1", "idx/a/2", "idx/a/4", "idx/b/1", "idx/a", "idx/a0"];
    let writes = keys.iter().map(|k| put(k, k, Expect::Absent)).collect();
    store.commit(&[commit("e1", writes, vec![])]).await.unwrap();
    let page = |after: Option<&'static str>, limit| {
        let store = store.clone();
        async move {
            let found = store.scan_page("idx/a/", after, limit).await.unwrap();
            found.into_iter().map(|(k, _)| k).collect::<Vec<String>>()
        }
    };
    assert_eq!(page(None, 2).await, ["idx/a/1", "idx/a/2"]);
    assert_eq!(page(Some("idx/a/2"), 2).await, ["idx/a/3", "idx/a/4"]);
    assert_eq!(page(Some("idx/a/4"), 2).await, Vec::<String>::new());
    assert_eq!(page(Some("idx/a/"), 10).await, ["idx/a/1", "idx/a/2", "idx/a/3", "idx/a/4"]);
    assert_eq!(page(Some("a"), 1).await, ["idx/a/1"], "an `after` before the prefix starts at it");
    assert_eq!(page(Some("idx/b/0"), 5).await, Vec::<String>::new(), "an `after` past the prefix finds nothing");
}

/// Many writers race on one key from the same version: exactly one wins.
pub async fn concurrent_writers_on_one_key_have_one_winner(store: Arc<dyn Store>) {
    store.commit(&[commit("seed", vec![put("stock", "10", Expect::Absent)], vec![])]).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let writes = vec![put("stock", &format!("taken-by-{i}"), Expect::Version(1))];
            store.commit(&[commit(&format!("racer-{i}"), writes, vec![record(&format!("out-{i}"))])]).await
        }));
    }
    let mut winners = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(()) => winners.push(i),
            Err(CommitError::Conflict { key }) => assert_eq!(key, "stock"),
            Err(other) => panic!("racer {i}: unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer must win, got {winners:?}");
    let (stored, version) = value(&*store, "stock").await.unwrap();
    assert_eq!(stored, format!("taken-by-{}", winners[0]));
    assert_eq!(version, 2);
    assert_eq!(store.unpublished(100).await.unwrap().len(), 1, "only the winner's outbox is stored");
}

/// Generates one `#[tokio::test]` per conformance case for a backend.
///
/// `$make` is an async block returning `Arc<dyn Store>`; each test gets a fresh store.
/// Inbox records older than the cutoff go once their events are published;
/// newer ones, and those whose events still wait, stay (a redelivery must
/// find them).
pub async fn old_inbox_records_are_swept_once_their_events_are_out(store: Arc<dyn Store>) {
    store.commit(&[commit("published", vec![], vec![record("r1")])]).await.unwrap();
    store.commit(&[commit("waiting", vec![], vec![record("r2")])]).await.unwrap();
    store.commit(&[commit("quiet", vec![], vec![])]).await.unwrap();
    store.mark_published(&["r1".into()]).await.unwrap();
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(store.sweep_inbox(past).await.unwrap(), 0, "nothing is older than an hour");
    assert!(store.processed("quiet").await.unwrap().is_some());
    // DynamoDB keeps time in whole seconds.
    let future = chrono::Utc::now() + chrono::Duration::seconds(2);
    assert_eq!(store.sweep_inbox(future).await.unwrap(), 2);
    assert_eq!(store.processed("published").await.unwrap(), None);
    assert_eq!(store.processed("quiet").await.unwrap(), None);
    assert_eq!(store.processed("waiting").await.unwrap(), Some(vec![record("r2")]), "its event still waits");
    // A swept id is new again: that is why the cutoff must be older than any redelivery.
    store.commit(&[commit("quiet", vec![], vec![])]).await.unwrap();
}

/// Keys written with a retention stay readable until the sweep, which
/// removes exactly those whose retention ended; writing a key again
/// without one keeps it for good. Covers inserts, versioned updates and
/// unconditional (counted) writes.
pub async fn keys_past_their_retention_are_swept(store: Arc<dyn Store>) {
    let now = chrono::Utc::now().timestamp();
    let until = |mut write: Write, at: i64| {
        write.expires_at = Some(at);
        write
    };
    let writes = vec![
        until(put("order/ended", "e", Expect::Absent), now - 10),
        until(put("order/kept", "k", Expect::Absent), now - 10),
        until(put("order/later", "l", Expect::Absent), now + 3600),
        until(put("tally", "t", Expect::Any), now - 10),
        put("order/plain", "p", Expect::Absent),
    ];
    store.commit(&[commit("e1", writes, vec![])]).await.unwrap();
    let rewrites =
        vec![put("order/kept", "k2", Expect::Version(1)), until(put("order/later", "l2", Expect::Version(1)), now - 5)];
    store.commit(&[commit("e2", rewrites, vec![])]).await.unwrap();
    assert_eq!(value(&*store, "order/ended").await, Some(("e".into(), 1)), "readable until swept");
    assert_eq!(store.sweep_expired(now).await.unwrap(), 3, "ended, later (rewritten to end) and tally");
    assert_eq!(value(&*store, "order/ended").await, None);
    assert_eq!(value(&*store, "order/later").await, None);
    assert_eq!(value(&*store, "tally").await, None);
    assert_eq!(value(&*store, "order/kept").await, Some(("k2".into(), 2)), "rewritten without a retention");
    assert_eq!(value(&*store, "order/plain").await, Some(("p".into(), 1)));
    assert_eq!(store.sweep_expired(now).await.unwrap(), 0);
}

#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr) => {
        $crate::store_conformance_tests!(@cases $make;
            versions_count_writes,
            failed_conditions_change_nothing,
            keys_past_their_retention_are_swept,
            scans_come_a_page_at_a_time,
            commits_are_all_or_nothing,
            batches_are_all_or_nothing,
            batches_chain_writes_on_one_key,
            many_keys_read_at_once,
            the_inbox_refuses_duplicates,
            the_outbox_drains,
            schedules_are_kept_with_their_records,
            scans_match_prefixes_literally,
            concurrent_writers_on_one_key_have_one_winner,
            old_inbox_records_are_swept_once_their_events_are_out,
        );
    };
    (@cases $make:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store: ::std::sync::Arc<dyn $crate::store::Store> = $make.await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
}
