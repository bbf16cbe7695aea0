//! What a store's requests cost in DynamoDB's on-demand mode, counted as
//! DynamoDB bills them: read request units per 4 KB read (half for an
//! eventually consistent read), write request units per 1 KB written,
//! both doubled inside a transaction, an item's size being its attribute
//! names plus its values. The count comes from the requests the store
//! makes, so it is the same against AWS and against a local endpoint
//! (whose own `ConsumedCapacity`, where it reports one, is not billing's).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem};

/// Bytes per read request unit.
const READ_UNIT_BYTES: usize = 4096;
/// Bytes per write request unit.
const WRITE_UNIT_BYTES: usize = 1024;

/// Request units consumed, as on the bill.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Units {
    /// Read request units.
    pub read: f64,
    /// Write request units.
    pub write: f64,
}

impl std::ops::AddAssign for Units {
    fn add_assign(&mut self, other: Self) {
        self.read += other.read;
        self.write += other.write;
    }
}

/// Counts the request units of a store's requests (shared by its clones).
#[derive(Debug, Default)]
pub struct Meter {
    /// Read units in halves (an eventually consistent 4 KB is half a unit).
    read_halves: AtomicU64,
    write: AtomicU64,
}

impl Meter {
    /// The units counted since the last call, which starts the count over.
    pub fn take(&self) -> Units {
        let halves = self.read_halves.swap(0, Ordering::Relaxed);
        Units { read: halves as f64 / 2.0, write: self.write.swap(0, Ordering::Relaxed) as f64 }
    }

    /// A strongly consistent read of `items` (their sizes summed, as a
    /// query's are); nothing found still costs one unit.
    pub(crate) fn read<'a>(&self, items: impl IntoIterator<Item = &'a HashMap<String, AttributeValue>>) {
        let bytes: usize = items.into_iter().map(item_size).sum();
        self.read_halves.fetch_add(2 * units(bytes, READ_UNIT_BYTES), Ordering::Relaxed);
    }

    /// A batch read: each key is its own read of the item found, or of nothing.
    pub(crate) fn read_each(&self, keys: usize, found: &[HashMap<String, AttributeValue>]) {
        let mut halves: u64 = found.iter().map(|item| 2 * units(item_size(item), READ_UNIT_BYTES)).sum();
        halves += 2 * keys.saturating_sub(found.len()) as u64;
        self.read_halves.fetch_add(halves, Ordering::Relaxed);
    }

    /// One item written (put or deleted) outside a transaction.
    pub(crate) fn write(&self, item: &HashMap<String, AttributeValue>) {
        self.write.fetch_add(units(item_size(item), WRITE_UNIT_BYTES), Ordering::Relaxed);
    }

    /// A `TransactWriteItems`: every action (a condition check too) at twice its size's units.
    pub(crate) fn transaction(&self, actions: &[TransactWriteItem]) {
        let units: u64 = actions.iter().map(|action| 2 * units(action_size(action), WRITE_UNIT_BYTES)).sum();
        self.write.fetch_add(units, Ordering::Relaxed);
    }
}

/// Units for `bytes`: rounded up, at least one.
fn units(bytes: usize, per_unit: usize) -> u64 {
    bytes.div_ceil(per_unit).max(1) as u64
}

/// The size DynamoDB bills for the item an action writes: what a put
/// writes; for an update, its key and the values it sets; for a delete or
/// a check, its key (the item's own size is not known to the request; a
/// state item is rarely past the first unit).
fn action_size(action: &TransactWriteItem) -> usize {
    if let Some(put) = action.put() {
        return item_size(put.item());
    }
    if let Some(update) = action.update() {
        let values: usize =
            update.expression_attribute_values().into_iter().flatten().map(|(_, v)| value_size(v)).sum();
        let names: usize = update.expression_attribute_names().into_iter().flatten().map(|(_, n)| n.len()).sum();
        return item_size(update.key()) + values + names;
    }
    if let Some(delete) = action.delete() {
        return item_size(delete.key());
    }
    action.condition_check().map_or(0, |check| item_size(check.key()))
}

/// An item's size as DynamoDB counts it: each attribute's name and value.
pub(crate) fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size(value)).sum()
}

/// A value's size: strings and binaries their bytes, numbers about one
/// byte per two significant digits plus one, lists and maps 3 bytes plus
/// a byte and the size of each element (and a map's names).
fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(set) => set.iter().map(String::len).sum(),
        AttributeValue::Ns(set) => set.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(set) => set.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(list) => 3 + list.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => 3 + map.iter().map(|(k, v)| 1 + k.len() + value_size(v)).sum::<usize>(),
        _ => 0,
    }
}

fn number_size(number: &str) -> usize {
    let digits = number.trim_start_matches(['-', '+']).chars().filter(char::is_ascii_digit).count();
    digits.div_ceil(2) + 1
}

#[cfg(test)]
mod tests {
    use aws_sdk_dynamodb::types::{ConditionCheck, Put};

    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn sizes_count_names_and_values() {
        let small = item(&[("pk", AttributeValue::S("kv#order".into())), ("ver", AttributeValue::N("12345".into()))]);
        assert_eq!(item_size(&small), 2 + 8 + 3 + 4);
        let list = AttributeValue::L(vec![AttributeValue::S("ab".into()), AttributeValue::Bool(true)]);
        assert_eq!(value_size(&list), 3 + (1 + 2) + (1 + 1));
    }

    #[test]
    fn reads_round_up_per_4_kb_and_writes_per_1_kb_doubled_in_a_transaction() {
        let meter = Meter::default();
        let big = item(&[("v", AttributeValue::B(vec![0; 5000].into()))]);
        meter.read([&big]);
        meter.read_each(3, std::slice::from_ref(&big));
        meter.write(&big);
        assert_eq!(meter.take(), Units { read: 2.0 + 2.0 + 2.0, write: 5.0 });
        assert_eq!(meter.take(), Units::default(), "take starts the count over");

        let put = Put::builder().table_name("t").set_item(Some(big)).build().unwrap();
        let key = item(&[("pk", AttributeValue::S("k".into())), ("sk", AttributeValue::S("k".into()))]);
        let check = ConditionCheck::builder()
            .table_name("t")
            .set_key(Some(key))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .unwrap();
        let actions = [
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().condition_check(check).build(),
        ];
        meter.transaction(&actions);
        assert_eq!(meter.take(), Units { read: 0.0, write: 2.0 * 5.0 + 2.0 * 1.0 });
    }
}
