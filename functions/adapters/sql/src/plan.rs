//! A commit as a short list of multi-row statements, written once for both
//! drivers.
//!
//! Every statement is a round trip to the database (for SQLite, to the
//! connection's worker thread), so a batch's commit is not "one statement
//! per write" but one statement per *kind* of change: all inbox rows, all
//! version-checked updates, all inserts, … Each statement says how many
//! rows it must affect; a shortfall means a condition failed somewhere in
//! it, and the store works out which key or event after rolling back.
//! The happy path returns no rows at all.

use jetsaga_core::{Commit, Effect, Expect, KeyChange};

/// How a driver numbers bind parameters, and how a statement takes many rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Params {
    /// `$1, $2, …` per statement: PostgreSQL; rows as `VALUES ($1, $2), …`.
    Numbered,
    /// `?`, with every row of a statement in one JSON array parameter read
    /// by `json_each` (SQLite): the statement's text is the same whatever
    /// the batch, so it is prepared once and cached, where a `VALUES` list
    /// of a new length would be parsed and planned again on every commit.
    Json,
}

/// A value bound to a parameter.
#[derive(Clone, Debug)]
pub enum Bind<'a> {
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Blob(&'a [u8]),
    Int(i64),
    /// Many rows or keys as one JSON array ([`Params::Json`]).
    Json(String),
}

impl Bind<'_> {
    /// The value as JSON, blobs as hex strings (read back with `unhex`).
    fn write_json(&self, out: &mut String) {
        match self {
            Bind::Text(v) | Bind::MaybeText(Some(v)) => {
                out.push_str(&serde_json::to_string(v).expect("a string serializes"));
            }
            Bind::MaybeText(None) => out.push_str("null"),
            Bind::Blob(v) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.reserve(v.len() * 2 + 2);
                out.push('"');
                for byte in v.iter() {
                    out.push(HEX[usize::from(byte >> 4)] as char);
                    out.push(HEX[usize::from(byte & 15)] as char);
                }
                out.push('"');
            }
            Bind::Int(v) => out.push_str(&v.to_string()),
            Bind::Json(v) => out.push_str(v),
        }
    }

    /// How `json_each` reads this column of a row back: `value->>i`, and `unhex` for a blob.
    fn json_column(&self, i: usize) -> String {
        match self {
            Bind::Blob(_) => format!("unhex(value->>{i})"),
            _ => format!("value->>{i}"),
        }
    }
}

/// `[["a", 1], ["b", 2]]`: rows for [`Params::Json`].
pub(crate) fn json_rows(rows: &[Vec<Bind<'_>>]) -> String {
    let mut out = String::from("[");
    for (r, row) in rows.iter().enumerate() {
        out.push_str(if r == 0 { "[" } else { ",[" });
        for (c, value) in row.iter().enumerate() {
            if c > 0 {
                out.push(',');
            }
            value.write_json(&mut out);
        }
        out.push(']');
    }
    out.push(']');
    out
}

/// `["a", "b"]`: a flat list of keys for [`Params::Json`] (`IN (SELECT value FROM json_each(?))`).
pub(crate) fn json_list<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (i, value) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        Bind::Text(value).write_json(&mut out);
    }
    out.push(']');
    out
}

/// What stands for a list of keys in `IN (…)`: `n` parameters, or the JSON array's elements.
pub(crate) fn key_list(params: Params, n: usize) -> String {
    match params {
        Params::Json => "SELECT value FROM json_each(?)".to_string(),
        _ => list(params, n),
    }
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

/// Rows per multi-row statement, well under both drivers' parameter limits.
const ROWS_PER_STATEMENT: usize = 200;

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
                Params::Json => out.push('?'),
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
        match (change.expect, &change.effect) {
            (_, Effect::CheckAbsent) => absent.push(key),
            (Expect::Absent, Effect::Put { value, version }) => {
                inserts.push(vec![key, Bind::Blob(value), Bind::Int(to_version(*version))]);
            }
            (Expect::Version(expected), Effect::Put { value, version }) => updates.push(vec![
                key,
                Bind::Blob(value),
                Bind::Int(to_version(expected)),
                Bind::Int(to_version(*version)),
            ]),
            (Expect::Any, Effect::Put { value, version }) => {
                puts.push(vec![key, Bind::Blob(value), Bind::Int(to_version(*version))]);
            }
            (_, Effect::PutCounting { value, writes }) => {
                counted.push(vec![key, Bind::Blob(value), Bind::Int(to_version(*writes))]);
            }
            (Expect::Version(expected), Effect::Delete) => deletes.push(vec![key, Bind::Int(to_version(expected))]),
            (_, Effect::Delete) => blind_deletes.push(vec![key]),
        }
    }
    if params == Params::Json && !absent.is_empty() {
        let keys = absent.iter().map(|k| match k {
            Bind::Text(k) => *k,
            _ => unreachable!("keys are text"),
        });
        steps.push(Step {
            sql: format!("SELECT key FROM {kv} WHERE key IN ({}) LIMIT 1", key_list(params, 0)),
            binds: vec![Bind::Json(json_list(keys))],
            check: Check::NoRows,
        });
    }
    for chunk in absent.chunks(ROWS_PER_STATEMENT).filter(|_| params != Params::Json) {
        steps.push(Step {
            sql: format!("SELECT key FROM {kv} WHERE key IN ({}) LIMIT 1", list(params, chunk.len())),
            binds: chunk.to_vec(),
            check: Check::NoRows,
        });
    }
    chunked(
        &mut steps,
        params,
        inserts,
        3,
        &|values| format!("INSERT INTO {kv} (key, value, version) {values} ON CONFLICT (key) DO NOTHING"),
        &conflict,
    );
    chunked(
        &mut steps,
        params,
        updates,
        4,
        &|values| {
            format!(
                "WITH v (k, val, expected, next) AS ({values}) \
                 UPDATE {kv} AS t SET value = v.val, version = v.next FROM v WHERE t.key = v.k AND t.version = v.expected"
            )
        },
        &conflict,
    );
    chunked(
        &mut steps,
        params,
        puts,
        3,
        &|values| {
            format!(
                "INSERT INTO {kv} AS t (key, value, version) {values} \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version"
            )
        },
        &unchecked,
    );
    chunked(
        &mut steps,
        params,
        counted,
        3,
        &|values| {
            format!(
                "INSERT INTO {kv} AS t (key, value, version) {values} \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = t.version + excluded.version"
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
                ]
            })
        })
        .collect();
    chunked(
        &mut steps,
        params,
        outbox_rows,
        5,
        &|values| format!("INSERT INTO {outbox} (id, event_id, subject, payload, traceparent) {values}"),
        &unchecked,
    );
    steps
}

/// Pushes the statements for `rows` (`sql` given what stands for the
/// rows: `VALUES (…), (…)` or, with [`Params::Json`], a `SELECT` from the
/// JSON array): one per [`ROWS_PER_STATEMENT`] rows, or one in all with JSON.
fn chunked<'a>(
    steps: &mut Vec<Step<'a>>,
    params: Params,
    rows: Vec<Vec<Bind<'a>>>,
    width: usize,
    sql: &dyn Fn(&str) -> String,
    check: &dyn Fn(u64) -> Check,
) {
    if params == Params::Json {
        let Some(first) = rows.first() else { return };
        let columns: Vec<String> = first.iter().enumerate().map(|(i, b)| b.json_column(i)).collect();
        // `WHERE true`: an INSERT … SELECT followed by ON CONFLICT needs a WHERE to parse.
        let select = format!("SELECT {} FROM json_each(?) WHERE true", columns.join(", "));
        steps.push(Step {
            sql: sql(&select),
            binds: vec![Bind::Json(json_rows(&rows))],
            check: check(rows.len() as u64),
        });
        return;
    }
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        steps.push(Step {
            sql: sql(&format!("VALUES {}", tuples(params, chunk.len(), width))),
            binds: chunk.iter().flatten().cloned().collect(),
            check: check(chunk.len() as u64),
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
        assert_eq!(tuples(Params::Json, 2, 1), "(?), (?)");
        assert_eq!(list(Params::Numbered, 3), "$1, $2, $3");
    }

    #[test]
    fn a_batch_is_one_statement_per_kind_of_change() {
        let commits: Vec<Commit> = (0..50)
            .map(|i| Commit {
                event_id: format!("e{i}"),
                writes: vec![
                    Write { key: format!("new/{i}"), value: Some(b"1".to_vec()), expect: Expect::Absent },
                    Write { key: "hot".into(), value: Some(b"2".to_vec()), expect: Expect::Version(i + 1) },
                ],
                outbox: vec![OutboxRecord {
                    id: format!("o{i}"),
                    subject: "s".into(),
                    payload: b"{}".to_vec(),
                    traceparent: None,
                }],
                receipt: None,
            })
            .collect();
        let changes = net_changes(&commits);
        let steps = commit_steps(&Tables::new(""), Params::Numbered, &commits, &changes, 0);
        let checks: Vec<Check> = steps.iter().map(|s| s.check).collect();
        assert_eq!(
            checks,
            [
                Check::Affects(50, Refusal::Duplicate),
                Check::Affects(50, Refusal::Conflict),
                Check::Affects(1, Refusal::Conflict),
                Check::Nothing
            ]
        );
        // The hot key is written once, from the first version read to the last one written.
        assert!(matches!(steps[2].binds[..], [Bind::Text("hot"), _, Bind::Int(1), Bind::Int(51)]));
        for step in &steps {
            assert_eq!(step.sql.matches('$').count(), step.binds.len(), "{}", step.sql);
        }

        // With JSON rows (SQLite): the same statements, each with one parameter
        // and a text that does not depend on how many rows it has.
        let json = commit_steps(&Tables::new(""), Params::Json, &commits, &changes, 0);
        assert_eq!(json.iter().map(|s| s.check).collect::<Vec<_>>(), checks);
        assert!(json.iter().all(|s| s.binds.len() == 1 && s.sql.matches('?').count() == 1));
        let fewer = commit_steps(&Tables::new(""), Params::Json, &commits[..3], &net_changes(&commits[..3]), 0);
        let texts = |steps: &[Step<'_>]| steps.iter().map(|s| s.sql.clone()).collect::<Vec<_>>();
        assert_eq!(texts(&fewer), texts(&json), "3 events or 50: the same statements");
        let Bind::Json(outbox) = &json[3].binds[0] else { panic!("{:?}", json[3].binds) };
        assert!(outbox.starts_with(r#"[["o0","e0","s","7b7d",null],["o1""#), "blobs as hex, null as null: {outbox}");
    }

    #[test]
    fn json_rows_escape_text_and_keep_numbers() {
        let rows = vec![vec![Bind::Text("a\"b\n"), Bind::Int(-7), Bind::MaybeText(None), Bind::Blob(&[0, 255])]];
        assert_eq!(json_rows(&rows), r#"[["a\"b\n",-7,null,"00ff"]]"#);
        assert_eq!(json_list(["k1", "k\"2"]), r#"["k1","k\"2"]"#);
    }
}
