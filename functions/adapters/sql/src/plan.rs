//! A commit as a short list of multi-row statements, written once for both
//! drivers.
//!
//! A statement costs a round trip (PostgreSQL) or a run of SQLite's
//! virtual machine, so a batch's commit is not "one statement per write"
//! but one statement per *kind* of change: all inbox rows, all
//! version-checked updates, all inserts, … Each statement says how many
//! rows it must affect; a shortfall means a condition failed somewhere in
//! it, and the store works out which key or event after rolling back.
//! The happy path returns no rows at all.
//!
//! A kind of change with many rows is split into statements of a power of
//! two rows each (13 rows: 8, 4 and 1), so each kind has a handful of
//! statement texts whatever the batch, and every one is prepared once and
//! kept: parsing and planning a new text on every commit cost more than
//! the rows.

use jetsaga_core::{Commit, Effect, Expect, KeyChange};

/// How a driver numbers bind parameters, and how a statement takes many rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Params {
    /// `$1, $2, …` per statement: PostgreSQL.
    Numbered,
    /// `?, ?, …`, bound in order: SQLite.
    Positional,
}

/// A value bound to a parameter.
#[derive(Clone, Debug)]
pub enum Bind<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Blob(&'a [u8]),
    Int(i64),
    MaybeInt(Option<i64>),
}

/// What a failed check means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An input event is already in the inbox.
    Duplicate,
    /// A write condition failed.
    Conflict,
}

/// What a statement must do for the commit to stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Change exactly this many rows.
    Affects(u64, Refusal),
    /// Return no row (a `SELECT` of keys that must be absent); a row names the culprit.
    NoRows,
    /// Nothing to check.
    Nothing,
}

/// One statement of a commit.
#[derive(Debug)]
pub struct Step<'a> {
    pub(crate) sql: String,
    pub(crate) binds: Vec<Bind<'a>>,
    pub(crate) check: Check,
}

/// Rows per multi-row statement at most (a power of two), well under both
/// drivers' parameter limits.
const ROWS_PER_STATEMENT: usize = 64;

/// The sizes of the statements `n` rows are split into: powers of two,
/// largest first, none over `most` (a power of two). See the module's docs.
pub(crate) fn statement_sizes(mut n: usize, most: usize) -> impl Iterator<Item = usize> {
    debug_assert!(most.is_power_of_two());
    std::iter::from_fn(move || {
        let size = if n >= most { most } else { 1 << n.checked_ilog2()? };
        n -= size;
        Some(size)
    })
}

/// Table names of one store (`"schema".kv` for PostgreSQL, `kv` for SQLite).
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) kv: String,
    pub(crate) inbox: String,
    pub(crate) outbox: String,
}

impl Tables {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { kv: format!("{prefix}kv"), inbox: format!("{prefix}inbox"), outbox: format!("{prefix}outbox") }
    }
}

/// `rows` tuples of `width` parameters, numbered from 1 when `params` is numbered.
pub(crate) fn tuples(params: Params, rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            match params {
                Params::Positional => out.push('?'),
                Params::Numbered => {
                    out.push('$');
                    out.push_str(&(r * width + c + 1).to_string());
                }
            }
        }
        out.push(')');
    }
    out
}

/// A flat parameter list: `(?, ?, …)` without inner parentheses.
pub(crate) fn list(params: Params, n: usize) -> String {
    let tuple = tuples(params, 1, n);
    tuple[1..tuple.len() - 1].to_string()
}

/// Version as stored (BIGINT / INTEGER).
pub(crate) fn to_version(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The statements that apply `commits` (whose net changes are `changes`),
/// in the order they must run. Input events must be distinct.
pub(crate) fn commit_steps<'a>(
    tables: &Tables,
    params: Params,
    commits: &'a [Commit],
    changes: &[KeyChange<'a>],
    at_ms: i64,
) -> Vec<Step<'a>> {
    let mut steps = Vec::new();
    let Tables { kv, inbox, outbox } = tables;
    let conflict = |n| Check::Affects(n, Refusal::Conflict);
    let unchecked = |_| Check::Nothing;

    let inbox_rows = commits
        .iter()
        .map(|c| vec![Bind::Text(&c.event_id), Bind::Int(at_ms), Bind::MaybeText(c.receipt.as_deref())])
        .collect();
    chunked(
        &mut steps,
        params,
        inbox_rows,
        3,
        &|values| {
            format!(
                "INSERT INTO {inbox} (event_id, processed_at_ms, receipt) {values} ON CONFLICT (event_id) DO NOTHING"
            )
        },
        &|n| Check::Affects(n, Refusal::Duplicate),
    );

    let (mut absent, mut inserts, mut updates, mut puts, mut counted, mut deletes, mut blind_deletes) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for change in changes {
        let key = Bind::Text(change.key);
        let expires_at = Bind::MaybeInt(change.expires_at);
        match (change.expect, &change.effect) {
            (_, Effect::CheckAbsent) => absent.push(key),
            (Expect::Absent, Effect::Put { value, version }) => {
                inserts.push(vec![key, Bind::Blob(value), Bind::Int(to_version(*version)), expires_at]);
            }
            (Expect::Version(expected), Effect::Put { value, version }) => updates.push(vec![
                key,
                Bind::Blob(value),
                Bind::Int(to_version(expected)),
                Bind::Int(to_version(*version)),
                expires_at,
            ]),
            (Expect::Any, Effect::Put { value, version }) => {
                puts.push(vec![key, Bind::Blob(value), Bind::Int(to_version(*version)), expires_at]);
            }
            (_, Effect::PutCounting { value, writes }) => {
                counted.push(vec![key, Bind::Blob(value), Bind::Int(to_version(*writes)), expires_at]);
            }
            (Expect::Version(expected), Effect::Delete) => deletes.push(vec![key, Bind::Int(to_version(expected))]),
            (_, Effect::Delete) => blind_deletes.push(vec![key]),
        }
    }
    let mut absent = absent.into_iter();
    for size in statement_sizes(absent.len(), ROWS_PER_STATEMENT) {
        steps.push(Step {
            sql: format!("SELECT key FROM {kv} WHERE key IN ({}) LIMIT 1", list(params, size)),
            binds: absent.by_ref().take(size).collect(),
            check: Check::NoRows,
        });
    }
    chunked(
        &mut steps,
        params,
        inserts,
        4,
        &|values| format!("INSERT INTO {kv} (key, value, version, expires_at) {values} ON CONFLICT (key) DO NOTHING"),
        &conflict,
    );
    chunked(
        &mut steps,
        params,
        updates,
        5,
        &|values| {
            format!(
                "WITH v (k, val, expected, next, expires) AS ({values}) \
                 UPDATE {kv} AS t SET value = v.val, version = v.next, expires_at = v.expires \
                 FROM v WHERE t.key = v.k AND t.version = v.expected"
            )
        },
        &conflict,
    );
    chunked(
        &mut steps,
        params,
        puts,
        4,
        &|values| {
            format!(
                "INSERT INTO {kv} AS t (key, value, version, expires_at) {values} \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, \
                 expires_at = excluded.expires_at"
            )
        },
        &unchecked,
    );
    chunked(
        &mut steps,
        params,
        counted,
        4,
        &|values| {
            format!(
                "INSERT INTO {kv} AS t (key, value, version, expires_at) {values} \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = t.version + excluded.version, \
                 expires_at = excluded.expires_at"
            )
        },
        &unchecked,
    );
    chunked(
        &mut steps,
        params,
        deletes,
        2,
        &|values| format!("DELETE FROM {kv} WHERE (key, version) IN ({values})"),
        &conflict,
    );
    chunked(
        &mut steps,
        params,
        blind_deletes,
        1,
        &|values| format!("DELETE FROM {kv} WHERE key IN ({values})"),
        &unchecked,
    );

    let outbox_rows = commits
        .iter()
        .flat_map(|c| {
            c.outbox.iter().map(move |r| {
                vec![
                    Bind::Text(&r.id),
                    Bind::Text(&c.event_id),
                    Bind::Text(&r.subject),
                    Bind::Blob(&r.payload),
                    Bind::MaybeText(r.traceparent.as_deref()),
                    Bind::MaybeText(r.schedule.as_ref().map(|s| s.name())),
                    Bind::MaybeInt(r.schedule.as_ref().and_then(|s| s.at_ms())),
                ]
            })
        })
        .collect();
    chunked(
        &mut steps,
        params,
        outbox_rows,
        7,
        &|values| {
            format!(
                "INSERT INTO {outbox} (id, event_id, subject, payload, traceparent, schedule, schedule_at_ms) {values}"
            )
        },
        &unchecked,
    );
    steps
}

/// Pushes the statements for `rows` (`sql` given the `VALUES (…), (…)`
/// that stands for them), split as [`statement_sizes`] says.
fn chunked<'a>(
    steps: &mut Vec<Step<'a>>,
    params: Params,
    rows: Vec<Vec<Bind<'a>>>,
    width: usize,
    sql: &dyn Fn(&str) -> String,
    check: &dyn Fn(u64) -> Check,
) {
    let mut rows = rows.into_iter();
    for size in statement_sizes(rows.len(), ROWS_PER_STATEMENT) {
        steps.push(Step {
            sql: sql(&format!("VALUES {}", tuples(params, size, width))),
            binds: rows.by_ref().take(size).flatten().collect(),
            check: check(size as u64),
        });
    }
}

/// The first change whose condition does not hold for `current` (the
/// stored item of each change's key, in order): the key to report after a
/// refused commit.
pub(crate) fn first_conflict<'a>(changes: &[KeyChange<'a>], current: &[Option<jetsaga_core::Item>]) -> Option<&'a str> {
    changes.iter().zip(current).find_map(|(change, item)| {
        let holds = match (change.expect, item) {
            (Expect::Any, _) => true,
            (Expect::Absent, found) => found.is_none(),
            (Expect::Version(v), Some(item)) => item.version == v,
            (Expect::Version(_), None) => false,
        };
        (!holds).then_some(change.key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetsaga_core::{OutboxRecord, Write, net_changes};

    #[test]
    fn placeholders_follow_the_driver() {
        assert_eq!(tuples(Params::Numbered, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(tuples(Params::Positional, 2, 1), "(?), (?)");
        assert_eq!(list(Params::Numbered, 3), "$1, $2, $3");
    }

    #[test]
    fn a_batch_is_a_few_statements_per_kind_of_change() {
        let commits: Vec<Commit> = (0..50)
            .map(|i| Commit {
                event_id: format!("e{i}"),
                writes: vec![
                    Write::new(format!("new/{i}"), Some(b"1".to_vec()), Expect::Absent),
                    Write::new("hot", Some(b"2".to_vec()), Expect::Version(i + 1)),
                ],
                outbox: vec![OutboxRecord {
                    id: format!("o{i}"),
                    subject: "s".into(),
                    payload: b"{}".to_vec(),
                    traceparent: None,
                    schedule: None,
                }],
                receipt: None,
            })
            .collect();
        let changes = net_changes(&commits);
        let steps = commit_steps(&Tables::new(""), Params::Numbered, &commits, &changes, 0);
        let checks: Vec<Check> = steps.iter().map(|s| s.check).collect();
        let (dup, conflict) = (|n| Check::Affects(n, Refusal::Duplicate), |n| Check::Affects(n, Refusal::Conflict));
        assert_eq!(
            checks,
            [
                // 50 inbox rows, in statements of 32, 16 and 2 rows
                dup(32),
                dup(16),
                dup(2),
                // 50 inserts
                conflict(32),
                conflict(16),
                conflict(2),
                // one update
                conflict(1),
                // 50 outbox rows
                Check::Nothing,
                Check::Nothing,
                Check::Nothing,
            ]
        );
        // The hot key is written once, from the first version read to the last one written.
        assert!(matches!(
            steps[6].binds[..],
            [Bind::Text("hot"), _, Bind::Int(1), Bind::Int(51), Bind::MaybeInt(None)]
        ));
        let outbox: Vec<&Bind<'_>> = steps[7..].iter().flat_map(|s| &s.binds).collect();
        assert_eq!(outbox.len(), 50 * 7, "every outbox row once");
        assert!(matches!(outbox[..5], [Bind::Text("o0"), Bind::Text("e0"), Bind::Text("s"), Bind::Blob(b"{}"), _]));
        for step in &steps {
            assert_eq!(step.sql.matches('$').count(), step.binds.len(), "{}", step.sql);
        }

        // SQLite: the same statements with `?`.
        let positional = commit_steps(&Tables::new(""), Params::Positional, &commits, &changes, 0);
        assert_eq!(positional.iter().map(|s| s.check).collect::<Vec<_>>(), checks);
        for step in &positional {
            assert_eq!(step.sql.matches('?').count(), step.binds.len(), "{}", step.sql);
        }
    }

    #[test]
    fn many_rows_go_in_statements_of_a_few_sizes() {
        let sizes = |n, most| statement_sizes(n, most).collect::<Vec<_>>();
        assert_eq!(sizes(0, 64), Vec::<usize>::new());
        assert_eq!(sizes(1, 64), [1]);
        assert_eq!(sizes(13, 64), [8, 4, 1]);
        assert_eq!(sizes(64, 64), [64]);
        assert_eq!(sizes(150, 64), [64, 64, 16, 4, 2]);
        // Every batch size from 1 to 1,000 uses the same few texts per kind of change.
        let mut seen = std::collections::HashSet::new();
        for n in 1..=1000 {
            assert_eq!(statement_sizes(n, 64).sum::<usize>(), n);
            seen.extend(statement_sizes(n, 64));
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
    }
}
