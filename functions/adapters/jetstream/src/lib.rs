//! Runs jetsaga functions as durable JetStream pull consumers.
//!
//! For each function the runtime:
//!
//! 1. provisions the saga stream, the `DLQ` stream and one durable pull
//!    consumer whose filter subjects are the function's subscriptions
//!    ([`provision`]);
//! 2. pulls in batches, decodes each message into an envelope (bare
//!    command payloads from `nats pub` are wrapped), and hands the batch to
//!    the function's [`Processor`] (in this process: the
//!    [`Engine`](jetsaga_core::Engine), which commits inbox + state +
//!    outbox in one store transaction ([`worker`]);
//! 3. publishes the outbox with `Nats-Msg-Id` set to each event id (so
//!    JetStream drops copies), and only then acks the inputs; retryable
//!    failures are nak'd with backoff, malformed or exhausted messages go
//!    to the `DLQ` stream with the reason ([`dlq`]);
//! 4. serves the function's queries and request/reply commands as a NATS
//!    micro service ([`service`]); and, if asked to, the saga's operations
//!    (status, dead letters, redrive: [`ops`]).
//!
//! It knows no business rule: everything specific lives in the functions.

pub mod answers;
pub mod dlq;
pub mod gauges;
pub mod ops;
pub mod permissions;
pub mod provision;
mod publisher;
pub mod recall;
pub mod relay;
pub mod schedule;
pub mod service;
pub mod timings;
pub mod tls;
pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream;
use std::sync::Arc;

use jetsaga_core::{FunctionSpec, Processor};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use dlq::DeadLetter;
pub use provision::{MIN_SERVER_VERSION, check_server_version};

/// The names of the four streams a saga uses, by default ([`Config::named`]
/// gives another saga's). Defined here once: every reader of the streams
/// (the gateway, the CLI, chaos, the bench) takes them from here.
pub mod streams {
    /// The saga's events, commands from the orchestrator, and schedules.
    pub const SAGA: &str = "SAGA";
    /// Dead letters, subjects `dlq.<function>`.
    pub const DLQ: &str = "DLQ";
    /// Every command clients send, until it is processed.
    pub const COMMANDS: &str = "COMMANDS";
    /// Which copy answers a command sent with request/reply.
    pub const CLAIMS: &str = "CLAIMS";
}

/// Errors that stop the runtime from starting.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The server is too old or has JetStream disabled.
    #[error("{0}")]
    Server(String),
    /// A stream or consumer could not be created.
    #[error("cannot provision {what}: {message}")]
    Provision {
        /// What was being created.
        what: String,
        /// The server's answer.
        message: String,
    },
    /// The configuration is unsafe.
    #[error("invalid runtime configuration: {0}")]
    Config(String),
    /// The service for queries could not be started.
    #[error("cannot start the query service of {function}: {message}")]
    Service {
        /// The function.
        function: String,
        /// Why.
        message: String,
    },
}

/// How the runtime uses JetStream. `Default` is right for local development.
#[derive(Clone, Debug)]
pub struct Config {
    /// The stream holding every command and event (`SAGA`).
    pub stream: String,
    /// The dead-letter stream (`DLQ`), subjects [`Config::dlq_subject`].
    pub dlq_stream: String,
    /// Sets the saga's dead-letter and claim subjects apart from other
    /// sagas' on the same NATS account (two streams may not capture the
    /// same subject): `None`, the default saga's `dlq.<function>` and
    /// `$JETSAGA.CLAIM.<function>.<sequence>`; `Some("TRAVEL")`,
    /// `$JETSAGA.DLQ.TRAVEL.<function>` and
    /// `$JETSAGA.CLAIM.TRAVEL.<function>.<sequence>`. [`Config::named`] sets it.
    pub scope: Option<String>,
    /// The stream capturing every command clients send (`COMMANDS`), so a
    /// `nats pub` sent while no copy of its function runs is processed
    /// when one comes up. It never answers a publish itself (`no_ack`):
    /// the function answers a request once the command is processed.
    pub command_stream: String,
    /// The command subjects it captures besides those of the functions
    /// hosted here: give the whole saga's
    /// ([`provision::command_subjects`]), as for `stream_subjects`.
    pub command_subjects: Vec<String>,
    /// The stream of answer claims (`CLAIMS`): which copy of a function
    /// answers a request whose command ran from the command stream.
    pub claim_stream: String,
    /// How long a request without `Nats-Msg-Id` waits for its command to
    /// be processed from the command stream before it is answered that it
    /// is stored but not processed yet.
    pub answer_timeout: Duration,
    /// Process a command sent with `Nats-Msg-Id` from the command stream
    /// too, as one without: its request waits for the stream copy's answer
    /// (for `answer_timeout` at most; then it is processed at once, which
    /// its id makes safe). Off, such a command is processed at the request
    /// endpoint and its stream copy, processed after it, finds it done:
    /// cheap in a runner, but on Lambda (the bridge turns it on) each is an
    /// invocation, so every keyed command would be invoked twice.
    pub keyed_commands_from_stream: bool,
    /// Deliveries before a retryable failure is dead-lettered.
    pub max_deliver: i64,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Unacknowledged messages a consumer may have outstanding.
    pub max_ack_pending: i64,
    /// Largest batch handed to the processor (one store transaction, or one Lambda invocation).
    pub batch_size: usize,
    /// How long to wait for a batch to fill once its first message is in
    /// (zero: take what is ready). Worth a few milliseconds when every batch
    /// costs a Lambda invocation.
    pub batch_window: Duration,
    /// Batches in flight per function (each on its own pull subscription).
    pub concurrency: usize,
    /// Delay before the n-th redelivery after a retryable failure (the last
    /// entry repeats).
    pub backoff: Vec<Duration>,
    /// JetStream de-duplication window of the saga stream.
    pub duplicate_window: Duration,
    /// Stream replicas (3 on a cluster).
    pub replicas: usize,
    /// How long the saga stream keeps a message (`None`: forever). A
    /// message no function has acked by then is gone: it bounds the stream,
    /// and how late a redelivery can come.
    pub max_age: Option<Duration>,
    /// How long a function remembers an input it processed (its inbox
    /// record). Must be longer than `max_age` plus `duplicate_window`, so
    /// that any message that can still be delivered finds its record.
    pub inbox_retention: Duration,
    /// Create or update the streams and consumers at start (local
    /// development). Off where provisioning is a deploy step done by an
    /// administrator: the runtime then only binds to its functions'
    /// consumers, so their identities need no right to change streams.
    pub provision: bool,
    /// Subjects the saga stream captures besides those of the functions
    /// hosted here: give the whole saga's ([`provision::stream_subjects`]),
    /// so every process provisions the same stream whichever functions it
    /// hosts and whichever starts first.
    pub stream_subjects: Vec<String>,
    /// What each function of the saga declares, by name ([`Config::with_saga`]):
    /// a dead letter is sent again only to a subject its function takes in
    /// ([`ops::redrive_refusal`]), and a scheduled message is taken only on
    /// a subject the function that scheduled it emits. Empty: the runtime
    /// does not know its saga, and checks neither.
    pub saga: BTreeMap<String, Declared>,
    /// How long the `DLQ` stream keeps a dead letter that nobody redrove or
    /// deleted.
    pub dlq_max_age: Duration,
    /// The most the `DLQ` stream holds, in bytes. When it is full a new dead
    /// letter is refused (none is pushed out): its message stays with its
    /// function, redelivered with backoff and counted as unstored, and
    /// `jetsaga status` warns from [`DLQ_WARN_PERCENT`] of this on.
    pub dlq_max_bytes: i64,
    /// Let JetStream publish scheduled events (the saga's deadlines; needs
    /// nats-server 2.14+). Off: no schedule subjects in the stream, and a
    /// function that schedules must not (`jetsaga up --no-deadlines`).
    pub message_schedules: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            stream: streams::SAGA.into(),
            dlq_stream: streams::DLQ.into(),
            scope: None,
            command_stream: streams::COMMANDS.into(),
            command_subjects: Vec::new(),
            claim_stream: streams::CLAIMS.into(),
            answer_timeout: Duration::from_secs(10),
            keyed_commands_from_stream: false,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 4096,
            batch_size: 256,
            batch_window: Duration::ZERO,
            concurrency: 1,
            backoff: vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(15),
            ],
            duplicate_window: Duration::from_secs(10 * 60),
            replicas: 1,
            max_age: Some(Duration::from_secs(14 * 24 * 3600)),
            inbox_retention: Duration::from_secs(21 * 24 * 3600),
            stream_subjects: Vec::new(),
            provision: true,
            message_schedules: true,
            saga: BTreeMap::new(),
            dlq_max_age: Duration::from_secs(30 * 24 * 3600),
            dlq_max_bytes: 256 * 1024 * 1024,
        }
    }
}

/// The subjects one function of the saga declares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    /// What it takes in: subscribes to, accepts, is sent directly.
    pub takes: BTreeSet<String>,
    /// What it emits (its schedules may publish only these).
    pub emits: BTreeSet<String>,
}

/// How full the `DLQ` stream may get, in percent of
/// [`Config::dlq_max_bytes`], before `jetsaga status` warns.
pub const DLQ_WARN_PERCENT: u64 = 50;

impl Config {
    /// The default configuration with the four streams named after `saga`
    /// (`TRAVEL`, `TRAVEL_DLQ`, `TRAVEL_COMMANDS`, `TRAVEL_CLAIMS` for
    /// `"travel"`), so several sagas share a NATS account without meeting.
    pub fn named(saga: &str) -> Self {
        let name = saga.to_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        Self {
            dlq_stream: format!("{name}_DLQ"),
            command_stream: format!("{name}_COMMANDS"),
            claim_stream: format!("{name}_CLAIMS"),
            scope: Some(name.clone()),
            stream: name,
            ..Self::default()
        }
    }

    /// Where `function`'s dead letters are published.
    pub fn dlq_subject(&self, function: &str) -> String {
        match &self.scope {
            None => dlq::subject_for(function),
            Some(scope) => format!("$JETSAGA.DLQ.{scope}.{function}"),
        }
    }

    /// What the dead-letter stream captures: every [`Config::dlq_subject`].
    pub fn dlq_filter(&self) -> String {
        match &self.scope {
            None => "dlq.>".into(),
            Some(scope) => format!("$JETSAGA.DLQ.{scope}.>"),
        }
    }

    /// Where a copy of `function` claims the answer to the command at `sequence`.
    pub fn claim_subject(&self, function: &str, sequence: &str) -> String {
        match &self.scope {
            None => answers::claim_subject(function, sequence),
            Some(scope) => format!("$JETSAGA.CLAIM.{scope}.{function}.{sequence}"),
        }
    }

    /// What the claim stream captures: every [`Config::claim_subject`].
    pub fn claim_filter(&self) -> String {
        self.claim_subject("*", "*")
    }

    /// This configuration for a whole saga: its streams capture every
    /// subject of `specs` ([`provision::stream_subjects`],
    /// [`provision::command_subjects`]) and [`Config::saga`] holds their
    /// declarations, so every process asks for the same streams, whichever
    /// functions it hosts.
    pub fn for_saga<'a>(self, specs: impl IntoIterator<Item = &'a FunctionSpec>) -> Self {
        let specs: Vec<&FunctionSpec> = specs.into_iter().collect();
        Self {
            stream_subjects: provision::stream_subjects(specs.iter().copied()).into_iter().collect(),
            command_subjects: provision::command_subjects(specs.iter().copied()).into_iter().collect(),
            ..self
        }
        .with_saga(specs)
    }

    /// Fills [`Config::saga`] from the saga's functions (in every mode
    /// they run in: a function's declarations add up).
    pub fn with_saga<'a>(mut self, specs: impl IntoIterator<Item = &'a FunctionSpec>) -> Self {
        for spec in specs {
            let declared = self.saga.entry(spec.name.to_string()).or_default();
            declared.takes.extend(spec.subscribes.iter().chain(spec.accepts).chain(spec.direct).map(|s| s.to_string()));
            declared.emits.extend(spec.emits.iter().map(|s| s.to_string()));
        }
        self
    }

    /// Whether a message that a schedule (`Nats-Scheduler`, set by the
    /// server; no client may set it) published on `subject` may be taken:
    /// a function that may publish that schedule must also emit `subject`.
    /// So a stolen credential that may schedule cannot have the server
    /// publish another function's event.
    pub fn check_scheduled(&self, scheduler: &str, subject: &str) -> Result<(), String> {
        if self.saga.is_empty() {
            return Ok(());
        }
        let covers = |pattern: &str, s: &str| match pattern.strip_suffix('>') {
            Some(prefix) => s.starts_with(prefix),
            None => pattern == s,
        };
        let schedulers: Vec<&Declared> =
            self.saga.values().filter(|d| d.emits.iter().any(|p| covers(p, scheduler))).collect();
        if schedulers.is_empty() {
            return Err(format!("a schedule ({scheduler}) no function of this saga may publish published {subject}"));
        }
        if schedulers.iter().any(|d| d.emits.contains(subject)) {
            return Ok(());
        }
        Err(format!(
            "a schedule ({scheduler}) published {subject}, which the function that schedules there does not emit"
        ))
    }

    /// Refuses settings under which a redelivered message could miss its
    /// inbox record (and be processed twice).
    pub fn check(&self) -> Result<(), RuntimeError> {
        let Some(max_age) = self.max_age else {
            return Err(RuntimeError::Config(
                "a saga stream without max_age keeps messages forever, so no inbox retention is long enough: \
                 set max_age"
                    .into(),
            ));
        };
        if self.inbox_retention <= max_age + self.duplicate_window {
            return Err(RuntimeError::Config(format!(
                "inbox_retention ({:?}) must be longer than the stream's max_age ({max_age:?}) plus its duplicate \
                 window ({:?}): a message still in the stream must find its inbox record",
                self.inbox_retention, self.duplicate_window
            )));
        }
        Ok(())
    }

    /// The delay before redelivery after the given delivery attempt (1-based).
    pub fn backoff_for(&self, delivered: i64) -> Duration {
        let index = usize::try_from(delivered.max(1) - 1).unwrap_or(0);
        self.backoff.get(index).or(self.backoff.last()).copied().unwrap_or(Duration::from_secs(1))
    }
}

/// Whether a [`Runtime`] consumes its streams yet (every hosted function's
/// consumers bound): what a readiness probe asks.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<std::sync::atomic::AtomicBool>);

impl Readiness {
    /// True once every hosted function consumes.
    pub fn is_ready(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Hosts functions on one NATS connection.
#[derive(Debug)]
pub struct Runtime {
    client: async_nats::Client,
    js: jetstream::Context,
    config: Config,
    engines: Vec<Arc<dyn Processor>>,
    operations: bool,
    ready: Readiness,
    gauges_every: Option<std::time::Duration>,
}

impl Runtime {
    /// A runtime on `client` with `config`.
    pub fn new(client: async_nats::Client, config: Config) -> Self {
        let js = jetstream::new(client.clone());
        Self {
            client,
            js,
            config,
            engines: Vec::new(),
            operations: false,
            ready: Readiness::default(),
            gauges_every: None,
        }
    }

    /// Adds a function: an [`Engine`](jetsaga_core::Engine) over its
    /// store, or any other [`Processor`] (the Lambda bridge's invoker).
    pub fn with(mut self, processor: impl Processor) -> Self {
        self.engines.push(Arc::new(processor));
        self
    }

    /// Also serves the `jetsaga-ops` service (status, dead letters,
    /// redrive) for clients that may not read the streams themselves, such
    /// as the HTTP gateway. Its NATS user needs the operations' subjects.
    pub fn serving_operations(mut self) -> Self {
        self.operations = true;
        self
    }

    /// Also reads each function's outbox and inbox every `every` into the
    /// gauges of the `metrics` facade (see [`gauges`]): for a process that
    /// serves metrics; each reading costs store queries.
    pub fn reporting_gauges(mut self, every: std::time::Duration) -> Self {
        self.gauges_every = Some(every);
        self
    }

    /// Becomes ready once [`Runtime::run`] consumes every hosted function's streams.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// The hosted functions.
    pub fn engines(&self) -> &[Arc<dyn Processor>] {
        &self.engines
    }

    /// Creates or updates streams and consumers. Idempotent; safe to run
    /// from several processes at once.
    pub async fn provision(&self) -> Result<(), RuntimeError> {
        let specs: Vec<&FunctionSpec> = self.engines.iter().map(|e| e.spec()).collect();
        provision::provision(&self.client, &self.js, &self.config, &specs).await
    }

    /// Provisions, then processes until `shutdown` resolves; in-flight
    /// batches are finished (committed, published, acked) before it returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), RuntimeError> {
        self.config.check()?;
        provision::check_server_version(&provision::connected_server_info(&self.client).await?)?;
        let cancel = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut services = Vec::new();
        let mut publishers = Vec::new();
        let mut answerers = Vec::new();
        // Commands and queries are served at once, before streams and
        // consumers are provisioned (a cluster electing a leader can take a
        // while): what commands commit waits in the outbox meanwhile.
        for engine in &self.engines {
            // One publisher and one outbox relay per function, whichever
            // path (consumer, command intake) committed the events.
            let dead_letters = self.config.dlq_subject(engine.name());
            let publisher = publisher::Publisher::new(engine.clone(), self.js.clone(), dead_letters);
            let recall = recall::Recall {
                function: engine.spec().name.to_string(),
                duplicate_window: self.config.duplicate_window,
            };
            tasks.spawn(relay::run(publisher.clone(), self.config.inbox_retention, recall, cancel.clone()));
            if let Some(every) = self.gauges_every {
                tasks.spawn(gauges::report(publisher.clone(), every, cancel.clone()));
            }
            // Every function gets a service, even without endpoints, so
            // `$SRV.PING` / `nats micro ls` shows what is running where.
            let answers = answers::Answers::start(&self.client, engine.name(), &self.config, cancel.clone()).await?;
            let intake = service::Intake {
                answer_timeout: self.config.answer_timeout,
                keyed_from_stream: self.config.keyed_commands_from_stream,
                batches_in_flight: self.config.concurrency.max(1),
            };
            services
                .push(service::serve(&self.client, publisher.clone(), answers.clone(), intake, cancel.clone()).await?);
            publishers.push(publisher);
            answerers.push(answers);
        }
        if self.operations {
            services.push(ops::serve(&self.client, self.config.clone(), cancel.clone()).await?);
        }
        let consuming = async {
            if self.config.provision {
                self.provision().await?;
            }
            for (publisher, answers) in publishers.iter().zip(&answerers) {
                let spec = publisher.engine.spec();
                for (stream, _) in provision::consumed(&self.config, spec) {
                    let consumer = provision::bind(&self.js, spec, stream).await?;
                    // Commands from the command stream answer their waiting requests.
                    let answers = (stream == self.config.command_stream).then(|| answers.clone());
                    for _ in 0..self.config.concurrency.max(1) {
                        let worker = worker::Worker::new(publisher.clone(), self.config.clone(), answers.clone());
                        tasks.spawn(worker.run(consumer.clone(), cancel.clone()));
                    }
                }
                publisher.consuming.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<(), RuntimeError>(())
        };
        if let Err(e) = consuming.await {
            cancel.cancel();
            while tasks.join_next().await.is_some() {}
            for service in services {
                let _ = service.await;
            }
            return Err(e);
        }
        self.ready.0.store(true, std::sync::atomic::Ordering::Relaxed);
        info!(functions = self.engines.len(), stream = %self.config.stream, "runtime started");
        tokio::select! {
            () = shutdown => info!("shutting down: finishing in-flight batches"),
            Some(result) = tasks.join_next() => warn!(?result, "a function worker stopped unexpectedly; shutting down"),
        }
        cancel.cancel();
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result {
                warn!(error = %e, "a function worker panicked");
            }
        }
        for service in services {
            let _ = service.await;
        }
        if let Err(e) = self.client.flush().await {
            warn!(error = %e, "could not flush the connection on shutdown");
        }
        info!("runtime stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SCHEDULER: FunctionSpec = FunctionSpec {
        name: "order",
        description: "",
        subscribes: &[],
        accepts: &[],
        direct: &[],
        emits: &["orders.evt.deadline_passed", "schedules.order.>"],
        queries: &[],
        key_field: None,
    };
    static PAYMENT: FunctionSpec = FunctionSpec { name: "payment", emits: &["payments.evt.refunded"], ..SCHEDULER };

    #[test]
    fn a_named_saga_has_streams_of_its_own() {
        let config = Config::named("travel");
        let names = [&config.stream, &config.dlq_stream, &config.command_stream, &config.claim_stream];
        assert_eq!(names, ["TRAVEL", "TRAVEL_DLQ", "TRAVEL_COMMANDS", "TRAVEL_CLAIMS"]);
        assert_eq!(Config::named("car-hire").stream, "CAR_HIRE", "stream names take letters, digits and _");
    }

    #[test]
    fn a_schedule_may_publish_only_what_the_function_scheduling_there_emits() {
        let config = Config::default().with_saga([&SCHEDULER, &PAYMENT]);
        assert!(config.check_scheduled("schedules.order.abc", "orders.evt.deadline_passed").is_ok());
        let forged = config.check_scheduled("schedules.order.abc", "payments.evt.refunded").unwrap_err();
        assert!(forged.contains("does not emit"), "{forged}");
        let nobodys = config.check_scheduled("schedules.payment.abc", "payments.evt.refunded").unwrap_err();
        assert!(nobodys.contains("no function of this saga may publish"), "{nobodys}");
        assert!(Config::default().check_scheduled("schedules.x.y", "anything").is_ok(), "no saga known: no check");
    }
}
