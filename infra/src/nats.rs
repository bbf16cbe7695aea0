//! The NATS cluster configuration: an `admin` user, one user per function
//! allowed exactly its subjects, and a `bridge` user with their union.

use jetsaga_core::FunctionSpec;
use jetsaga_jetstream::permissions::{BRIDGE_USER, bridge_user, function_user, operations_user};

use crate::cloudformation::deployable;

/// The subjects a process hosting `specs` as NATS user `user` needs, and
/// nothing more ([`jetsaga_jetstream::permissions::function_user`]).
fn permissions(user: &str, specs: &[&FunctionSpec]) -> (Vec<String>, Vec<String>) {
    let permissions = function_user(user, specs, &jetsaga_jetstream::Config::default());
    (permissions.publish, permissions.subscribe)
}

/// The HTTP gateway's subjects: the commands and queries clients send
/// (every function's `accepts`, `direct` and `queries`), and the replies to
/// its own inbox prefix; and, for an order's live events, ephemeral ordered
/// consumers on the saga stream, never a function's own consumer (denied by
/// name). No event, no other stream.
fn gateway_permissions(specs: &[&FunctionSpec]) -> Permissions {
    let stream = jetsaga_jetstream::Config::default().stream;
    let mut publish: Vec<String> = specs
        .iter()
        .flat_map(|spec| spec.accepts.iter().chain(spec.direct).chain(spec.queries))
        .map(|s| s.to_string())
        .collect();
    publish.push(format!("$JS.API.STREAM.INFO.{stream}"));
    // The admin API's status and dead letters: asked of the operations service, never read itself.
    publish.extend(jetsaga_events::ops::OPS_SUBJECTS.iter().map(|s| s.to_string()));
    // `/readyz`: whether the command stream exists.
    publish.push(format!("$JS.API.STREAM.INFO.{}", jetsaga_jetstream::Config::default().command_stream));
    let consumer_apis = ["CREATE", "MSG.NEXT", "DELETE", "INFO"];
    publish.extend(consumer_apis.iter().map(|api| format!("$JS.API.CONSUMER.{api}.{stream}.>")));
    // An unnamed consumer (the server names it; a durable cannot be made this way).
    publish.push(format!("$JS.API.CONSUMER.CREATE.{stream}"));
    // A message by sequence (where a live view's history starts).
    publish.push(format!("$JS.API.DIRECT.GET.{stream}"));
    // The request limits: read and compare-and-set counters in their bucket
    // (made by `jetsaga provision`), nothing else of it.
    let bucket = jetsaga_http::limits::BUCKET;
    publish.push(format!("$JS.API.STREAM.INFO.KV_{bucket}"));
    publish.push(format!("$JS.API.DIRECT.GET.KV_{bucket}.>"));
    publish.push(format!("$JS.API.STREAM.MSG.GET.KV_{bucket}"));
    publish.push(format!("$KV.{bucket}.>"));
    publish.sort();
    publish.dedup();
    let mut deny_publish = Vec::new();
    for spec in specs {
        let recall = jetsaga_jetstream::recall::consumer_name(spec.name);
        for api in consumer_apis {
            for consumer in [spec.name, recall.as_str()] {
                deny_publish.push(format!("$JS.API.CONSUMER.{api}.{stream}.{consumer}"));
                deny_publish.push(format!("$JS.API.CONSUMER.{api}.{stream}.{consumer}.>"));
            }
        }
    }
    deny_publish.push(format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>"));
    deny_publish.sort();
    deny_publish.dedup();
    let subscribe = vec![format!("{}.>", jetsaga_jetstream::service::inbox_prefix(GATEWAY_USER))];
    Permissions { publish, deny_publish, subscribe }
}

pub use jetsaga_jetstream::permissions::Permissions;

/// The NATS user of the HTTP gateway.
pub const GATEWAY_USER: &str = "gateway";

/// The NATS user of a process that hosts only the operations service.
pub const OPS_USER: &str = "ops";

/// Every NATS user and what it may do (`None`: everything, the `admin`
/// that provisions and runs the CLI): one user per function allowed
/// exactly its subjects, a `bridge` user with the union of every
/// function's permissions, a `gateway` user for the HTTP API, and an `ops`
/// user for the operations service alone. Password users
/// ([`nats_accounts`]) and JWT users alike are made from this list.
pub fn user_permissions() -> Vec<(String, Option<Permissions>)> {
    let all = deployable();
    let mut users = vec![("admin".to_string(), None)];
    for (name, spec) in &all {
        let (publish, subscribe) = permissions(name, &[spec]);
        users.push((name.to_string(), Some(Permissions { publish, deny_publish: Vec::new(), subscribe })));
    }
    let specs: Vec<&FunctionSpec> = all.iter().map(|(_, s)| *s).collect();
    let config = jetsaga_jetstream::Config::default();
    // The bridge also hosts the operations service (status, dead letters, redrive).
    users.push((BRIDGE_USER.to_string(), Some(bridge_user(&specs, &config))));
    users.push((GATEWAY_USER.to_string(), Some(gateway_permissions(&specs))));
    let mut ops = operations_user(&specs, &config);
    ops.subscribe.insert(0, format!("{}.>", jetsaga_jetstream::service::inbox_prefix(OPS_USER)));
    users.push((OPS_USER.to_string(), Some(ops)));
    users
}

/// The `accounts` block: every user of [`user_permissions`] in the account
/// `SAGA`. Passwords come from environment variables
/// (`$JETSAGA_<USER>_PASSWORD`) when the server starts.
pub fn nats_accounts() -> String {
    jetsaga_jetstream::permissions::accounts("SAGA", &user_permissions())
}

/// Where a node finds its certificate, its key and the cluster's CA (the
/// file names of a Kubernetes TLS secret, as cert-manager writes them).
pub const TLS_DIR: &str = "/etc/nats/tls";

/// The `tls { }` block of a node: the same certificate for clients and
/// routes (it must allow server *and* client authentication, and name the
/// node's host: `nats-1`…, and the client address); `verify` asks peers
/// for a certificate of the same CA.
pub(crate) fn tls_block(dir: &str, indent: &str, verify: bool) -> String {
    let verify = if verify { format!("{indent}  verify: true\n") } else { String::new() };
    format!(
        "{indent}tls {{\n{indent}  cert_file: \"{dir}/tls.crt\"\n{indent}  key_file: \"{dir}/tls.key\"\n\
         {indent}  ca_file: \"{dir}/ca.crt\"\n{verify}{indent}  timeout: 2\n{indent}}}\n"
    )
}

/// Where a node runs: its name, its routes, where monitoring listens.
#[derive(Clone, Copy, Debug)]
pub struct NodeLayout<'a> {
    /// `server_name` (a `$VARIABLE` is read from the environment).
    pub server_name: &'a str,
    /// The cluster's route URLs (every node, itself included).
    pub routes: &'a [String],
    /// `http`: where monitoring listens.
    pub monitoring: &'a str,
}

/// One node's configuration. Secure by default: TLS for clients, routes
/// that must present a certificate of the cluster's CA (so no host can join
/// and read every subject), and a user per identity.
pub fn node_config(layout: &NodeLayout<'_>) -> String {
    let routes: String = layout.routes.iter().map(|r| format!("    {r}\n")).collect();
    format!(
        "server_name: {}\n\
         listen: 0.0.0.0:4222\n\
         http: {}\n\
         # Clients: TLS only (passwords never travel in clear).\n\
         {}\
         jetstream {{\n  store_dir: /data/jetstream\n  # fsync every write: nothing acknowledged is lost if all three nodes lose power\n  sync_interval: always\n}}\n\
         cluster {{\n  name: jetsaga\n  listen: 0.0.0.0:6222\n  # Routes: TLS, and only a node with a certificate of the cluster's CA may join.\n{}  routes: [\n{routes}  ]\n}}\n\
         {}",
        layout.server_name,
        layout.monitoring,
        tls_block(TLS_DIR, "", false),
        tls_block(TLS_DIR, "  ", true),
        nats_accounts()
    )
}

/// One node of the 3-node cluster (`NATS_NODE_NAME` picks the name; routes
/// name all three), monitoring on this host only.
pub fn nats_cluster_config() -> String {
    let routes: Vec<String> = (1..=3).map(|i| format!("nats-route://nats-{i}:6222")).collect();
    let layout = NodeLayout { server_name: "$NATS_NODE_NAME", routes: &routes, monitoring: "127.0.0.1:8222" };
    format!(
        "# jetsaga NATS cluster node. Generated by `jetsaga infra write`; do not edit.\n\
         # Three nodes nats-1..nats-3 (set NATS_NODE_NAME), JetStream replicated (streams R3:\n\
         # `jetsaga provision --replicas 3`), one user per function with exactly its subjects.\n\
         # TLS: {TLS_DIR}/{{tls.crt,tls.key,ca.crt}}; each node's certificate names its host and\n\
         # allows server and client authentication (routes present it).\n\
         # Monitoring (http) answers this host only: publish it through an authenticating proxy if needed.\n\
         # Start: JETSAGA_ADMIN_PASSWORD=... JETSAGA_ORDER_PASSWORD=... nats-server -c cluster.conf\n\
         {}",
        node_config(&layout)
    )
}

/// Every NATS user of the generated accounts: `admin`, each function,
/// `bridge`, `gateway` and `ops`.
pub fn users() -> Vec<String> {
    let mut users: Vec<String> = user_permissions().into_iter().map(|(name, _)| name).collect();
    users.sort();
    users.dedup();
    users
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_users_may_publish_only_what_their_function_emits() {
        let (_, inventory) = deployable().into_iter().find(|(n, _)| *n == "inventory").unwrap();
        let (publish, subscribe) = permissions("inventory", &[inventory]);
        assert!(publish.contains(&"inventory.evt.reserved".to_string()));
        assert!(!publish.iter().any(|s| s.starts_with("orders.")), "{publish:?}");
        assert!(publish.contains(&"$JS.ACK.SAGA.inventory.>".to_string()));
        assert!(!publish.iter().any(|s| s.contains("SAGA.order")), "{publish:?}");
        // No stream management; a consumer only to read back its own events.
        let allowed = |s: &str| {
            s == "$JS.API.STREAM.INFO.COMMANDS"
                || s == "$JS.API.STREAM.NAMES"
                || s.starts_with("$JS.API.CONSUMER.CREATE.SAGA.recall_inventory.inventory.evt.")
        };
        assert!(
            !publish.iter().any(|s| (s.contains("STREAM.") || s.contains("CONSUMER.CREATE")) && !allowed(s)),
            "{publish:?}"
        );
        assert!(publish.contains(&"$JS.API.CONSUMER.CREATE.SAGA.recall_inventory.inventory.evt.reserved".to_string()));
        assert!(subscribe.contains(&"_INBOX_inventory.>".to_string()));
        assert!(!subscribe.contains(&"_INBOX.>".to_string()));
        assert!(subscribe.contains(&"inventory.query.products".to_string()));
        assert!(subscribe.contains(&"inventory.cmd.upsert_product".to_string()));
        // Its commands are consumed from the command stream and answered.
        assert!(publish.contains(&"$JS.API.CONSUMER.MSG.NEXT.COMMANDS.inventory".to_string()));
        assert!(publish.contains(&"$JETSAGA.ANSWER.inventory.*".to_string()));
        assert!(subscribe.contains(&"$JETSAGA.ANSWER.inventory.*".to_string()));
        // A function that accepts no command has no business there.
        let (_, payment) = deployable().into_iter().find(|(n, _)| *n == "payment").unwrap();
        let (publish, subscribe) = permissions("payment", &[payment]);
        assert!(
            !publish.iter().chain(&subscribe).any(|s| s.contains("COMMANDS") || s.contains("ANSWER")),
            "{publish:?}"
        );
    }
}
