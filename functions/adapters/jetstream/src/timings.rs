//! Where a consumed message's time goes, per function: queue wait
//! (stored by the server → pulled by a worker), handling (pulled →
//! committed by the processor), publish (committed → every event's
//! publish acked) and ack (→ the input's ack sent). Measured once by the
//! workers and recorded lock-free into fixed log-scale histograms, which
//! `jetsaga bench` (and anyone curious) reads through
//! `$JETSAGA.TIMINGS.<function>`, and, in the same call, into the
//! process's metrics as `jetsaga_message_phase_seconds{function,phase}`
//! (phases `queue_wait`, `handling`, `publish`, `ack`; one observation per
//! message): the endpoint and Prometheus show the same numbers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// `$JETSAGA.TIMINGS.<function>`: the function's latency split since it started.
pub fn timings_subject(function: &str) -> String {
    format!("$JETSAGA.TIMINGS.{function}")
}

/// Sub-buckets per power of two: about 19% apart, plenty to tell 1 ms from 2 ms.
const SUB_BUCKETS: u64 = 4;
/// Powers of two of microseconds covered (1 µs to about 9 minutes).
const OCTAVES: u64 = 30;
const BUCKETS: usize = (OCTAVES * SUB_BUCKETS) as usize;

/// A histogram of durations in microseconds, on log-scale buckets.
#[derive(Debug)]
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < SUB_BUCKETS {
        return us as usize;
    }
    let octave = 63 - u64::from(us.leading_zeros()); // floor(log2(us)) >= 2
    let sub = (us >> (octave - 2)) & (SUB_BUCKETS - 1);
    (((octave - 1) * SUB_BUCKETS + sub) as usize).min(BUCKETS - 1)
}

/// The upper bound of a bucket, in microseconds.
fn bucket_ceiling(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket + 1;
    }
    let octave = bucket / SUB_BUCKETS + 1;
    let sub = bucket % SUB_BUCKETS;
    ((SUB_BUCKETS + sub + 1) << (octave - 2)) - 1
}

impl Histogram {
    /// Records one duration `times` times (every message of a batch shares its batch's phases).
    pub fn record(&self, duration: Duration, times: u64) {
        if times == 0 {
            return;
        }
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)].fetch_add(times, Ordering::Relaxed);
        self.sum_us.fetch_add(us.saturating_mul(times), Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile in microseconds (a bucket's upper bound: at most ~19% high).
    pub fn quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (bucket, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_ceiling(bucket).min(self.max_us.load(Ordering::Relaxed));
            }
        }
        self.max_us.load(Ordering::Relaxed)
    }

    /// `{count, mean_ms, p50_ms, p90_ms, p99_ms, max_ms}`, and the raw
    /// figures (`buckets` as `[index, count]` pairs, `sum_us`, `max_us`) that
    /// [`Histogram::add`] takes, so that copies of a function can be summed.
    pub fn summary(&self) -> Value {
        let count = self.count();
        let ms = |us: u64| (us as f64) / 1000.0;
        let sum_us = self.sum_us.load(Ordering::Relaxed);
        let max_us = self.max_us.load(Ordering::Relaxed);
        let buckets: Vec<[u64; 2]> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| [i as u64, c.load(Ordering::Relaxed)])
            .filter(|[_, c]| *c > 0)
            .collect();
        json!({
            "count": count,
            "mean_ms": if count == 0 { 0.0 } else { ms(sum_us) / count as f64 },
            "p50_ms": ms(self.quantile_us(0.5)),
            "p90_ms": ms(self.quantile_us(0.9)),
            "p99_ms": ms(self.quantile_us(0.99)),
            "max_ms": ms(max_us),
            "buckets": buckets,
            "sum_us": sum_us,
            "max_us": max_us,
        })
    }

    /// Adds what another histogram's [`Histogram::summary`] holds (another
    /// copy of the function, or another function). Figures it cannot read are left out.
    pub fn add(&self, summary: &Value) {
        for pair in summary["buckets"].as_array().into_iter().flatten() {
            if let (Some(i), Some(c)) = (pair[0].as_u64(), pair[1].as_u64())
                && let Some(slot) = self.counts.get(i as usize)
            {
                slot.fetch_add(c, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add(summary["sum_us"].as_u64().unwrap_or(0), Ordering::Relaxed);
        self.max_us.fetch_max(summary["max_us"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }
}

/// One function's latency split, shared by its workers.
#[derive(Debug)]
pub struct Timings {
    /// The same phases in the process's metrics ([`Timings::exported`]),
    /// in [`Timings::phases`]' order; no-ops otherwise.
    exported: [metrics::Histogram; 4],
    /// Stored by the server → taken by a worker (in the client's buffer, or
    /// the server's, while the worker was busy).
    pub queue: Histogram,
    /// Taken → committed (decode, store reads, handler, commit).
    pub handling: Histogram,
    /// Committed → every event of its batch acked by JetStream.
    pub publish: Histogram,
    /// Published → the input's ack handed to the connection.
    pub ack: Histogram,
    /// Batches processed, and the messages in them.
    pub batches: AtomicU64,
    messages: AtomicU64,
}

impl Default for Timings {
    /// Timings kept here only (as the bench sums them).
    fn default() -> Self {
        Self {
            exported: std::array::from_fn(|_| metrics::Histogram::noop()),
            queue: Histogram::default(),
            handling: Histogram::default(),
            publish: Histogram::default(),
            ack: Histogram::default(),
            batches: AtomicU64::default(),
            messages: AtomicU64::default(),
        }
    }
}

/// Which phase a duration is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Stored → taken.
    Queue,
    /// Taken → committed.
    Handling,
    /// Committed → published.
    Publish,
    /// Published → acked.
    Ack,
}

/// The phases' names, as the endpoint and the `phase` label say them.
const PHASE_NAMES: [&str; 4] = ["queue_wait", "handling", "publish", "ack"];

impl Timings {
    /// Timings of `function` that also record into the process's metrics
    /// (the recorder installed when this is called).
    pub fn exported(function: &str) -> Self {
        Self {
            exported: PHASE_NAMES.map(|phase| {
                metrics::histogram!("jetsaga_message_phase_seconds", "function" => function.to_string(), "phase" => phase)
            }),
            ..Self::default()
        }
    }

    /// Records that each of `messages` messages spent `took` in `phase`
    /// (every message of a batch shares its batch's phases but the queue's).
    pub fn record(&self, phase: Phase, took: Duration, messages: u64) {
        let (histogram, exported) = match phase {
            Phase::Queue => (&self.queue, &self.exported[0]),
            Phase::Handling => (&self.handling, &self.exported[1]),
            Phase::Publish => (&self.publish, &self.exported[2]),
            Phase::Ack => (&self.ack, &self.exported[3]),
        };
        histogram.record(took, messages);
        exported.record_many(took.as_secs_f64(), usize::try_from(messages).unwrap_or(usize::MAX));
    }

    /// Records a batch's queue waits, one per message (`stored`: when the
    /// server stored each), against `taken`, when the worker took the batch.
    pub fn record_queue(&self, stored: impl Iterator<Item = SystemTime>, taken: SystemTime) {
        let mut n = 0;
        for at in stored {
            // Same host, same clock; a message stored "after" it was taken is a rounding: zero.
            self.record(Phase::Queue, taken.duration_since(at).unwrap_or_default(), 1);
            n += 1;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.messages.fetch_add(n, Ordering::Relaxed);
    }

    /// The phases, as the timings endpoint names them.
    pub fn phases(&self) -> [(&'static str, &Histogram); 4] {
        let [queue, handling, publish, ack] = PHASE_NAMES;
        [(queue, &self.queue), (handling, &self.handling), (publish, &self.publish), (ack, &self.ack)]
    }

    /// Adds another [`Timings::summary`] (a copy of the function, or another function).
    pub fn add(&self, summary: &Value) {
        for (name, histogram) in self.phases() {
            histogram.add(&summary[name]);
        }
        self.batches.fetch_add(summary["batches"].as_u64().unwrap_or(0), Ordering::Relaxed);
        self.messages.fetch_add(summary["messages"].as_u64().unwrap_or(0), Ordering::Relaxed);
    }

    /// The split as JSON, for the timings endpoint.
    pub fn summary(&self, function: &str) -> Value {
        let batches = self.batches.load(Ordering::Relaxed);
        let messages = self.messages.load(Ordering::Relaxed);
        json!({
            "function": function,
            "batches": batches,
            "messages": messages,
            "mean_batch": if batches == 0 { 0.0 } else { messages as f64 / batches as f64 },
            "queue_wait": self.queue.summary(),
            "handling": self.handling.summary(),
            "publish": self.publish.summary(),
            "ack": self.ack.summary(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_bound_what_they_hold() {
        let mut last = 0;
        for us in [0u64, 1, 3, 4, 5, 7, 8, 100, 999, 1_000, 1_001, 20_000, 5_000_000] {
            let bucket = bucket_of(us);
            assert!(bucket >= last, "{us} µs in bucket {bucket}, before {last}");
            assert!(bucket_ceiling(bucket) >= us, "bucket {bucket} ends at {} < {us}", bucket_ceiling(bucket));
            assert!(bucket_ceiling(bucket) as f64 <= (us.max(4) as f64) * 1.25, "bucket {bucket} too wide for {us}");
            last = bucket;
        }
    }

    #[test]
    fn quantiles_tell_a_fast_majority_from_a_slow_tail() {
        let h = Histogram::default();
        h.record(Duration::from_micros(900), 98);
        h.record(Duration::from_millis(30), 2);
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((900..=1_100).contains(&p50), "p50 {p50}");
        assert!((30_000..=36_000).contains(&p99), "p99 {p99}");
        assert_eq!(h.count(), 100);
        let summary = h.summary();
        assert_eq!(summary["max_ms"], 30.0);
        assert!((summary["mean_ms"].as_f64().unwrap() - (0.9 * 98.0 + 60.0) / 100.0).abs() < 1e-9);

        // Two copies' figures, summed, are the figures of both.
        let other = Histogram::default();
        other.record(Duration::from_millis(30), 100);
        let both = Histogram::default();
        both.add(&summary);
        both.add(&other.summary());
        assert_eq!(both.count(), 200);
        assert!((30_000..=36_000).contains(&both.quantile_us(0.5)), "p50 of both {}", both.quantile_us(0.5));
        assert!((900..=1_100).contains(&both.quantile_us(0.4)));
    }
}
