//! The store, written once for every driver: statements, reads, the
//! commit and, after a refused commit, which key or event refused it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jetsaga_core::schedule::Schedule;
use jetsaga_core::{Commit, CommitError, Item, OutboxRecord, Store, StoreError, async_trait, net_changes};

use crate::driver::{Cell, Column, Driver, Refused};
use crate::plan::{Bind, Check, Params, Refusal, Step, Tables, commit_steps, first_conflict, list, statement_sizes};

/// How long published outbox records wait for a commit to remove them
/// before a transaction of their own does (see [`Published`]).
const REMOVAL_WAIT: Duration = Duration::from_millis(100);

/// The fixed statements of one store, with table names resolved.
#[derive(Debug)]
pub(crate) struct Statements {
    tables: Tables,
    params: Params,
    get: Arc<str>,
    scan: Arc<str>,
    scan_page_from: Arc<str>,
    scan_page_after: Arc<str>,
    inbox_get: Arc<str>,
    inbox_receipt: Arc<str>,
    inbox_sweep: Arc<str>,
    inbox_count: Arc<str>,
    expired_sweep: Arc<str>,
    outbox_for_event: Arc<str>,
    outbox_pending: Arc<str>,
}

impl Statements {
    /// `prefix` qualifies table names (`"schema".` for PostgreSQL, empty for SQLite).
    pub(crate) fn new(prefix: &str, params: Params) -> Self {
        let s = |sql: String| -> Arc<str> { sql.into() };
        let p = |n: usize| match params {
            Params::Positional => "?".to_string(),
            Params::Numbered => format!("${n}"),
        };
        Self {
            tables: Tables::new(prefix),
            params,
            get: s(format!("SELECT value, version FROM {prefix}kv WHERE key = {}", p(1))),
            scan: s(format!(
                "SELECT key, value, version FROM {prefix}kv WHERE key >= {} AND key < {} ORDER BY key",
                p(1),
                p(2)
            )),
            scan_page_from: s(format!(
                "SELECT key, value, version FROM {prefix}kv WHERE key >= {} AND key < {} ORDER BY key LIMIT {}",
                p(1),
                p(2),
                p(3)
            )),
            scan_page_after: s(format!(
                "SELECT key, value, version FROM {prefix}kv WHERE key > {} AND key < {} ORDER BY key LIMIT {}",
                p(1),
                p(2),
                p(3)
            )),
            inbox_get: s(format!("SELECT 1 FROM {prefix}inbox WHERE event_id = {}", p(1))),
            inbox_receipt: s(format!("SELECT receipt FROM {prefix}inbox WHERE event_id = {}", p(1))),
            // An input whose events are still in the outbox keeps its record:
            // a redelivery must find them. `NOT IN` reads the outbox once
            // (SQLite's outbox has no index on `event_id`: see sqlite.rs).
            inbox_sweep: s(format!(
                "DELETE FROM {prefix}inbox WHERE processed_at_ms < {} \
                 AND event_id NOT IN (SELECT event_id FROM {prefix}outbox)",
                p(1)
            )),
            inbox_count: s(format!("SELECT count(*) FROM {prefix}inbox")),
            expired_sweep: s(format!("DELETE FROM {prefix}kv WHERE expires_at <= {}", p(1))),
            outbox_for_event: s(format!(
                "SELECT id, subject, payload, traceparent, schedule, schedule_at_ms FROM {prefix}outbox WHERE event_id = {} ORDER BY seq",
                p(1)
            )),
            outbox_pending: s(format!(
                "SELECT id, subject, payload, traceparent, schedule, schedule_at_ms FROM {prefix}outbox ORDER BY seq LIMIT {}",
                p(1)
            )),
        }
    }

    /// `SELECT key, value, version … WHERE key IN (…)` for `n` keys.
    fn get_many(&self, n: usize) -> Arc<str> {
        format!("SELECT key, value, version FROM {} WHERE key IN ({})", self.tables.kv, list(self.params, n)).into()
    }

    /// `DELETE FROM outbox WHERE id IN (…)` for `n` ids.
    fn outbox_delete(&self, n: usize) -> Arc<str> {
        format!("DELETE FROM {} WHERE id IN ({})", self.tables.outbox, list(self.params, n)).into()
    }
}

/// Keys per `IN (…)` list at most (a power of two: see [`statement_sizes`]).
const KEYS_PER_STATEMENT: usize = 256;

/// `keys` in lists of the sizes [`statement_sizes`] gives, as binds.
fn key_lists(keys: &[String]) -> impl Iterator<Item = Vec<Bind<'_>>> {
    let mut keys = keys.iter();
    statement_sizes(keys.len(), KEYS_PER_STATEMENT)
        .map(move |size| keys.by_ref().take(size).map(|k| Bind::Text(k)).collect())
}

const ITEM: [Column; 2] = [Column::Blob, Column::Int];
const KEYED_ITEM: [Column; 3] = [Column::Text, Column::Blob, Column::Int];
const OUTBOX_RECORD: [Column; 6] =
    [Column::Text, Column::Text, Column::Blob, Column::MaybeText, Column::MaybeText, Column::MaybeInt];

/// Exclusive upper bound of the keys starting with `prefix`.
fn prefix_end(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn item(value: Cell, version: Cell) -> Item {
    Item { value: value.blob(), version: version.int() as u64 }
}

fn keyed_item(row: Vec<Cell>) -> (String, Item) {
    let [key, value, version]: [Cell; 3] = row.try_into().expect("three columns asked for");
    (key.text(), item(value, version))
}

fn outbox_record(backend: &'static str, row: Vec<Cell>) -> Result<OutboxRecord, StoreError> {
    let [id, subject, payload, traceparent, schedule, at_ms]: [Cell; 6] =
        row.try_into().expect("six columns asked for");
    let schedule = Schedule::from_fields(schedule.maybe_text(), at_ms.maybe_int());
    schedule
        .and_then(|schedule| {
            OutboxRecord::from_stored(id.text(), subject.text(), payload.blob(), traceparent.maybe_text(), schedule)
        })
        .map_err(|e| StoreError::new(backend, e))
}

/// Outbox records published but not yet removed from the store.
///
/// Removing them in transactions of their own (one per power-of-two chunk
/// of ids, every 50 ms per function) was nearly half of all write
/// transactions at full speed, each with its lock and its log frames. The
/// next commit removes them instead, in its own transaction: their rows
/// sit on the outbox pages it writes anyway. When no commit comes within
/// [`REMOVAL_WAIT`], a transaction of their own removes them. Until then
/// the store answers as if they were gone: [`Store::unpublished`] and
/// [`Store::processed`] leave them out. A crash before their removal is
/// what it always was: they are published again at restart, and JetStream
/// drops the copies by their `Nats-Msg-Id`.
#[derive(Debug, Default)]
struct Published(Mutex<HashSet<String>>);

impl Published {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `ids`; true if none were waiting before (a removal is then due).
    fn add(&self, ids: impl IntoIterator<Item = String>) -> bool {
        let mut waiting = self.lock();
        let was_empty = waiting.is_empty();
        waiting.extend(ids);
        was_empty && !waiting.is_empty()
    }

    /// Every id waiting, to remove now.
    fn take(&self) -> Vec<String> {
        self.lock().drain().collect()
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A function's store on a SQL database: see [`crate::SqliteStore`] and
/// [`crate::PostgresStore`].
#[derive(Debug)]
pub struct SqlStore<D> {
    pub(crate) driver: Arc<D>,
    pub(crate) sql: Arc<Statements>,
    published: Arc<Published>,
}

impl<D> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self { driver: self.driver.clone(), sql: self.sql.clone(), published: self.published.clone() }
    }
}

impl<D: Driver> SqlStore<D> {
    pub(crate) fn new(driver: D, sql: Statements) -> Self {
        Self { driver: Arc::new(driver), sql: Arc::new(sql), published: Arc::default() }
    }

    /// The statements that remove published outbox records `ids`.
    fn removals<'a>(&self, ids: &'a [String]) -> impl Iterator<Item = Step<'a>> {
        key_lists(ids).map(|binds| Step {
            sql: self.sql.outbox_delete(binds.len()).to_string(),
            binds,
            check: Check::Nothing,
        })
    }

    /// Waits for [`Published`]'s records to be removed by a commit; removes
    /// what no commit took in a transaction of its own.
    fn remove_published_soon(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REMOVAL_WAIT).await;
            if let Err(e) = store.remove_published_now().await {
                tracing::warn!(error = %e, "cannot remove published outbox records; tried again with the next commit");
            }
        });
    }

    /// Removes every published record still in the table, in one transaction.
    pub(crate) async fn remove_published_now(&self) -> Result<(), StoreError> {
        self.transact_removing_published(Vec::new()).await.map(drop).map_err(Self::error)
    }

    /// Runs `steps` in one transaction that also removes the published
    /// records waiting (see [`Published`]); they wait again unless it commits.
    async fn transact_removing_published(&self, steps: Vec<Step<'_>>) -> Result<Option<Refused>, sqlx::Error> {
        let removing = self.published.take();
        if steps.is_empty() && removing.is_empty() {
            return Ok(None);
        }
        let mut steps = steps;
        steps.extend(self.removals(&removing));
        let done = self.driver.transact(&steps).await;
        drop(steps);
        if !matches!(done, Ok(None)) {
            self.give_back(removing);
        }
        done
    }

    /// Published ids a failed or refused transaction did not remove.
    fn give_back(&self, ids: Vec<String>) {
        if self.published.add(ids) {
            self.remove_published_soon();
        }
    }

    fn error(e: sqlx::Error) -> StoreError {
        StoreError::new(D::BACKEND, e.to_string())
    }

    async fn fetch(
        &self,
        sql: &Arc<str>,
        binds: &[Bind<'_>],
        columns: &[Column],
    ) -> Result<Vec<Vec<Cell>>, StoreError> {
        self.driver.fetch(sql.clone(), binds, columns).await.map_err(Self::error)
    }

    /// Works out, after a refused commit was rolled back, which event or key refused it.
    async fn culprit(&self, commits: &[Commit], refused: Refused) -> CommitError {
        match refused {
            Refused { refusal: Refusal::Conflict, key: Some(key) } => CommitError::Conflict { key },
            Refused { refusal: Refusal::Conflict, key: None } => {
                let changes = net_changes(commits);
                let keys: Vec<String> = changes.iter().map(|c| c.key.to_string()).collect();
                match self.get_many(&keys).await {
                    Ok(current) => {
                        let key = first_conflict(&changes, &current).unwrap_or(&keys[0]);
                        CommitError::Conflict { key: key.to_string() }
                    }
                    Err(e) => CommitError::Store(e),
                }
            }
            Refused { refusal: Refusal::Duplicate, .. } => {
                for commit in commits {
                    match self.processed(&commit.event_id).await {
                        Ok(Some(_)) => return CommitError::Duplicate { event_id: commit.event_id.clone() },
                        Ok(None) => {}
                        Err(e) => return CommitError::Store(e),
                    }
                }
                // Inbox rows outlive redeliveries, so this is not expected: name the first event.
                CommitError::Duplicate { event_id: commits[0].event_id.clone() }
            }
        }
    }
}

#[async_trait]
impl<D: Driver> Store for SqlStore<D> {
    fn backend(&self) -> &'static str {
        D::BACKEND
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let rows = self.fetch(&self.sql.get, &[Bind::Text(key)], &ITEM).await?;
        Ok(rows.into_iter().next().map(|row| {
            let [value, version]: [Cell; 2] = row.try_into().expect("two columns asked for");
            item(value, version)
        }))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Item>>, StoreError> {
        let mut found: HashMap<String, Item> = HashMap::with_capacity(keys.len());
        for binds in key_lists(keys) {
            let sql = self.sql.get_many(binds.len());
            let rows = self.driver.fetch(sql, &binds, &KEYED_ITEM).await.map_err(Self::error)?;
            found.extend(rows.into_iter().map(keyed_item));
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Item)>, StoreError> {
        let end = prefix_end(prefix);
        let rows = self.fetch(&self.sql.scan, &[Bind::Text(prefix), Bind::Text(&end)], &KEYED_ITEM).await?;
        Ok(rows.into_iter().map(keyed_item).collect())
    }

    async fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Item)>, StoreError> {
        let end = prefix_end(prefix);
        let (sql, from) = match after {
            Some(after) if after >= prefix => (&self.sql.scan_page_after, after),
            _ => (&self.sql.scan_page_from, prefix),
        };
        let limit = Bind::Int(i64::try_from(limit).unwrap_or(i64::MAX));
        let rows = self.fetch(sql, &[Bind::Text(from), Bind::Text(&end), limit], &KEYED_ITEM).await?;
        Ok(rows.into_iter().map(keyed_item).collect())
    }

    async fn commit(&self, commits: &[Commit]) -> Result<(), CommitError> {
        let mut ids = HashSet::with_capacity(commits.len());
        if let Some(twice) = commits.iter().find(|c| !ids.insert(c.event_id.as_str())) {
            return Err(CommitError::Duplicate { event_id: twice.event_id.clone() });
        }
        let changes = net_changes(commits);
        let steps = commit_steps(&self.sql.tables, self.sql.params, commits, &changes, now_ms());
        match self.transact_removing_published(steps).await.map_err(Self::error)? {
            None => Ok(()),
            Some(refused) => Err(self.culprit(commits, refused).await),
        }
    }

    async fn processed(&self, event_id: &str) -> Result<Option<Vec<OutboxRecord>>, StoreError> {
        if self.fetch(&self.sql.inbox_get, &[Bind::Text(event_id)], &[]).await?.is_empty() {
            return Ok(None);
        }
        let rows = self.fetch(&self.sql.outbox_for_event, &[Bind::Text(event_id)], &OUTBOX_RECORD).await?;
        let records = rows.into_iter().map(|row| outbox_record(D::BACKEND, row)).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(records.into_iter().filter(|r| !self.published.contains(&r.id)).collect()))
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        // Published records still in the table are left out (see `Published`).
        let rows = limit.saturating_add(self.published.len());
        let rows = Bind::Int(i64::try_from(rows).unwrap_or(i64::MAX));
        let rows = self.fetch(&self.sql.outbox_pending, &[rows], &OUTBOX_RECORD).await?;
        let records = rows.into_iter().map(|row| outbox_record(D::BACKEND, row)).collect::<Result<Vec<_>, _>>()?;
        Ok(records.into_iter().filter(|r| !self.published.contains(&r.id)).take(limit).collect())
    }

    async fn receipt(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let rows = self.fetch(&self.sql.inbox_receipt, &[Bind::Text(event_id)], &[Column::MaybeText]).await?;
        Ok(rows.into_iter().next().and_then(|row| row.into_iter().next()).and_then(Cell::maybe_text))
    }

    async fn inbox_size(&self) -> Result<Option<u64>, StoreError> {
        let rows = self.fetch(&self.sql.inbox_count, &[], &[Column::Int]).await?;
        let count = rows.into_iter().next().and_then(|row| row.into_iter().next());
        Ok(count.map(|cell| match cell {
            Cell::Int(n) => n.max(0).unsigned_abs(),
            _ => 0,
        }))
    }

    async fn sweep_inbox(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        // An input's record stays while its events are in the outbox table.
        self.remove_published_now().await?;
        let binds = [Bind::Int(before.timestamp_millis())];
        self.driver.execute(self.sql.inbox_sweep.clone(), &binds).await.map_err(Self::error)
    }

    async fn sweep_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.driver.execute(self.sql.expired_sweep.clone(), &[Bind::Int(now)]).await.map_err(Self::error)
    }

    /// Removed by the next commit, or soon by themselves (see [`Published`]).
    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        if self.published.add(ids.iter().cloned()) {
            self.remove_published_soon();
        }
        Ok(())
    }
}
