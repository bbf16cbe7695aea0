//! DynamoDB implementation of the jetsaga [`Store`] port: one table per
//! function, every commit one `TransactWriteItems` with condition
//! expressions, so the effectively-once guarantee holds exactly as on
//! SQLite and PostgreSQL (it passes the same conformance suite).
//!
//! Table layout (partition key `pk`, sort key `sk`, both strings):
//!
//! | item | `pk` | `sk` | attributes |
//! | --- | --- | --- | --- |
//! | state | `kv#<first path segment of the key>` | the key | `v` (binary), `ver` (number) |
//! | inbox | `inbox#<event id>` | `inbox` | `outbox` (list of event ids), `at`, `expires_at` |
//! | outbox | `outbox` | event id (UUIDv7: time-ordered) | `subj`, `payload`, `tp`, `expires_at` |
//!
//! Keys are grouped by their first segment (`product/p-1` lives under
//! `kv#product`) so prefix scans are single-partition queries. The bridge's
//! outbox relay removes published outbox items (through the function's own
//! `mark_published` invocation). Inbox and outbox items carry a TTL
//! (`expires_at`, [`RETENTION_SECS`]: longer than the saga stream keeps a
//! message, so a redelivery always finds its inbox record); that is how
//! DynamoDB's inbox is swept.
//!
//! `AWS_ENDPOINT_URL` points the client at a DynamoDB-compatible endpoint
//! (moto's server, LocalStack).

pub mod capacity;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, DeleteRequest, KeySchemaElement, KeyType,
    KeysAndAttributes, Put, ScalarAttributeType, TimeToLiveSpecification, TransactWriteItem, Update, WriteRequest,
};
use aws_smithy_http_client::tls;
use jetsaga_core::schedule::Schedule;

use crate::capacity::Meter;
use jetsaga_core::{
    Commit, CommitError, Effect, Expect, Item, KeyChange, OutboxRecord, Store, StoreError, net_changes,
};

/// Most actions one DynamoDB transaction may hold.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// How long inbox and outbox items are kept (DynamoDB TTL): 21 days, the
/// runtime's default inbox retention (`jetsaga_jetstream::Config::inbox_retention`).
pub const RETENTION_SECS: i64 = 21 * 24 * 3600;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new("dynamodb", e.to_string())
}

/// A DynamoDB error with its service code, which `Display` on the SDK error hides.
fn sdk_err<E: ProvideErrorMetadata + std::fmt::Debug>(
    what: &str,
    e: aws_sdk_dynamodb::error::SdkError<E>,
) -> StoreError {
    let message = match e.as_service_error() {
        Some(service) => {
            format!("{what}: {}: {}", service.code().unwrap_or("error"), service.message().unwrap_or("no message"))
        }
        None => format!("{what}: {e}"),
    };
    err(message)
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn segment(key: &str) -> &str {
    key.split_once('/').map_or(key, |(first, _)| first)
}

fn kv_pk(key: &str) -> String {
    format!("kv#{}", segment(key))
}

fn inbox_pk(event_id: &str) -> String {
    format!("inbox#{event_id}")
}

const OUTBOX_PK: &str = "outbox";

/// Most keys one `BatchGetItem` may ask for.
const BATCH_GET_LIMIT: usize = 100;
/// Most writes one `BatchWriteItem` may carry.
const BATCH_WRITE_LIMIT: usize = 25;

/// Waits before sending again what a batch operation left unprocessed
/// (DynamoDB throttling part of it), longer each time; gives up after 8.
async fn back_off_unprocessed(attempt: &mut u32, operation: &str) -> Result<(), StoreError> {
    *attempt += 1;
    if *attempt > 8 {
        return Err(err(format!("{operation} left part of its request unprocessed after 8 attempts")));
    }
    tokio::time::sleep(std::time::Duration::from_millis(20 << (*attempt).min(5))).await;
    Ok(())
}

/// A function's store in its own DynamoDB table.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    meter: Arc<Meter>,
}

/// What a transaction action stands for, to explain a cancellation.
enum Action {
    Inbox(String),
    Key(String),
    Outbox,
}

impl DynamoStore {
    /// A store on `table` using `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into(), meter: Arc::default() }
    }

    /// The request units this store's requests consumed (see [`capacity`]).
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// A store on `table`, configured from the environment the way Lambda
    /// sets it: `AWS_REGION` (or `AWS_DEFAULT_REGION`), `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and
    /// `AWS_ENDPOINT_URL_DYNAMODB` or `AWS_ENDPOINT_URL` for a local endpoint.
    ///
    /// Deliberately not the full AWS configuration chain (profiles, SSO,
    /// web identity): that pulls in three more SDK clients and a second TLS
    /// stack, and a bootstrap should be small and start fast.
    pub fn from_env(table: impl Into<String>) -> Result<Self, StoreError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")).ok_or_else(|| {
            err("no AWS region: set AWS_REGION (Lambda sets it; for a local endpoint any region works, e.g. us-east-1)")
        })?;
        let (Some(key_id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) else {
            return Err(err(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (Lambda sets them from the function's role)",
            ));
        };
        let credentials = Credentials::new(key_id, secret, var("AWS_SESSION_TOKEN"), None, "environment");
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
            .build_https();
        let mut config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .http_client(https);
        if let Some(url) = var("AWS_ENDPOINT_URL_DYNAMODB").or_else(|| var("AWS_ENDPOINT_URL")) {
            config = config.endpoint_url(url);
        }
        Ok(Self::new(Client::from_conf(config.build()), table))
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table (on-demand billing, TTL on `expires_at`) unless it
    /// exists. The deploy template creates tables in AWS; this is for local runs.
    pub async fn create_table_if_missing(&self) -> Result<(), StoreError> {
        if self.client.describe_table().table_name(&self.table).send().await.is_ok() {
            return Ok(());
        }
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(err)
        };
        let key =
            |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(err);
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attribute("pk")?)
            .attribute_definitions(attribute("sk")?)
            .key_schema(key("pk", KeyType::Hash)?)
            .key_schema(key("sk", KeyType::Range)?)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Another process created it first.
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => return Ok(()),
            Err(e) => return Err(sdk_err(&format!("cannot create table {}", self.table), e)),
        }
        let ttl = TimeToLiveSpecification::builder().enabled(true).attribute_name("expires_at").build().map_err(err)?;
        if let Err(e) =
            self.client.update_time_to_live().table_name(&self.table).time_to_live_specification(ttl).send().await
        {
            tracing::warn!(table = %self.table, error = %sdk_err("update_time_to_live", e), "outbox items will not expire");
        }
        Ok(())
    }

    /// Deletes the table (test clean-up).
    pub async fn delete_table(&self) -> Result<(), StoreError> {
        self.client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_err("delete_table", e))
    }

    /// The inbox item of an input event, read consistently.
    async fn inbox_item(&self, event_id: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let inbox = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(inbox_pk(event_id)))
            .key("sk", s("inbox"))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("get_item", e))?;
        self.meter.read(inbox.item());
        Ok(inbox.item().cloned())
    }

    /// The items at `keys` (`(pk, sk)` pairs) that exist, read consistently
    /// with one `BatchGetItem` per 100 keys instead of a `GetItem` per key;
    /// keys DynamoDB leaves unprocessed (throttling) are asked for again.
    async fn batch_get(
        &self,
        mut keys: Vec<(String, String)>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        // DynamoDB refuses a key asked for twice in one request.
        keys.sort_unstable();
        keys.dedup();
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_LIMIT) {
            let key_maps = chunk
                .iter()
                .map(|(pk, sk)| HashMap::from([("pk".to_string(), s(pk.as_str())), ("sk".to_string(), s(sk.as_str()))]))
                .collect::<Vec<_>>();
            let mut wanted =
                Some(KeysAndAttributes::builder().set_keys(Some(key_maps)).consistent_read(true).build().map_err(err)?);
            let mut attempt = 0u32;
            while let Some(request) = wanted.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| sdk_err("batch_get_item", e))?;
                found.extend(out.responses().and_then(|r| r.get(&self.table)).into_iter().flatten().cloned());
                wanted =
                    out.unprocessed_keys().and_then(|u| u.get(&self.table)).filter(|k| !k.keys().is_empty()).cloned();
                if wanted.is_some() {
                    back_off_unprocessed(&mut attempt, "batch_get_item").await?;
                }
            }
        }
        self.meter.read_each(keys.len(), &found);
        Ok(found)
    }

    fn outbox_record(item: &HashMap<String, AttributeValue>) -> Result<OutboxRecord, StoreError> {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let schedule_at = match item.get("sched_at").map(|v| v.as_n()) {
            None => None,
            Some(Ok(ms)) => Some(ms.parse::<i64>().map_err(|e| err(format!("outbox item's sched_at {ms:?}: {e}")))?),
            Some(Err(_)) => return Err(err("outbox item's sched_at is not a number")),
        };
        // Items written before the schedule had attributes of its own kept it
        // in `subj`: `from_stored` reads those as they were meant.
        let schedule = Schedule::from_fields(text("sched"), schedule_at).map_err(err)?;
        OutboxRecord::from_stored(
            text("sk").ok_or_else(|| err("outbox item without sk"))?,
            text("subj").ok_or_else(|| err("outbox item without subj"))?,
            item.get("payload")
                .and_then(|v| v.as_b().ok())
                .map(|b| b.as_ref().to_vec())
                .ok_or_else(|| err("outbox item without payload"))?,
            text("tp"),
            schedule,
        )
        .map_err(err)
    }

    fn state_item(item: &HashMap<String, AttributeValue>) -> Result<(String, Item), StoreError> {
        let key = item.get("sk").and_then(|v| v.as_s().ok()).cloned().ok_or_else(|| err("state item without sk"))?;
        let value = item.get("v").and_then(|v| v.as_b().ok()).map(|b| b.as_ref().to_vec()).unwrap_or_default();
        let version = item.get("ver").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((key, Item { value, version }))
    }

    /// The single action for all of a batch's writes to one key
    /// (DynamoDB refuses two actions on one item in a transaction).
    fn key_action(&self, change: &KeyChange<'_>) -> Result<TransactWriteItem, StoreError> {
        let key = change.key;
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let condition = match change.expect {
            Expect::Absent => Some("attribute_not_exists(pk)".to_string()),
            Expect::Version(v) => {
                names.insert("#ver".to_string(), "ver".to_string());
                values.insert(":expected".to_string(), n(v));
                Some("#ver = :expected".to_string())
            }
            Expect::Any => None,
        };
        let key_map = HashMap::from([("pk".to_string(), s(kv_pk(key))), ("sk".to_string(), s(key))]);
        let action = match change.effect {
            Effect::CheckAbsent => {
                // Created and deleted within the batch: only the condition remains.
                let check = ConditionCheck::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_map))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(err)?;
                TransactWriteItem::builder().condition_check(check).build()
            }
            Effect::Delete => {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_map))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names((!names.is_empty()).then_some(names))
                    .set_expression_attribute_values((!values.is_empty()).then_some(values))
                    .build()
                    .map_err(err)?;
                TransactWriteItem::builder().delete(delete).build()
            }
            Effect::Put { value, version } => {
                let mut item = key_map;
                item.insert("v".into(), AttributeValue::B(value.to_vec().into()));
                item.insert("ver".into(), n(version));
                if let Some(at) = change.expires_at {
                    // The table's TTL attribute: DynamoDB removes the key within days.
                    item.insert("expires_at".into(), n(at));
                }
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names((!names.is_empty()).then_some(names))
                    .set_expression_attribute_values((!values.is_empty()).then_some(values))
                    .build()
                    .map_err(err)?;
                TransactWriteItem::builder().put(put).build()
            }
            Effect::PutCounting { value, writes } => {
                // Unconditional writes on a key of unknown version: count them up.
                names.insert("#v".into(), "v".into());
                names.insert("#ver".into(), "ver".into());
                values.insert(":v".into(), AttributeValue::B(value.to_vec().into()));
                values.insert(":n".into(), n(writes));
                names.insert("#exp".into(), "expires_at".into());
                let expiry = match change.expires_at {
                    Some(at) => {
                        values.insert(":exp".into(), n(at));
                        "SET #v = :v, #exp = :exp ADD #ver :n"
                    }
                    None => "SET #v = :v ADD #ver :n REMOVE #exp",
                };
                let update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(key_map))
                    .update_expression(expiry)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .build()
                    .map_err(err)?;
                TransactWriteItem::builder().update(update).build()
            }
        };
        Ok(action)
    }
}

#[async_trait]
impl Store for DynamoStore {
    fn backend(&self) -> &'static str {
        "dynamodb"
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(kv_pk(key)))
            .key("sk", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_err("get_item", e))?;
        self.meter.read(out.item());
        out.item().map(|item| Self::state_item(item).map(|(_, item)| item)).transpose()
    }

    /// Reads many keys at once: state keys with [`DynamoStore::batch_get`].
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Item>>, StoreError> {
        let wanted = keys.iter().map(|key| (kv_pk(key), key.clone())).collect();
        let mut found: HashMap<String, Item> = HashMap::with_capacity(keys.len());
        for item in self.batch_get(wanted).await? {
            let (key, item) = Self::state_item(&item)?;
            found.insert(key, item);
        }
        Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Item)>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = if prefix.contains('/') {
                // Every key under the prefix shares its first segment: one partition.
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":pk", s(kv_pk(prefix)))
                    .expression_attribute_values(":prefix", s(prefix))
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map(|o| (o.items.unwrap_or_default(), o.last_evaluated_key))
                    .map_err(|e| sdk_err("query", e))?
            } else {
                self.client
                    .scan()
                    .table_name(&self.table)
                    .filter_expression("begins_with(pk, :kv) AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":kv", s("kv#"))
                    .expression_attribute_values(":prefix", s(prefix))
                    .consistent_read(true)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map(|o| (o.items.unwrap_or_default(), o.last_evaluated_key))
                    .map_err(|e| sdk_err("scan", e))?
            };
            // (A scan is billed for what it reads, not for what its filter
            // keeps; the store scans only for a prefix without a `/`.)
            self.meter.read(&page.0);
            for item in &page.0 {
                found.push(Self::state_item(item)?);
            }
            match page.1 {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// One partition (the prefix's first segment, as [`Store::scan`]),
    /// read in key order from `after`, a page at a time.
    async fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Item)>, StoreError> {
        if !prefix.contains('/') {
            let found = self.scan(prefix).await?;
            return Ok(found.into_iter().filter(|(k, _)| after.is_none_or(|a| k.as_str() > a)).take(limit).collect());
        }
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        while found.len() < limit {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(kv_pk(prefix)))
                .consistent_read(true)
                .limit(i32::try_from(limit - found.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            let query = match after {
                Some(after) if after >= prefix => query
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", s(after)),
                _ => query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .expression_attribute_values(":prefix", s(prefix)),
            };
            let page = query.send().await.map_err(|e| sdk_err("query", e))?;
            self.meter.read(page.items());
            for item in page.items() {
                let (key, item) = Self::state_item(item)?;
                if !key.starts_with(prefix) {
                    return Ok(found); // past the prefix: keys come in order
                }
                found.push((key, item));
            }
            match page.last_evaluated_key() {
                Some(next) if !next.is_empty() => start = Some(next.clone()),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn commit(&self, commits: &[Commit]) -> Result<(), CommitError> {
        let mut actions = Vec::new();
        let mut meaning = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        for commit in commits {
            if !seen.insert(commit.event_id.as_str()) {
                return Err(CommitError::Duplicate { event_id: commit.event_id.clone() });
            }
            let outbox_ids = commit.outbox.iter().map(|r| s(&r.id)).collect();
            let inbox = HashMap::from([
                ("pk".to_string(), s(inbox_pk(&commit.event_id))),
                ("sk".to_string(), s("inbox")),
                ("outbox".to_string(), AttributeValue::L(outbox_ids)),
                ("at".to_string(), n(now)),
                ("expires_at".to_string(), n(now + RETENTION_SECS)),
            ]);
            let mut inbox = inbox;
            if let Some(receipt) = &commit.receipt {
                inbox.insert("receipt".to_string(), s(receipt));
            }
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(inbox))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(err)?;
            actions.push(TransactWriteItem::builder().put(put).build());
            meaning.push(Action::Inbox(commit.event_id.clone()));
            for record in &commit.outbox {
                let mut item = HashMap::from([
                    ("pk".to_string(), s(OUTBOX_PK)),
                    ("sk".to_string(), s(&record.id)),
                    ("ev".to_string(), s(&commit.event_id)),
                    ("subj".to_string(), s(&record.subject)),
                    ("payload".to_string(), AttributeValue::B(record.payload.clone().into())),
                    ("expires_at".to_string(), n(now + RETENTION_SECS)),
                ]);
                if let Some(tp) = &record.traceparent {
                    item.insert("tp".into(), s(tp));
                }
                if let Some(schedule) = &record.schedule {
                    item.insert("sched".into(), s(schedule.name()));
                    if let Some(at) = schedule.at_ms() {
                        item.insert("sched_at".into(), n(at));
                    }
                }
                let put = Put::builder().table_name(&self.table).set_item(Some(item)).build().map_err(err)?;
                actions.push(TransactWriteItem::builder().put(put).build());
                meaning.push(Action::Outbox);
            }
        }
        for change in net_changes(commits) {
            actions.push(self.key_action(&change)?);
            meaning.push(Action::Key(change.key.to_string()));
        }
        if actions.len() > MAX_TRANSACTION_ITEMS {
            return Err(CommitError::TooLarge {
                message: format!("{} items, DynamoDB allows {MAX_TRANSACTION_ITEMS} per transaction", actions.len()),
            });
        }
        // A transaction DynamoDB cancels is billed too.
        self.meter.transaction(&actions);
        match self.client.transact_write_items().set_transact_items(Some(actions)).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                    canceled,
                )) = e.as_service_error()
                {
                    for (reason, action) in canceled.cancellation_reasons().iter().zip(&meaning) {
                        if reason.code() == Some("ConditionalCheckFailed") {
                            return Err(match action {
                                Action::Inbox(event_id) => CommitError::Duplicate { event_id: event_id.clone() },
                                Action::Key(key) => CommitError::Conflict { key: key.clone() },
                                Action::Outbox => CommitError::Store(err("outbox write refused")),
                            });
                        }
                    }
                    // Concurrent transactions on the same items: the caller re-reads and retries.
                    if canceled.cancellation_reasons().iter().any(|r| r.code() == Some("TransactionConflict")) {
                        let key = meaning
                            .iter()
                            .find_map(|m| if let Action::Key(k) = m { Some(k.clone()) } else { None })
                            .unwrap_or_default();
                        return Err(CommitError::Conflict { key });
                    }
                }
                Err(CommitError::Store(sdk_err("transact_write_items", e)))
            }
        }
    }

    async fn receipt(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let inbox = self.inbox_item(event_id).await?;
        Ok(inbox.as_ref().and_then(|item| item.get("receipt")).and_then(|v| v.as_s().ok()).cloned())
    }

    async fn processed(&self, event_id: &str) -> Result<Option<Vec<OutboxRecord>>, StoreError> {
        let Some(item) = self.inbox_item(event_id).await? else { return Ok(None) };
        let ids: Vec<String> = item
            .get("outbox")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default();
        // Those still unpublished, in the order they were emitted.
        let mut unpublished: HashMap<String, OutboxRecord> = HashMap::new();
        for item in self.batch_get(ids.iter().map(|id| (OUTBOX_PK.to_string(), id.clone())).collect()).await? {
            let record = Self::outbox_record(&item)?;
            unpublished.insert(record.id.clone(), record);
        }
        let pending: Vec<OutboxRecord> = ids.iter().filter_map(|id| unpublished.remove(id)).collect();
        Ok(Some(pending))
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(OUTBOX_PK))
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| sdk_err("query", e))?;
        self.meter.read(out.items());
        out.items().iter().map(Self::outbox_record).collect()
    }

    /// DynamoDB expires inbox items by itself (TTL on `expires_at`); this
    /// sweeps on demand with a scan, for a cutoff shorter than the TTL.
    async fn sweep_inbox(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        let pending: std::collections::HashSet<String> =
            self.unpublished(usize::MAX >> 1).await?.into_iter().map(|r| r.id).collect();
        let mut swept = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :inbox AND #at < :before")
                .expression_attribute_names("#at", "at")
                .expression_attribute_values(":inbox", s("inbox"))
                .expression_attribute_values(":before", n(before.timestamp()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_err("scan", e))?;
            self.meter.read(page.items());
            for item in page.items() {
                let waiting = item
                    .get("outbox")
                    .and_then(|v| v.as_l().ok())
                    .is_some_and(|ids| ids.iter().any(|id| id.as_s().is_ok_and(|id| pending.contains(id))));
                let Some(pk) = item.get("pk").cloned() else { continue };
                if !waiting {
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .key("pk", pk)
                        .key("sk", s("inbox"))
                        .send()
                        .await
                        .map_err(|e| sdk_err("delete_item", e))?;
                    self.meter.write(item);
                    swept += 1;
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(swept);
            }
        }
    }

    /// DynamoDB's TTL removes state keys whose `expires_at` passed, within
    /// days; this removes them now, with a scan (tests, and an operator in
    /// a hurry). A key written again meanwhile is left alone.
    async fn sweep_expired(&self, now: i64) -> Result<u64, StoreError> {
        let mut swept = 0;
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(pk, :kv) AND expires_at <= :now")
                .expression_attribute_values(":kv", s("kv#"))
                .expression_attribute_values(":now", n(now))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_err("scan", e))?;
            self.meter.read(page.items());
            for item in page.items() {
                let (Some(pk), Some(sk)) = (item.get("pk").cloned(), item.get("sk").cloned()) else { continue };
                let deleted = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("pk", pk)
                    .key("sk", sk)
                    .condition_expression("expires_at <= :now")
                    .expression_attribute_values(":now", n(now))
                    .send()
                    .await;
                self.meter.write(item);
                match deleted {
                    Ok(_) => swept += 1,
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                    Err(e) => return Err(sdk_err("delete_item", e)),
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(swept);
            }
        }
    }

    /// One `BatchWriteItem` per 25 ids (deleting an id already gone is no
    /// error), instead of a `DeleteItem` per id; deletes DynamoDB leaves
    /// unprocessed (throttling) are sent again.
    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(BATCH_WRITE_LIMIT) {
            let mut deletes = chunk
                .iter()
                .map(|id| {
                    let delete = DeleteRequest::builder()
                        .key("pk", s(OUTBOX_PK))
                        .key("sk", s(id.as_str()))
                        .build()
                        .map_err(err)?;
                    Ok(WriteRequest::builder().delete_request(delete).build())
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let mut attempt = 0u32;
            while !deletes.is_empty() {
                for delete in deletes.iter().filter_map(WriteRequest::delete_request) {
                    self.meter.write(delete.key());
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, deletes)
                    .send()
                    .await
                    .map_err(|e| sdk_err("batch_write_item", e))?;
                deletes = out.unprocessed_items().and_then(|u| u.get(&self.table)).cloned().unwrap_or_default();
                if !deletes.is_empty() {
                    back_off_unprocessed(&mut attempt, "batch_write_item").await?;
                }
            }
        }
        Ok(())
    }
}
