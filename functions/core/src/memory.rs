//! In-memory [`Store`] for per-function unit tests. Same semantics as the
//! real backends (it passes the same conformance suite), nothing durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::store::{Commit, CommitError, Expect, Item, OutboxRecord, Store, StoreError};

#[derive(Debug, Default)]
struct Inner {
    kv: BTreeMap<String, Item>,
    /// key -> when it may be removed (Unix seconds)
    expiry: HashMap<String, i64>,
    /// input event id -> ids of the outbox records it produced
    inbox: HashMap<String, Vec<String>>,
    /// input event id -> its receipt
    receipts: HashMap<String, String>,
    /// input event id -> when it was processed
    processed_at: HashMap<String, chrono::DateTime<chrono::Utc>>,
    /// insertion sequence -> record
    outbox: BTreeMap<u64, OutboxRecord>,
    next_seq: u64,
}

/// A store held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Checks one write's condition against the current item.
pub(crate) fn condition_holds(current: Option<&Item>, expect: Expect) -> bool {
    match (expect, current) {
        (Expect::Any, _) => true,
        (Expect::Absent, current) => current.is_none(),
        (Expect::Version(v), Some(item)) => item.version == v,
        (Expect::Version(_), None) => false,
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        Ok(self.inner.lock().unwrap().kv.get(key).cloned())
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, Item)>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn scan_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Item)>, StoreError> {
        use std::ops::Bound;
        let inner = self.inner.lock().unwrap();
        let from = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        Ok(inner
            .kv
            .range((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn commit(&self, commits: &[Commit]) -> Result<(), CommitError> {
        let mut guard = self.inner.lock().unwrap();
        // Work on a copy so a failing condition leaves nothing behind.
        let mut kv = guard.kv.clone();
        let mut expiry = guard.expiry.clone();
        let mut seen = std::collections::HashSet::new();
        for commit in commits {
            if guard.inbox.contains_key(&commit.event_id) || !seen.insert(commit.event_id.clone()) {
                return Err(CommitError::Duplicate { event_id: commit.event_id.clone() });
            }
            for write in &commit.writes {
                if !condition_holds(kv.get(&write.key), write.expect) {
                    return Err(CommitError::Conflict { key: write.key.clone() });
                }
                match &write.value {
                    Some(value) => {
                        let version = kv.get(&write.key).map_or(1, |item| item.version + 1);
                        kv.insert(write.key.clone(), Item { value: value.clone(), version });
                        match write.expires_at {
                            Some(at) => expiry.insert(write.key.clone(), at),
                            None => expiry.remove(&write.key),
                        };
                    }
                    None => {
                        kv.remove(&write.key);
                        expiry.remove(&write.key);
                    }
                }
            }
        }
        guard.kv = kv;
        guard.expiry = expiry;
        for commit in commits {
            let ids = commit.outbox.iter().map(|r| r.id.clone()).collect();
            guard.inbox.insert(commit.event_id.clone(), ids);
            guard.processed_at.insert(commit.event_id.clone(), chrono::Utc::now());
            if let Some(receipt) = &commit.receipt {
                guard.receipts.insert(commit.event_id.clone(), receipt.clone());
            }
            for record in &commit.outbox {
                let seq = guard.next_seq;
                guard.next_seq += 1;
                guard.outbox.insert(seq, record.clone());
            }
        }
        Ok(())
    }

    async fn processed(&self, event_id: &str) -> Result<Option<Vec<OutboxRecord>>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .inbox
            .get(event_id)
            .map(|ids| inner.outbox.values().filter(|r| ids.contains(&r.id)).cloned().collect()))
    }

    async fn unpublished(&self, limit: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        Ok(self.inner.lock().unwrap().outbox.values().take(limit).cloned().collect())
    }

    async fn receipt(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.inner.lock().unwrap().receipts.get(event_id).cloned())
    }

    async fn mark_published(&self, ids: &[String]) -> Result<(), StoreError> {
        self.inner.lock().unwrap().outbox.retain(|_, r| !ids.contains(&r.id));
        Ok(())
    }

    async fn inbox_size(&self) -> Result<Option<u64>, StoreError> {
        Ok(Some(self.inner.lock().unwrap().inbox.len() as u64))
    }

    async fn sweep_inbox(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64, StoreError> {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        let pending: std::collections::HashSet<&String> = inner.outbox.values().map(|r| &r.id).collect();
        let old: Vec<String> = inner
            .processed_at
            .iter()
            .filter(|(id, at)| **at < before && !inner.inbox[*id].iter().any(|r| pending.contains(r)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &old {
            inner.inbox.remove(id);
            inner.processed_at.remove(id);
            inner.receipts.remove(id);
        }
        Ok(old.len() as u64)
    }

    async fn sweep_expired(&self, now: i64) -> Result<u64, StoreError> {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        let due: Vec<String> = inner.expiry.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        for key in &due {
            inner.expiry.remove(key);
            inner.kv.remove(key);
        }
        Ok(due.len() as u64)
    }
}
