//! `bench`: how many sagas per second, and how long one saga takes, for
//! any saga, measured against raw JetStream on the same server in the
//! same run.
//!
//! The saga runs as one process of the saga's own binary (`run`, every
//! function) on a nats-server of its own; the bench drives the saga's
//! [`Workload`] (as fast as a window allows, or paced), times each saga
//! from its start to its terminal event, then measures the raw baseline
//! with as many messages of the same size (async publish with a window,
//! a durable pull consumer with explicit acks, no handler, no store).
//! Throughput is reported as a share of `raw msg/s ÷ messages per saga`,
//! so a noisy, shared machine still gives a comparable figure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use jetsaga_envelope::Envelope;
use serde::Serialize;

use crate::Saga;
use crate::chaos::{Answer, Rng, Workload, send};
use crate::server::NatsProcess;
use crate::tools::{self, Process};

/// Options of `bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Sagas to run.
    #[arg(long, default_value_t = 2000)]
    pub sagas: usize,
    /// Sagas started per second (paced); without it, as fast as --window allows.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Sagas in flight at most when not paced.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Seed of the workload's choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Latency summary in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Worst.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// The summary of `samples` (milliseconds; nearest-rank percentiles).
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Self {
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            max_ms: samples[samples.len() - 1],
            mean_ms: samples.iter().sum::<f64>() / samples.len() as f64,
        }
    }
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The saga.
    pub saga: String,
    /// Sagas started.
    pub sagas: usize,
    /// Sagas whose terminal event was seen.
    pub ended: usize,
    /// How they ended: terminal subject → count.
    pub outcomes: std::collections::BTreeMap<String, usize>,
    /// Paced rate, if any.
    pub rate: Option<u32>,
    /// Window when not paced.
    pub window: usize,
    /// Sagas per second, from the first start to the last end.
    pub sagas_per_sec: f64,
    /// Start to terminal event, per saga.
    pub latency: Latency,
    /// Messages in the saga stream per saga.
    pub messages_per_saga: f64,
    /// Their mean size in bytes.
    pub message_bytes: usize,
    /// Raw JetStream on the same server: messages per second.
    pub raw_msgs_per_sec: f64,
    /// The raw bound: `raw msg/s ÷ messages per saga`.
    pub raw_bound_sagas_per_sec: f64,
    /// `sagas/s ÷ raw bound`.
    pub ratio_to_raw: f64,
    /// The run against the performance targets.
    pub targets: Targets,
}

/// Throughput target: sagas/s at least this share of the raw bound.
pub const THROUGHPUT_TARGET: f64 = 0.5;
/// Latency targets, at [`TARGET_RATE`]: a saga's p50 within this many times
/// the raw chain's p50 …
pub const P50_TARGET: f64 = 3.0;
/// … and its p99 within this many times the raw chain's p99.
pub const P99_TARGET: f64 = 10.0;
/// The paced rate (sagas/s) the latency targets are stated for.
pub const TARGET_RATE: u32 = 500;

/// How a run compares with the targets, each a ratio to raw JetStream
/// measured on the same server in the same run (so that a busy, shared
/// machine moves both sides of the ratio alike).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Targets {
    /// `sagas/s ÷ raw bound` (target ≥ [`THROUGHPUT_TARGET`]).
    pub throughput_ratio: f64,
    /// The messages from a saga's start to its end, one after another: its
    /// command, then each event that caused the next, up to its terminal
    /// event (by causation ids; the median over the run's sagas). A
    /// saga's other messages (schedules, events off that path) do not count.
    pub hops: usize,
    /// The raw chain: `hops` raw publish→consume hops in a row (publish,
    /// wait for the stream's ack, the consumer receives it, acks it, and
    /// publishes the next), on an idle server.
    pub raw_chain: Latency,
    /// The saga's p50 ÷ the raw chain's p50 (target ≤ [`P50_TARGET`] at [`TARGET_RATE`]/s).
    pub p50_ratio: f64,
    /// The saga's p99 ÷ the raw chain's p99 (target ≤ [`P99_TARGET`] at [`TARGET_RATE`]/s).
    pub p99_ratio: f64,
}

impl Targets {
    /// Measures the raw chain of `hops` hops ([`critical_path`]) of
    /// `size` bytes, and sets the saga's figures against it.
    pub async fn measure(
        js: &jetstream::Context,
        hops: usize,
        size: usize,
        ratio_to_raw: f64,
        latency: &Latency,
    ) -> anyhow::Result<Self> {
        let hops = hops.max(1);
        let raw_chain = raw_chain(js, hops, 300, size).await?;
        Ok(Self {
            throughput_ratio: ratio_to_raw,
            hops,
            p50_ratio: latency.p50_ms / raw_chain.p50_ms.max(1e-9),
            p99_ratio: latency.p99_ms / raw_chain.p99_ms.max(1e-9),
            raw_chain,
        })
    }

    /// The targets as lines a person reads; `rate` is the run's paced rate
    /// (the latency targets hold at [`TARGET_RATE`]/s).
    pub fn lines(&self, rate: Option<u32>) -> Vec<String> {
        let verdict = |applies: bool, met: bool, when: &str| match (applies, met) {
            (false, _) => format!("(judged {when})"),
            (true, true) => "met".to_string(),
            (true, false) => "NOT met".to_string(),
        };
        let row = |what: &str, measured: String, goal: String, verdict: String| {
            format!("{what:<11} {measured:<46} {goal:<13} {verdict}")
        };
        let chain = &self.raw_chain;
        let at_target_rate = rate == Some(TARGET_RATE);
        let judged_at = format!("at --rate {TARGET_RATE}");
        vec![
            row(
                "throughput",
                format!("{:.1}% of the raw bound", self.throughput_ratio * 100.0),
                format!(">= {:.0}%", THROUGHPUT_TARGET * 100.0),
                verdict(rate.is_none(), self.throughput_ratio >= THROUGHPUT_TARGET, "without --rate"),
            ),
            row(
                "p50",
                format!("{:.1}x the raw chain's ({:.2} ms, {} hops)", self.p50_ratio, chain.p50_ms, self.hops),
                format!("<= {P50_TARGET:.0}x"),
                verdict(at_target_rate, self.p50_ratio <= P50_TARGET, &judged_at),
            ),
            row(
                "p99",
                format!("{:.1}x the raw chain's ({:.2} ms)", self.p99_ratio, chain.p99_ms),
                format!("<= {P99_TARGET:.0}x"),
                verdict(at_target_rate, self.p99_ratio <= P99_TARGET, &judged_at),
            ),
        ]
    }
}

/// The messages from a saga's start to its end, one after another, as the
/// median over the sagas whose terminal event is in `events`: the command
/// that started it, then the events back from the terminal one, each the
/// cause of the next (`causation_id`), to the first (caused by the command).
pub fn critical_path(events: &[Envelope], is_terminal: impl Fn(&Envelope) -> bool) -> Option<usize> {
    let causes: HashMap<&str, Option<&str>> =
        events.iter().map(|e| (e.id.as_str(), e.causation_id.as_deref())).collect();
    let mut lengths: Vec<usize> = events
        .iter()
        .filter(|e| is_terminal(e))
        .map(|terminal| {
            // The command, and the terminal event.
            let mut length = 2;
            let mut cause = terminal.causation_id.as_deref();
            while let Some(id) = cause
                && let Some(next) = causes.get(id)
                && length <= events.len()
            {
                length += 1;
                cause = *next;
            }
            length
        })
        .collect();
    if lengths.is_empty() {
        return None;
    }
    lengths.sort_unstable();
    Some(lengths[lengths.len() / 2])
}

/// `chains` times, `hops` messages of `size` bytes in a row through one
/// stream and a durable pull consumer with explicit acks: each is
/// published (its ack awaited), received, acked, then the next published,
/// as a saga's steps hand over. Returns the latency of a whole chain
/// (after a few chains of warm-up).
pub async fn raw_chain(js: &jetstream::Context, hops: usize, chains: usize, size: usize) -> anyhow::Result<Latency> {
    const WARM_UP: usize = 10;
    let consumer = raw_stream(js, "BENCH_CHAIN", "bench.chain", "chain", 1000).await?;
    let mut messages = consumer.messages().await?;
    let payload = bytes::Bytes::from(vec![b'x'; size.max(16)]);
    let mut samples = Vec::with_capacity(chains);
    for chain in 0..chains + WARM_UP {
        let started = Instant::now();
        for _ in 0..hops {
            js.publish("bench.chain", payload.clone()).await?.await?;
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .map_err(|_| anyhow::anyhow!("the raw chain's message did not arrive within 10 s"))?
                .ok_or_else(|| anyhow::anyhow!("the raw chain's consumer ended"))?
                .map_err(|e| anyhow::anyhow!("raw chain consumer: {e}"))?;
            message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        if chain >= WARM_UP {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    drop(messages);
    js.delete_stream("BENCH_CHAIN").await?;
    Ok(Latency::of(samples))
}

/// Runs the bench over `saga`, its functions in one `exe <forward> run` process.
pub async fn run(
    saga: &Arc<dyn Saga>,
    workload: &dyn Workload,
    exe: &Path,
    forward: &[String],
    args: &BenchArgs,
) -> anyhow::Result<Report> {
    if args.sagas == 0 || args.window == 0 || args.rate == Some(0) {
        anyhow::bail!("--sagas, --window and --rate must be at least 1");
    }
    let dir = tempfile::Builder::new().prefix(&format!("{}-bench-", saga.name())).tempdir()?;
    let port = tools::free_port()?;
    let binary = crate::server::find_binary().map_err(anyhow::Error::msg)?;
    let _server = NatsProcess::start(binary, port, &dir.path().join("nats")).map_err(anyhow::Error::msg)?;
    let url = format!("nats://127.0.0.1:{port}");
    let mut worker_args: Vec<String> =
        vec!["--nats-url".into(), url.clone(), "--data-dir".into(), dir.path().join("functions").display().to_string()];
    worker_args.extend(forward.iter().cloned());
    worker_args.extend(["run".to_string(), "--quiet".to_string()]);
    let log = std::fs::File::create(dir.path().join("functions.log"))?;
    let child = tools::tied_command(exe)
        .args(&worker_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let _functions = Process::new(child, format!("{} run", exe.display()));

    let nats = async_nats::connect(url.as_str()).await?;
    let names: Vec<String> = crate::specs(saga.as_ref()).iter().map(|f| f.name.to_string()).collect();
    crate::connect::wait_for_functions(&nats, &names, Duration::from_secs(60)).await?;
    crate::chaos::prepare(&nats, workload, args.sagas, "setup").await?;
    let config = saga.runtime_config();
    eprintln!(
        "{} bench: {} sagas, {}",
        saga.name(),
        args.sagas,
        args.rate.map_or(format!("window {}", args.window), |r| format!("paced at {r}/s"))
    );

    // Terminal events as they happen, by key.
    let mut subscriptions = Vec::new();
    for subject in &config.stream_subjects {
        subscriptions.push(nats.subscribe(subject.clone()).await?);
    }
    let mut events = futures::stream::select_all(subscriptions);
    let mut rng = Rng(args.seed);
    let starts: Vec<_> = (0..args.sagas).map(|i| workload.start(i, &mut rng)).collect();
    let is_terminal = |event: &Envelope| workload.is_terminal(event);
    let mut ends: HashMap<String, (String, Instant)> = HashMap::new();
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let window = Arc::new(tokio::sync::Semaphore::new(args.window));
    let mut pace = args.rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r))));
    let mut in_flight = tokio::task::JoinSet::new();
    let mut permits: HashMap<String, tokio::sync::OwnedSemaphorePermit> = HashMap::new();
    let started = Instant::now();
    let mut next = 0;
    let deadline = Duration::from_secs(60 + (args.sagas / 20) as u64);
    while ends.len() < args.sagas && started.elapsed() < deadline {
        tokio::select! {
            biased;
            Some(message) = events.next() => {
                if let Ok(event) = Envelope::decode(&message.payload)
                    && is_terminal(&event)
                    && let Some(key) = event.saga_key.clone()
                {
                    permits.remove(&key);
                    ends.entry(key).or_insert((event.event_type, Instant::now()));
                }
            }
            _ = async { if let Some(pace) = pace.as_mut() { pace.tick().await; } }, if next < starts.len() => {
                let Ok(permit) = window.clone().try_acquire_owned() else {
                    // The window is full: wait for an end (the select's other branch).
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                };
                let start = starts[next].clone();
                next += 1;
                sent_at.insert(start.key.clone(), Instant::now());
                permits.insert(start.key.clone(), permit);
                let nats = nats.clone();
                in_flight.spawn(async move {
                    let id = format!("start-{}", start.key);
                    (start.key.clone(), send(&nats, &start.command.subject, &start.command.body, &id, Duration::from_secs(10)).await)
                });
            }
            Some(sent) = in_flight.join_next() => {
                if let Ok((key, answer)) = sent && !matches!(answer, Answer::Ok) {
                    anyhow::bail!("the start of {key} was not accepted: {answer:?}");
                }
            }
        }
    }
    let last_end = ends.values().map(|(_, at)| *at).max().unwrap_or_else(Instant::now);
    let seconds = (last_end - started).as_secs_f64().max(f64::EPSILON);
    let latency = Latency::of(
        ends.iter()
            .filter_map(|(key, (_, at))| sent_at.get(key).map(|sent| (*at - *sent).as_secs_f64() * 1000.0))
            .collect(),
    );
    let mut outcomes = std::collections::BTreeMap::new();
    for (subject, _) in ends.values() {
        *outcomes.entry(subject.clone()).or_insert(0) += 1;
    }

    let js = jetstream::new(nats.clone());
    let info = js.get_stream(&config.stream).await?.info().await?.state.clone();
    let messages_per_saga = info.messages as f64 / args.sagas as f64;
    let message_bytes = (info.bytes / info.messages.max(1)) as usize;
    eprintln!("  {} of {} sagas ended; the raw baseline…", ends.len(), args.sagas);
    let raw = raw_baseline(&js, (info.messages as usize).max(1000), message_bytes).await?;
    let bound = raw / messages_per_saga.max(1.0);
    let sagas_per_sec = ends.len() as f64 / seconds;
    let events = crate::history::read_events(&js, &config.stream).await?;
    let hops = critical_path(&events, |e| workload.is_terminal(e)).unwrap_or(messages_per_saga.round() as usize);
    let targets = Targets::measure(&js, hops, message_bytes, sagas_per_sec / bound, &latency).await?;
    Ok(Report {
        saga: saga.name().to_string(),
        sagas: args.sagas,
        ended: ends.len(),
        outcomes,
        rate: args.rate,
        window: args.window,
        sagas_per_sec,
        latency,
        messages_per_saga,
        message_bytes,
        raw_msgs_per_sec: raw,
        raw_bound_sagas_per_sec: bound,
        ratio_to_raw: sagas_per_sec / bound,
        targets,
    })
}

/// A file stream `name` on `subject` and its durable pull consumer
/// `durable` with explicit acks: what a function's input is, without the function.
async fn raw_stream(
    js: &jetstream::Context,
    name: &str,
    subject: &str,
    durable: &str,
    max_ack_pending: i64,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js
        .create_stream(stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending,
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}

/// Publishes `count` messages of `size` bytes with async acks (window 1024)
/// while a durable pull consumer with explicit acks consumes them; returns
/// messages per second from the first publish to the last ack.
pub async fn raw_baseline(js: &jetstream::Context, count: usize, size: usize) -> anyhow::Result<f64> {
    let consumer = raw_stream(js, "BENCH_RAW", "bench.raw", "raw", 20_000).await?;
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut messages = consumer.messages().await?;
        let mut seen = 0;
        while seen < count {
            match messages.next().await {
                Some(Ok(message)) => {
                    message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                    seen += 1;
                }
                Some(Err(e)) => anyhow::bail!("raw consumer: {e}"),
                None => break,
            }
        }
        anyhow::Ok(())
    });
    let mut acks = FuturesUnordered::new();
    for _ in 0..count {
        while acks.len() >= 1024 {
            if let Some(result) = acks.next().await {
                result?;
            }
        }
        let ack = js.publish("bench.raw", payload.clone()).await?;
        acks.push(ack.into_future());
    }
    while let Some(result) = acks.next().await {
        result?;
    }
    consume.await??;
    let elapsed = start.elapsed().as_secs_f64();
    js.delete_stream("BENCH_RAW").await?;
    Ok(count as f64 / elapsed)
}

/// Prints a report.
pub fn print(report: &Report) {
    let outcomes: Vec<String> = report.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
    println!("{} bench: {} sagas, {} ended ({})", report.saga, report.sagas, report.ended, outcomes.join(", "));
    println!("  sagas/s:        {:.0}", report.sagas_per_sec);
    println!(
        "  raw JetStream:  {:.0} msg/s  ({:.1} messages/saga of {} B -> bound {:.0} sagas/s)",
        report.raw_msgs_per_sec, report.messages_per_saga, report.message_bytes, report.raw_bound_sagas_per_sec
    );
    println!("  ratio to raw:   {:.1}%", report.ratio_to_raw * 100.0);
    let l = &report.latency;
    println!(
        "  latency (ms):   p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.mean_ms
    );
    println!("  targets (ratios to raw JetStream in this run):");
    for line in report.targets.lines(report.rate) {
        println!("    {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::Latency;

    #[test]
    fn the_critical_path_follows_causes_back_from_the_terminal_event() {
        use jetsaga_envelope::Envelope;
        let event = |id: &str, cause: &str, kind: &str| Envelope {
            id: id.into(),
            event_type: kind.into(),
            saga_key: Some("t-1".into()),
            correlation_id: "cmd".into(),
            causation_id: Some(cause.into()),
            occurred_at: chrono::Utc::now(),
            version: 1,
            data: serde_json::json!({}),
        };
        // cmd -> a -> b -> end, and a schedule off the path (caused by a).
        let events = vec![
            event("a", "cmd", "t.evt.started"),
            event("s", "a", "t.evt.deadline"),
            event("b", "a", "t.evt.booked"),
            event("end", "b", "t.evt.ended"),
        ];
        let is_end = |e: &Envelope| e.event_type == "t.evt.ended";
        assert_eq!(super::critical_path(&events, is_end), Some(4), "the command and three events");
        assert_eq!(super::critical_path(&events[..3], is_end), None, "no saga ended");
    }

    #[test]
    fn percentiles_are_nearest_rank_over_sorted_samples() {
        let latency = Latency::of((1..=100).rev().map(f64::from).collect());
        assert_eq!((latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.max_ms), (51.0, 90.0, 99.0, 100.0));
        assert_eq!(latency.mean_ms, 50.5);
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }
}
