//! The `jetsaga` command line: its arguments, and which verb runs where.

mod serve;
mod shop;
mod tools;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use jetsaga_events::OrderItem;

use crate::client::Client;
use crate::{bench, bridge, inspect, up};

/// Run and inspect the jetsaga order saga on NATS JetStream.
///
/// `jetsaga up` starts everything locally (a nats-server of its own,
/// SQLite stores under .jetsaga/, demo products and customers) and prints
/// the saga flow live. The other commands talk to a running saga over NATS,
/// exactly as any other NATS client can.
#[derive(Debug, Parser)]
#[command(name = "jetsaga", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// NATS server to talk to [default: $NATS_URL, else the one `jetsaga up`
    /// started (.jetsaga/nats.url), else nats://127.0.0.1:4222]
    #[arg(long, global = true, env = "NATS_URL")]
    nats_url: Option<String>,
    /// The saga stream.
    #[arg(long, global = true, default_value = jetsaga_jetstream::streams::SAGA, hide_default_value = false)]
    stream: String,
    /// How log lines look on stderr: `text` for a terminal, or `json`, one
    /// object per line (level, target, message, fields and the spans it
    /// happened in) for a log pipeline.
    #[arg(long, global = true, env = "JETSAGA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

pub use jetsaga_runner::cli::LogFormat;

/// Starts logging to stderr in `format`; `RUST_LOG` picks what is logged
/// (by default warnings, and the runtime's and runner's own story).
pub fn init_logging(format: LogFormat) {
    jetsaga_runner::cli::init_logging(
        format,
        "warn,jetsaga_jetstream=info,jetsaga_runner=info,jetsaga_local=info,jetsaga_otel=info",
    );
}

// Parsed once at start: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Start the saga locally: nats-server, streams, every function, demo data, live flow.
    Up(up::UpArgs),
    /// Feed functions running on Lambda from JetStream (the event-source mapping).
    Bridge(bridge::BridgeArgs),
    /// Serve the HTTP API for a running saga (`jetsaga up` serves it too).
    Gateway {
        #[command(flatten)]
        http: crate::gateway::HttpArgs,
        /// Where the session signing key is kept (jwt.key) unless given otherwise.
        #[arg(long, env = "JETSAGA_DATA_DIR", default_value = ".jetsaga")]
        data_dir: PathBuf,
        /// Also serve the gateway's Prometheus metrics (what its own GET
        /// /metrics shows: requests, latency, order outcomes) at
        /// http://HOST:PORT/metrics, for a scraper kept off the public port.
        #[arg(long, value_name = "HOST:PORT", env = "JETSAGA_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Serve the operations service alone (status, dead letters, redrive:
    /// what the HTTP admin API asks), as the NATS user `ops`, where the
    /// functions run elsewhere (Kubernetes, compose).
    Ops {
        /// Which saga's functions it reports on.
        #[arg(long, value_enum, default_value_t = up::SagaKind::Choreographed)]
        saga: up::SagaKind,
        /// Serve health probes on this port: GET /healthz and /readyz.
        #[arg(long, value_name = "PORT")]
        health_port: Option<u16>,
    },
    /// Measure sagas/s and latency against the raw JetStream limit, in one run.
    Bench(bench::BenchArgs),
    /// Prove effectively-once: drive orders while killing and pausing functions
    /// and servers, then check that nothing was lost, doubled or left stuck.
    /// Exit code 1 when it finds a problem, 2 when it could not run.
    Chaos(crate::chaos::ChaosArgs),
    /// Create or update the streams and every function's consumer (a deploy
    /// step, as an administrator); functions then run with `up --no-provision`.
    Provision(up::ProvisionArgs),
    /// Create, inspect or cancel orders.
    #[command(subcommand)]
    Order(OrderCommand),
    /// List orders, newest first: every one, or those of a status or a
    /// customer, or the stuck ones (not ended and past their deadline).
    Sagas {
        /// Only orders in this status (pending, stock_reserved, credit_reserved,
        /// paid, shipped, completed, failed, canceling, canceled).
        #[arg(long)]
        status: Option<String>,
        /// Only this customer's orders.
        #[arg(long)]
        customer: Option<String>,
        /// Only orders that have not ended and are past their deadline.
        #[arg(long)]
        stuck: bool,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add the demo catalog and customers to a running saga, as `up` does
    /// when it starts (those missing only), once inventory and customer
    /// answer; as a user allowed their commands (admin).
    Seed {
        /// How many seconds to wait for the functions to answer.
        #[arg(long, default_value_t = 60)]
        wait_seconds: u64,
    },
    /// List the catalog with available and reserved stock.
    Products {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List customers with their credit, or show one.
    Customers {
        /// Show only this customer.
        customer_id: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show an order's saga from the stream, with per-step latency.
    Trace {
        /// The order.
        order_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Tail every event as it is published (never takes messages from the functions).
    Watch {
        /// Print each envelope as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Streams, consumers and dead letters at a glance.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and redrive dead letters.
    #[command(subcommand)]
    Dlq(jetsaga_runner::cli::DlqCommand),
    /// Manage users of the HTTP API.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Deployment files generated from the functions' declarations.
    #[command(subcommand)]
    Infra(InfraCommand),
    /// List the saga's functions: what each subscribes to, accepts, emits
    /// and serves (from the saga definition; no server needed).
    Functions {
        /// Which saga.
        #[arg(long, value_enum, default_value_t = up::SagaKind::Choreographed)]
        saga: up::SagaKind,
        /// Print only the names, one per line (for scripts).
        #[arg(long, conflicts_with = "json")]
        names: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Make a signed-up user an administrator (the first admin is made this way).
    GrantAdmin {
        /// The user's email address.
        email: String,
    },
    /// Make an administrator a customer again.
    RevokeAdmin {
        /// The user's email address.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum InfraCommand {
    /// Print the CloudFormation template.
    Template,
    /// Print the NATS cluster node configuration (one user per function).
    NatsConfig,
    /// Make what a deployment without a secret store needs (compose's
    /// `credentials` service runs it): a random password per NATS user in
    /// OUT/<user>/password, the server's OUT/nats/passwords.conf, and a
    /// private CA with the server's certificate (OUT/nats/tls.crt, tls.key,
    /// ca.crt; OUT/<user>/ca.crt). Keeps what exists; prints no secret.
    Credentials {
        /// The directory to write under (one subdirectory per user).
        #[arg(long)]
        out: PathBuf,
        /// Hand the files to this user id (the one the services run as).
        #[arg(long)]
        owner: Option<u32>,
        /// NATS decentralized auth instead of passwords: an operator, the
        /// accounts and a user JWT per process in OUT/<user>/user.creds
        /// (NATS_CREDS_FILE), the server's part in OUT/nats/operator.conf
        /// (include it), the keys' seeds in OUT/keys/. No certificate.
        #[arg(long)]
        jwt: bool,
        /// Also hand this directory (not its contents) to --owner: a data
        /// volume that starts out as root's (repeat for several).
        #[arg(long = "own", value_name = "DIR", requires = "owner")]
        own: Vec<PathBuf>,
    },
    /// Regenerate every generated file: infra/cloudformation.json,
    /// infra/nats/cluster.conf, infra/kubernetes/, infra/compose/.
    Write {
        /// The repository root.
        #[arg(long, default_value = ".")]
        root: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum OrderCommand {
    /// Place an order (orders.cmd.create) and print its id.
    Create {
        /// The customer.
        #[arg(long, short)]
        customer: String,
        /// A line as PRODUCT:QUANTITY (repeat for more lines).
        #[arg(long = "item", short, value_name = "PRODUCT:QUANTITY", required = true, value_parser = parse_item)]
        items: Vec<OrderItem>,
        /// Idempotency key: the same id twice makes one order.
        #[arg(long)]
        order_id: Option<String>,
        /// Wait for the order to finish and show how it ended.
        #[arg(long)]
        wait: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show an order: status, items, total, reason, timeline.
    Get {
        /// The order.
        order_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel an order that has not shipped yet.
    Cancel {
        /// The order.
        order_id: String,
        /// Why (shown in the timeline).
        #[arg(long)]
        reason: Option<String>,
        /// Wait for the order to finish and show how it ended.
        #[arg(long)]
        wait: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn parse_item(text: &str) -> Result<OrderItem, String> {
    let (product, quantity) =
        text.rsplit_once(':').ok_or_else(|| format!("expected PRODUCT:QUANTITY such as p-mouse:2, got {text:?}"))?;
    if product.is_empty() {
        return Err(format!("missing product before ':' in {text:?}"));
    }
    let quantity = quantity.parse().map_err(|_| format!("quantity must be a whole number ≥ 1, got {quantity:?}"))?;
    Ok(OrderItem { product_id: product.to_string(), quantity })
}

fn nats_url(cli: &Cli) -> String {
    if let Some(url) = &cli.nats_url {
        return url.clone();
    }
    let file = PathBuf::from(".jetsaga/nats.url");
    std::fs::read_to_string(file).map(|s| s.trim().to_string()).unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

impl Cli {
    /// The service name its spans are exported under, unless
    /// `OTEL_SERVICE_NAME` says otherwise.
    pub fn service_name(&self) -> &'static str {
        match self.command {
            Command::Bridge(_) => "jetsaga-bridge",
            Command::Gateway { .. } => "jetsaga-gateway",
            Command::Ops { .. } => "jetsaga-ops",
            _ => "jetsaga",
        }
    }

    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        let url = nats_url(&self);
        match self.command {
            Command::Up(args) => up::run(args).await,
            Command::Bridge(args) => bridge::run(args).await,
            Command::Gateway { http, data_dir, metrics_addr } => {
                serve::gateway(&url, &http, &data_dir, metrics_addr).await
            }
            Command::Ops { saga, health_port } => serve::ops(&url, saga, health_port).await,
            Command::Infra(command) => tools::infra(command),
            Command::Functions { saga, names, json } => {
                tools::functions(saga.into(), names, json);
                Ok(())
            }
            Command::Bench(args) => tools::bench(args).await,
            Command::Chaos(args) => tools::chaos(args).await,
            Command::Provision(args) => up::provision(args, &url, &self.stream).await,
            Command::Seed { wait_seconds } => shop::seed(&Client::connect(&url).await?, wait_seconds).await,
            Command::Order(command) => shop::order(&Client::connect(&url).await?, command).await,
            Command::Sagas { status, customer, stuck, limit, json } => {
                let filter = shop::SagaFilter { status, customer, stuck, limit };
                shop::sagas(&Client::connect(&url).await?, filter, json).await
            }
            Command::Products { json } => shop::products(&Client::connect(&url).await?, json).await,
            Command::Customers { customer_id, json } => {
                shop::customers(&Client::connect(&url).await?, customer_id, json).await
            }
            Command::Users(command) => shop::users(&Client::connect(&url).await?, command).await,
            Command::Trace { order_id, json } => {
                inspect::trace(&Client::connect(&url).await?, &self.stream, &order_id, json).await
            }
            Command::Watch { json } => inspect::watch(&Client::connect(&url).await?, json).await,
            Command::Status { json } => {
                let client = Client::connect(&url).await?;
                let config = jetsaga_jetstream::Config { stream: self.stream.clone(), ..Default::default() };
                jetsaga_runner::inspect::status(&client.nats, &config, Some("jetsaga sagas --stuck"), json).await
            }
            Command::Dlq(command) => {
                let client = Client::connect(&url).await?;
                let config = jetsaga_jetstream::Config::default().with_saga(crate::saga::every_spec());
                jetsaga_runner::inspect::dlq(&client.nats, &config, command).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_parse_with_clear_errors() {
        assert_eq!(parse_item("p-mouse:2").unwrap(), OrderItem { product_id: "p-mouse".into(), quantity: 2 });
        assert!(parse_item("p-mouse").unwrap_err().contains("PRODUCT:QUANTITY"));
        assert!(parse_item("p-mouse:two").unwrap_err().contains("whole number"));
        assert!(parse_item(":2").unwrap_err().contains("missing product"));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
