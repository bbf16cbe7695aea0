//! The `jetsaga` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use jetsaga_events::subjects::*;
use jetsaga_events::{CancelOrder, CreateOrder, OrderItem, OrderView};

use crate::client::Client;
use crate::flow::dollars;
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

fn print_order(view: &OrderView) {
    println!("order {}  {:?}", view.order_id, view.status);
    println!("  customer: {}", view.customer_id);
    for item in &view.items {
        println!("  item:     {} × {}", item.quantity, item.product_id);
    }
    if let Some(total) = view.total_cents {
        println!("  total:    {}", dollars(total));
    }
    if let Some(reason) = &view.reason {
        println!("  reason:   {reason}");
    }
    if let Some(deadline) = &view.deadline {
        println!("  deadline: {}", crate::inspect::describe_deadline(deadline, chrono::Utc::now()));
    }
    println!("  timeline:");
    for entry in &view.timeline {
        let note = entry.note.as_ref().map(|n| format!("  ({n})")).unwrap_or_default();
        println!("    {}  {}{note}", entry.at.format("%H:%M:%S%.3f"), entry.event);
    }
}

fn functions_command(mode: jetsaga_events::SagaMode, names: bool, json: bool) {
    let functions = crate::saga::SagaOptions::mode(mode).functions();
    if names {
        for function in &functions {
            println!("{}", function.spec().name);
        }
        return;
    }
    let specs: Vec<serde_json::Value> = functions
        .iter()
        .map(|f| {
            let spec = f.spec();
            serde_json::json!({
                "name": spec.name,
                "description": spec.description,
                "subscribes": spec.subscribes,
                "accepts": spec.accepts,
                "direct": spec.direct,
                "emits": spec.emits,
                "queries": spec.queries,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&specs).unwrap_or_default());
        return;
    }
    println!("the {} saga:", crate::saga::mode_name(mode));
    for spec in &specs {
        println!("\n{}: {}", spec["name"].as_str().unwrap_or(""), spec["description"].as_str().unwrap_or(""));
        for field in ["subscribes", "accepts", "direct", "emits", "queries"] {
            let subjects: Vec<&str> = spec[field].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            if !subjects.is_empty() {
                println!("  {field:<11} {}", subjects.join(", "));
            }
        }
    }
}

fn infra_command(command: InfraCommand) -> anyhow::Result<()> {
    match command {
        InfraCommand::Template => print!("{}", jetsaga_infra::files()[0].1),
        InfraCommand::NatsConfig => print!("{}", jetsaga_infra::nats_cluster_config()),
        InfraCommand::Credentials { out, owner, jwt: true, own } => {
            anyhow::ensure!(own.is_empty(), "--own goes with password credentials (compose), not with --jwt");
            let made = crate::credentials::write_decentralized(&out, owner)?;
            println!(
                "credentials in {}: {} NATS users as JWTs ({} new), operator keys {}, account SAGA is {}",
                out.display(),
                made.users,
                made.new_users,
                if made.new_operator { "made" } else { "kept" },
                made.account
            );
        }
        InfraCommand::Credentials { out, owner, jwt: false, own } => {
            let made = crate::credentials::write(&out, owner)?;
            for dir in own.iter() {
                let owner = owner.expect("clap requires --owner with --own");
                std::os::unix::fs::chown(dir, Some(owner), Some(owner))
                    .map_err(|e| anyhow::anyhow!("cannot hand {} to user {owner}: {e}", dir.display()))?;
            }
            println!(
                "credentials in {}: {} NATS users ({} new passwords), certificate {}",
                out.display(),
                made.users,
                made.new_passwords,
                if made.new_certificate { "made (a new private CA)" } else { "kept" }
            );
        }
        InfraCommand::Write { root } => {
            for (path, contents) in jetsaga_infra::files() {
                let path = root.join(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, contents)?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
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
        match self.command {
            Command::Up(args) => return up::run(args).await,
            Command::Bridge(args) => return bridge::run(args).await,
            Command::Gateway { ref http, ref data_dir, metrics_addr } => {
                let url = nats_url(&self);
                // Its NATS user (infra/nats) may read replies under its own inbox prefix only.
                let nats = crate::client::connect_options("jetsaga gateway")?
                    .custom_inbox_prefix(crate::client::inbox_prefix(jetsaga_infra::nats::GATEWAY_USER))
                    .retry_on_initial_connect()
                    .connect(crate::client::servers(&url))
                    .await?;
                let keys = crate::gateway::keys(http, data_dir)?;
                let listener = crate::gateway::bind(http).await?;
                let (served, metrics) = crate::gateway::serve(listener, nats, keys, http)?;
                if let Some(addr) = metrics_addr {
                    crate::metrics::serve_page(addr, metrics).await?;
                }
                println!("jetsaga gateway: the HTTP API at {served}/api/..., the saga at {url}; Ctrl-C stops it");
                up::shutdown_signal().await;
                return Ok(());
            }
            Command::Ops { saga, health_port } => {
                let url = nats_url(&self);
                // Its NATS user (`ops` in infra/nats) reads replies under its own inbox prefix only.
                let nats = crate::client::connect_options("jetsaga ops")?
                    .custom_inbox_prefix(crate::client::inbox_prefix(jetsaga_infra::nats::OPS_USER))
                    .retry_on_initial_connect()
                    .connect(crate::client::servers(&url))
                    .await?;
                if let Some(port) = health_port {
                    crate::health::serve(port, crate::health::Probe { nats: nats.clone(), ready: None }).await?;
                }
                let options = crate::saga::SagaOptions { mode: saga.into(), ..Default::default() };
                let cancel = tokio_util::sync::CancellationToken::new();
                let served =
                    jetsaga_jetstream::ops::serve(&nats, crate::saga::runtime_config(&options), cancel.clone())
                        .await
                        .map_err(|e| anyhow::anyhow!("cannot serve the operations: {e}"))?;
                println!("jetsaga ops: status, dead letters and redrive for {url}; Ctrl-C stops it");
                up::shutdown_signal().await;
                cancel.cancel();
                let _ = served.await;
                return Ok(());
            }
            Command::Infra(command) => return infra_command(command),
            Command::Functions { saga, names, json } => {
                functions_command(saga.into(), names, json);
                return Ok(());
            }
            Command::Bench(args) if args.bootstraps.is_some() => {
                let dir = args.bootstraps.clone().expect("checked by the guard");
                let figures = bench::measure_bootstraps(&dir, 11)?;
                println!("{:<24} {:>12} {:>16} {:>17}", "bootstrap", "bytes", "first init (ms)", "median init (ms)");
                for f in &figures {
                    println!("{:<24} {:>12} {:>16.1} {:>17.1}", f.name, f.bytes, f.first_init_ms, f.median_init_ms);
                }
                if let Some(path) = args.json {
                    std::fs::write(&path, serde_json::to_string_pretty(&figures)? + "\n")?;
                }
                return Ok(());
            }
            Command::Provision(ref args) => return up::provision(args.clone(), &nats_url(&self), &self.stream).await,
            Command::Chaos(args) => {
                let json_path = args.json.clone();
                let report = crate::chaos::run(args).await?;
                crate::chaos::print(&report);
                if let Some(path) = json_path {
                    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
                }
                if !report.tally.findings.is_empty() {
                    return Err(jetsaga_runner::chaos::Found(report.tally.findings.len()).into());
                }
                return Ok(());
            }
            Command::Bench(args) => {
                let (json_path, svg_path) = (args.json.clone(), args.svg.clone());
                let report = bench::run(args).await?;
                bench::print(&report);
                if let Some(path) = json_path {
                    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
                    println!("  json:              {}", path.display());
                }
                if let Some(path) = svg_path {
                    std::fs::write(&path, bench::svg(&report))?;
                    println!("  plot:              {}", path.display());
                }
                if !report.correct {
                    anyhow::bail!("the run lost or doubled something: {}", report.problems.join("; "));
                }
                return Ok(());
            }
            _ => {}
        }
        let client = Client::connect(&nats_url(&self)).await?;
        let print = |value: &serde_json::Value| println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        match self.command {
            Command::Up(_)
            | Command::Gateway { .. }
            | Command::Bridge(_)
            | Command::Infra(_)
            | Command::Functions { .. }
            | Command::Bench(_)
            | Command::Chaos(_)
            | Command::Provision(_)
            | Command::Ops { .. } => {
                unreachable!("handled above")
            }
            Command::Seed { wait_seconds } => {
                use jetsaga_events::subjects::{CUSTOMERS_CMD_CREATE, INVENTORY_CMD_UPSERT_PRODUCT};
                let wait = Duration::from_secs(wait_seconds);
                client.wait_for_services(&["inventory".into(), "customer".into()], wait).await?;
                up::seed(&client, &[INVENTORY_CMD_UPSERT_PRODUCT, CUSTOMERS_CMD_CREATE]).await?;
                println!("demo data: {} products, {} customers", up::DEMO_PRODUCTS.len(), up::DEMO_CUSTOMERS.len());
            }
            Command::Order(OrderCommand::Create { customer, items, order_id, wait, json }) => {
                let create = CreateOrder { order_id, customer_id: customer, items };
                let reply = client.command(ORDERS_CMD_CREATE, &create).await?;
                let id = reply["order_id"].as_str().unwrap_or_default().to_string();
                if !wait {
                    if json {
                        print(&reply)
                    } else {
                        println!("order {id} accepted")
                    }
                    return Ok(());
                }
                let view = client.wait_terminal(&id, Duration::from_secs(30)).await?;
                if json { print(&serde_json::to_value(&view)?) } else { print_order(&view) }
            }
            Command::Order(OrderCommand::Get { order_id, json }) => {
                let view = client.order(&order_id).await?;
                if json { print(&serde_json::to_value(&view)?) } else { print_order(&view) }
            }
            Command::Order(OrderCommand::Cancel { order_id, reason, wait, json }) => {
                let reply =
                    client.command(ORDERS_CMD_CANCEL, &CancelOrder { order_id: order_id.clone(), reason }).await?;
                if wait {
                    let view = client.wait_terminal(&order_id, Duration::from_secs(30)).await?;
                    if json { print(&serde_json::to_value(&view)?) } else { print_order(&view) }
                } else if json {
                    print(&reply)
                } else {
                    println!("cancel of order {order_id} requested");
                }
            }
            Command::Sagas { status, customer, stuck, limit, json } => {
                let status = status
                    .map(|s| {
                        serde_json::from_value::<jetsaga_events::OrderStatus>(serde_json::Value::String(s.clone()))
                            .map_err(|_| anyhow::anyhow!("--status {s:?}: not a status (pending, stock_reserved, credit_reserved, paid, shipped, completed, failed, canceling, canceled)"))
                    })
                    .transpose()?;
                let mut list = jetsaga_events::ListOrders {
                    customer_id: customer,
                    status,
                    limit: Some(limit),
                    past_due: stuck.then_some(true),
                    ..Default::default()
                };
                // A page ends early where filters skip many orders: go on until it is full.
                let mut page = jetsaga_events::OrderPage { orders: Vec::new(), next: None };
                loop {
                    let part: jetsaga_events::OrderPage =
                        client.query(jetsaga_events::subjects::ORDERS_QUERY_LIST, &list).await?;
                    page.orders.extend(part.orders);
                    page.next = part.next;
                    let wanted = limit as usize - page.orders.len().min(limit as usize);
                    if wanted == 0 || page.next.is_none() {
                        break;
                    }
                    list.limit = Some(wanted as u32);
                    list.after = page.next.clone();
                }
                if json {
                    print(&serde_json::to_value(&page)?);
                } else if page.orders.is_empty() {
                    println!(
                        "{}",
                        if stuck { "no stuck orders: every order waiting is within its deadline" } else { "no orders" }
                    );
                } else {
                    println!("{:<40} {:<14} {:<16} {:>10}  created", "order", "customer", "status", "total");
                    for o in &page.orders {
                        let total = o.total_cents.map(dollars).unwrap_or_default();
                        println!(
                            "{:<40} {:<14} {:<16} {:>10}  {}{}",
                            o.order_id,
                            o.customer_id,
                            serde_json::to_value(o.status)?.as_str().unwrap_or_default().to_string(),
                            total,
                            o.created_at.format("%Y-%m-%d %H:%M:%S"),
                            o.reason.as_ref().map(|r| format!("  ({r})")).unwrap_or_default()
                        );
                    }
                }
            }
            Command::Products { json } => {
                let list = client.products().await?;
                if json {
                    print(&serde_json::to_value(&list)?);
                } else {
                    println!("{:<14} {:<38} {:>10} {:>7} {:>9}", "product", "name", "price", "stock", "reserved");
                    for p in list.products {
                        println!(
                            "{:<14} {:<38} {:>10} {:>7} {:>9}",
                            p.product_id,
                            p.name,
                            dollars(p.price_cents),
                            p.stock,
                            p.reserved
                        );
                    }
                }
            }
            Command::Customers { customer_id, json } => {
                let customers = match customer_id {
                    Some(id) => vec![client.customer(&id).await?],
                    None => client.customers().await?.customers,
                };
                if json {
                    print(&serde_json::to_value(&customers)?);
                } else {
                    println!("{:<10} {:<20} {:>12} {:>12} {:>12}", "customer", "name", "limit", "used", "available");
                    for c in customers {
                        println!(
                            "{:<10} {:<20} {:>12} {:>12} {:>12}",
                            c.customer_id,
                            c.name,
                            dollars(c.credit_limit_cents),
                            dollars(c.used_cents),
                            dollars(c.available_cents)
                        );
                    }
                }
            }
            Command::Trace { order_id, json } => inspect::trace(&client, &self.stream, &order_id, json).await?,
            Command::Watch { json } => inspect::watch(&client, json).await?,
            Command::Status { json } => {
                let config = jetsaga_jetstream::Config { stream: self.stream.clone(), ..Default::default() };
                jetsaga_runner::inspect::status(&client.nats, &config, Some("jetsaga sagas --stuck"), json).await?
            }
            Command::Dlq(command) => {
                let config = jetsaga_jetstream::Config::default().with_saga(crate::saga::every_spec());
                jetsaga_runner::inspect::dlq(&client.nats, &config, command).await?
            }
            Command::Users(command) => {
                let (email, role) = match command {
                    UsersCommand::GrantAdmin { email } => (email, jetsaga_events::Role::Admin),
                    UsersCommand::RevokeAdmin { email } => (email, jetsaga_events::Role::Customer),
                };
                let set = jetsaga_events::SetRole { email: email.clone(), role };
                let reply = client.command(USERS_CMD_SET_ROLE, &set).await?;
                let changed = reply["events"].as_array().is_some_and(|e| !e.is_empty());
                let role = serde_json::to_value(role)?;
                let role = role.as_str().unwrap_or("");
                println!("{email} {} {role}", if changed { "is now" } else { "already was" });
            }
        }
        Ok(())
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
