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

/// A saga's NATS users: `admin` (`None`: everything, for provisioning and
/// the operator's tools) and one user per function with exactly
/// [`function_user`]'s subjects.
pub fn saga_users(specs: &[&FunctionSpec], config: &Config) -> Vec<(String, Option<Permissions>)> {
    let mut users = vec![("admin".to_string(), None)];
    users.extend(specs.iter().map(|spec| (spec.name.to_string(), Some(function_user(spec.name, &[spec], config)))));
    users
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
