//! What each process of a saga may do on NATS: the subjects a NATS user
//! hosting some of its functions needs, and nothing more, derived from the
//! functions' declarations and the runtime's configuration. Deployments
//! turn them into accounts (a password per user, or JWTs).

use jetsaga_core::FunctionSpec;
use serde::Serialize;

use crate::Config;

/// What one NATS user may do (and it may answer requests: one reply each).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may not publish to, although `publish` covers them.
    pub deny_publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The NATS user of the JetStream→Lambda bridge.
pub const BRIDGE_USER: &str = "bridge";

/// A saga's NATS users: `admin` (`None`: everything, for provisioning and
/// the operator's tools), one user per function with exactly
/// [`function_user`]'s subjects, and the `bridge` ([`bridge_user`]).
pub fn saga_users(specs: &[&FunctionSpec], config: &Config) -> Vec<(String, Option<Permissions>)> {
    let mut users = vec![("admin".to_string(), None)];
    users.extend(specs.iter().map(|spec| (spec.name.to_string(), Some(function_user(spec.name, &[spec], config)))));
    users.push((BRIDGE_USER.to_string(), Some(bridge_user(specs, config))));
    users
}

/// The bridge, which hosts every function on Lambda and the operations
/// service: the union of the functions' subjects and [`operations_user`]'s.
pub fn bridge_user(specs: &[&FunctionSpec], config: &Config) -> Permissions {
    let mut bridge = function_user(BRIDGE_USER, specs, config);
    let operations = operations_user(specs, config);
    bridge.publish.extend(operations.publish);
    bridge.subscribe.extend(operations.subscribe);
    for list in [&mut bridge.publish, &mut bridge.subscribe] {
        list.sort();
        list.dedup();
    }
    bridge
}

/// What the host of the operations service needs: the state of the
/// streams and of every function's consumer (`status`, the DLQ depth),
/// each function's outbox figures, the dead letters (read with ephemeral
/// consumers, removed once redriven), handing a dead event back to its
/// function and asking a dead command again. No stream or consumer
/// management, and no event: it may write none. Its own inbox is the
/// caller's to add (a user hosting only this, or one hosting functions too).
pub fn operations_user(specs: &[&FunctionSpec], config: &Config) -> Permissions {
    let (saga, commands, dlq) = (&config.stream, &config.command_stream, &config.dlq_stream);
    let mut publish = Vec::new();
    for stream in [saga, commands, dlq] {
        publish.push(format!("$JS.API.STREAM.INFO.{stream}"));
    }
    for stream in [saga, commands] {
        publish.push(format!("$JS.API.CONSUMER.NAMES.{stream}"));
        publish.push(format!("$JS.API.CONSUMER.INFO.{stream}.*"));
        // A dead letter's original, to check the letter against before a redrive.
        publish.push(format!("$JS.API.STREAM.MSG.GET.{stream}"));
    }
    publish.push(format!("$JS.API.STREAM.MSG.GET.{dlq}"));
    publish.push(format!("$JS.API.DIRECT.GET.{dlq}"));
    publish.push(format!("$JS.API.STREAM.MSG.DELETE.{dlq}"));
    publish.push(format!("$JS.API.CONSUMER.CREATE.{dlq}"));
    for api in ["CREATE", "MSG.NEXT", "DELETE", "INFO"] {
        publish.push(format!("$JS.API.CONSUMER.{api}.{dlq}.>"));
    }
    publish.push(crate::service::outbox_subject("*"));
    publish.push(crate::timings::timings_subject("*"));
    // A dead event goes back to its function, which processes it as itself;
    // a dead command is asked again, as any client may. No event.
    publish.push(crate::service::redrive_subject("*"));
    publish.extend(specs.iter().flat_map(|spec| spec.accepts.iter().chain(spec.direct)).map(|s| s.to_string()));
    let service = crate::ops::SERVICE_NAME;
    let mut subscribe: Vec<String> = jetsaga_envelope::ops::OPS_SUBJECTS.iter().map(|s| s.to_string()).collect();
    // Discovery of the service (`nats micro ls` asks all services at once).
    subscribe.extend(["$SRV.PING", "$SRV.INFO", "$SRV.STATS"].map(String::from));
    subscribe.push(format!("$SRV.*.{service}"));
    subscribe.push(format!("$SRV.*.{service}.>"));
    Permissions { publish, deny_publish: Vec::new(), subscribe }
}

/// The `accounts { }` block of a nats-server configuration: `users` in the
/// account `account`, with JetStream. Passwords come from the environment
/// when the server starts: `$JETSAGA_<USER>_PASSWORD`.
pub fn accounts(account: &str, users: &[(String, Option<Permissions>)]) -> String {
    let users: String = users.iter().map(|(name, permissions)| account_user(name, permissions.as_ref())).collect();
    format!("accounts {{\n  {account} {{\n    jetstream: enabled\n    users: [\n{users}    ]\n  }}\n}}\n")
}

fn account_user(name: &str, permissions: Option<&Permissions>) -> String {
    let password = format!("$JETSAGA_{}_PASSWORD", name.to_uppercase());
    let Some(Permissions { publish, deny_publish, subscribe }) = permissions else {
        return format!("      {{ user: \"{name}\", password: {password} }}\n");
    };
    let deny = if deny_publish.is_empty() { String::new() } else { format!(", deny: [{}]", quoted(deny_publish)) };
    format!(
        "      {{\n        user: \"{name}\", password: {password}\n        permissions: {{\n          publish: {{ allow: [{}]{deny} }}\n          subscribe: {{ allow: [{}] }}\n          allow_responses: true\n        }}\n      }}\n",
        quoted(publish),
        quoted(subscribe)
    )
}

fn quoted(subjects: &[String]) -> String {
    subjects.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}

/// The subjects a process hosting `specs` as NATS user `user` needs, and
/// nothing more: publish what its functions emit, its dead letters, and
/// read and ack its own consumers; receive its commands and queries and
/// the replies sent to its own inbox prefix (`_INBOX_<user>`). No stream or
/// consumer management: provisioning is an administrator's step.
pub fn function_user(user: &str, specs: &[&FunctionSpec], config: &Config) -> Permissions {
    let mut publish = Vec::new();
    let mut subscribe = vec![
        format!("{}.>", crate::service::inbox_prefix(user)),
        "$SRV.PING".into(),
        "$SRV.INFO".into(),
        "$SRV.STATS".into(),
    ];
    for spec in specs {
        let name = spec.name;
        publish.extend(spec.emits.iter().map(|s| s.to_string()));
        publish.push(config.dlq_subject(name));
        let streams =
            [(&config.stream, !spec.subscribes.is_empty()), (&config.command_stream, !spec.accepts.is_empty())];
        for (stream, _) in streams.iter().filter(|(_, consumes)| *consumes) {
            publish.push(format!("$JS.API.CONSUMER.INFO.{stream}.{name}"));
            publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}"));
            publish.push(format!("$JS.ACK.{stream}.{name}.>"));
        }
        // Reading back its own subjects before publishing again beyond the
        // duplicate window (`recall`): which stream holds a subject, and one
        // consumer of its own, filtered on a subject it emits, and no other.
        // (What a function emits, events, schedules and the orchestrator's
        // commands alike, is kept by the saga stream.)
        publish.push("$JS.API.STREAM.NAMES".to_string());
        let recall = crate::recall::consumer_name(name);
        let stream = &config.stream;
        publish.extend(spec.emits.iter().map(|s| format!("$JS.API.CONSUMER.CREATE.{stream}.{recall}.{s}")));
        publish.push(format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{recall}"));
        publish.push(format!("$JS.API.CONSUMER.DELETE.{stream}.{recall}"));
        if !spec.accepts.is_empty() {
            // Whether the command stream exists (was a request's command kept?),
            // and answers to requests for commands processed from it.
            publish.push(format!("$JS.API.STREAM.INFO.{}", config.command_stream));
            let answers = crate::answers::answer_subject(name, "*");
            publish.push(answers.clone());
            publish.push(config.claim_subject(name, "*"));
            subscribe.push(answers);
        }
        subscribe.extend(spec.queries.iter().chain(spec.accepts).chain(spec.direct).map(|s| s.to_string()));
        subscribe.push(crate::service::outbox_subject(name));
        subscribe.push(crate::service::redrive_subject(name));
        subscribe.push(crate::timings::timings_subject(name));
        subscribe.push(format!("$SRV.*.{name}"));
        subscribe.push(format!("$SRV.*.{name}.>"));
    }
    publish.sort();
    publish.dedup();
    subscribe.sort();
    subscribe.dedup();
    Permissions { publish, deny_publish: Vec::new(), subscribe }
}
