//! The whole order saga against a real nats-server, for end-to-end tests:
//! functions hosted by in-process runtimes (several, to host subsets and
//! start steps late), stores on SQLite or PostgreSQL, and a client that
//! speaks only the wire contract.

use std::time::Duration;

use async_nats::jetstream;
use jetsaga_events::SagaMode;
use jetsaga_events::{Envelope, OrderItem, OrderView};
use jetsaga_jetstream::Runtime;
use jetsaga_local::client::Client;
use jetsaga_local::saga::{SagaOptions, StoreConfig};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::nats::NatsServer;
use crate::stream::{messages, wait_until};
use jetsaga_lambda::invoker::LambdaProcessor;
use jetsaga_local::lambda_local::{LambdaLocal, function_name};

/// Where the functions run and store.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// In-process, SQLite files in a temporary directory.
    Sqlite,
    /// In-process, schemas with a unique prefix in the PostgreSQL at
    /// `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
    Postgres,
    /// Each function the real Lambda bootstrap (the binary at this path)
    /// under the runtime emulator, storing in DynamoDB (moto), fed by the bridge.
    Lambda(&'static str),
}

/// What a scenario runs on.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Store backend.
    pub backend: Backend,
    /// Choreographed or orchestrated.
    pub mode: SagaMode,
}

/// How long a saga may take in tests before we call it stuck.
pub const SETTLE: Duration = Duration::from_secs(30);

/// A running saga.
#[derive(Debug)]
pub struct Saga {
    /// The server.
    pub server: NatsServer,
    /// A client speaking the wire contract.
    pub client: Client,
    /// JetStream on the same connection.
    pub js: jetstream::Context,
    hosting: Hosting,
    options: SagaOptions,
    runtimes: Vec<(CancellationToken, JoinHandle<()>)>,
    _dir: TempDir,
}

/// The PostgreSQL URL tests use.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Where the functions live.
#[derive(Debug)]
enum Hosting {
    Local(StoreConfig),
    Lambda(Box<LambdaLocal>),
}

impl Saga {
    /// Starts a server and every function. The scenarios send hundreds of
    /// orders for a few customers at once: no per-customer limit.
    pub async fn start(setup: Setup) -> Self {
        let options = SagaOptions {
            mode: setup.mode,
            order_limits: jetsaga_local::saga::OrderLimits::UNLIMITED,
            ..SagaOptions::default()
        };
        Self::start_with(setup.backend, &options.names(), options).await
    }

    /// Starts a server and only `functions`, configured by `options`.
    pub async fn start_with(backend: Backend, functions: &[&str], options: SagaOptions) -> Self {
        crate::init_tracing();
        let server = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let hosting = match backend {
            Backend::Sqlite => Hosting::Local(StoreConfig::sqlite(dir.path())),
            Backend::Postgres => Hosting::Local(StoreConfig::Postgres {
                url: database_url(),
                schema_prefix: format!("t_{}_", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            }),
            Backend::Lambda(bootstrap) => {
                let prefix = format!("t{}-", &uuid::Uuid::new_v4().simple().to_string()[..10]);
                Hosting::Lambda(Box::new(
                    jetsaga_local::lambda_local::start(bootstrap.into(), &options, None, &prefix)
                        .unwrap_or_else(|e| panic!("{e}")),
                ))
            }
        };
        let nats = server.connect().await;
        let client = Client::new(nats.clone(), server.url());
        let js = jetstream::new(nats);
        let mut saga = Self { server, client, js, hosting, options, runtimes: Vec::new(), _dir: dir };
        saga.host(functions).await;
        saga
    }

    /// The saga's functions in its mode.
    pub fn functions(&self) -> Vec<&'static str> {
        self.options.names()
    }

    /// Starts another runtime (its own connection) hosting `functions`.
    pub async fn host(&mut self, functions: &[&str]) {
        let names: Vec<String> = functions.iter().map(|s| s.to_string()).collect();
        let config = jetsaga_local::saga::runtime_config(&self.options);
        // Every runtime answers the operations, as `jetsaga up` and the bridge do.
        let mut runtime = Runtime::new(self.server.connect().await, config).serving_operations();
        match &mut self.hosting {
            Hosting::Local(stores) => {
                let engines = jetsaga_local::saga::engines(stores, &names, &self.options).await.unwrap_or_else(|e| {
                    panic!("{e}\n(PostgreSQL tests need a server at DATABASE_URL or 127.0.0.1:5432; scripts/setup starts it)")
                });
                for engine in engines {
                    runtime = runtime.with(engine);
                }
            }
            Hosting::Lambda(local) => {
                // The bridge: the same runtime, invoking the functions' Lambdas.
                let client = LambdaProcessor::client(Some(&local.invoke_url)).await;
                for name in &names {
                    local.spawn(name).unwrap_or_else(|e| panic!("{e}"));
                    let spec = self.options.function(name).unwrap().spec();
                    runtime = runtime.with(LambdaProcessor::new(spec, client.clone(), function_name(name)));
                }
            }
        }
        let cancel = CancellationToken::new();
        let shutdown = cancel.clone();
        let task = tokio::spawn(async move { runtime.run(shutdown.cancelled_owned()).await.unwrap() });
        self.client.wait_for_services(&names, SETTLE).await.unwrap();
        self.runtimes.push((cancel, task));
    }

    /// Creates or replaces a product.
    pub async fn product(&self, id: &str, price_cents: u64, stock: u32) {
        let upsert = jetsaga_events::UpsertProduct { product_id: id.into(), name: id.into(), price_cents, stock };
        self.client.command(jetsaga_events::subjects::INVENTORY_CMD_UPSERT_PRODUCT, &upsert).await.unwrap();
    }

    /// Creates a customer.
    pub async fn customer(&self, id: &str, credit_limit_cents: u64) {
        let create = jetsaga_events::CreateCustomer { customer_id: id.into(), name: id.into(), credit_limit_cents };
        self.client.command(jetsaga_events::subjects::CUSTOMERS_CMD_CREATE, &create).await.unwrap();
    }

    /// Places an order and returns its id.
    pub async fn order(&self, customer: &str, items: &[(&str, u32)]) -> String {
        self.order_with_id(None, customer, items).await
    }

    /// Places an order with a client-chosen id (or none) and returns its id.
    pub async fn order_with_id(&self, order_id: Option<&str>, customer: &str, items: &[(&str, u32)]) -> String {
        let create = jetsaga_events::CreateOrder {
            order_id: order_id.map(str::to_string),
            customer_id: customer.into(),
            items: items.iter().map(|(p, q)| OrderItem { product_id: p.to_string(), quantity: *q }).collect(),
        };
        let reply = self.client.command(jetsaga_events::subjects::ORDERS_CMD_CREATE, &create).await.unwrap();
        reply["order_id"].as_str().expect("the reply names the order").to_string()
    }

    /// Waits for the order's terminal state.
    pub async fn finish(&self, order_id: &str) -> OrderView {
        self.client.wait_terminal(order_id, SETTLE).await.unwrap()
    }

    /// Available and reserved units of a product.
    pub async fn stock(&self, product_id: &str) -> (u32, u32) {
        let list = self.client.products().await.unwrap();
        let p = list.products.iter().find(|p| p.product_id == product_id).expect("product exists");
        (p.stock, p.reserved)
    }

    /// Credit in use by a customer.
    pub async fn used_credit(&self, customer_id: &str) -> u64 {
        self.client.customer(customer_id).await.unwrap().used_cents
    }

    /// Waits until a product shows these available and reserved units
    /// (compensation runs after the terminal event).
    pub async fn expect_stock(&self, product_id: &str, expected: (u32, u32)) {
        wait_until(SETTLE, &format!("{product_id} to have (stock, reserved) = {expected:?}"), || async {
            self.stock(product_id).await == expected
        })
        .await;
    }

    /// Waits until a customer's used credit is `expected`.
    pub async fn expect_used_credit(&self, customer_id: &str, expected: u64) {
        wait_until(SETTLE, &format!("{customer_id} to use {expected} cents"), || async {
            self.used_credit(customer_id).await == expected
        })
        .await;
    }

    /// Waits until a customer's loyalty (points, pending points) is `expected`.
    pub async fn expect_loyalty(&self, customer_id: &str, expected: (u64, u64)) {
        wait_until(SETTLE, &format!("{customer_id} to have (points, pending) = {expected:?}"), || async {
            let request = jetsaga_events::GetLoyalty { customer_id: customer_id.into() };
            let view: jetsaga_events::LoyaltyView =
                self.client.query(jetsaga_events::subjects::LOYALTY_QUERY_GET, &request).await.unwrap();
            (view.points, view.pending_points) == expected
        })
        .await;
    }

    /// Every envelope on `subject` in the saga stream.
    pub async fn events(&self, subject: &str) -> Vec<Envelope> {
        // Whatever else a test published there (bare payloads) is no event.
        messages(&self.js, "SAGA", Some(subject))
            .await
            .iter()
            .filter_map(|m| Envelope::decode(&m.payload).ok())
            .collect()
    }

    /// Events on `subject` for one order.
    pub async fn events_for(&self, subject: &str, order_id: &str) -> Vec<Envelope> {
        self.events(subject).await.into_iter().filter(|e| e.saga_key.as_deref() == Some(order_id)).collect()
    }

    /// Stops the runtimes started so far (their functions stop answering);
    /// [`Saga::host`] starts them again.
    pub async fn stop_hosts(&mut self) {
        for (cancel, task) in self.runtimes.drain(..) {
            cancel.cancel();
            tokio::time::timeout(SETTLE, task).await.expect("runtime stops").unwrap();
        }
    }

    /// Stops every runtime, finishing in-flight work.
    pub async fn stop(self) {
        for (cancel, task) in self.runtimes {
            cancel.cancel();
            tokio::time::timeout(SETTLE, task).await.expect("runtime stops").unwrap();
        }
        if let Hosting::Local(StoreConfig::Postgres { schema_prefix, url }) = &self.hosting
            && let Ok(pool) = jetsaga_sql::connect_postgres(url, 1).await
        {
            for name in self.options.names() {
                let schema = format!("{schema_prefix}{name}");
                let _ = sqlx_drop_schema(&pool, &schema).await;
            }
        }
    }
}

async fn sqlx_drop_schema(pool: &jetsaga_sql::PgPool, schema: &str) -> Result<(), String> {
    jetsaga_sql::PostgresStore::open(pool.clone(), schema)
        .await
        .map_err(|e| e.to_string())?
        .drop_schema()
        .await
        .map_err(|e| e.to_string())
}

/// Once every named function answers: one product, one customer with ample
/// credit, and one order of it, driven to its end over the wire.
pub async fn one_order_through(client: &Client, functions: &[String]) -> OrderView {
    client.wait_for_services(functions, SETTLE).await.unwrap();
    let product =
        jetsaga_events::UpsertProduct { product_id: "p".into(), name: "P".into(), price_cents: 500, stock: 3 };
    client.command(jetsaga_events::subjects::INVENTORY_CMD_UPSERT_PRODUCT, &product).await.unwrap();
    let customer =
        jetsaga_events::CreateCustomer { customer_id: "c".into(), name: "C".into(), credit_limit_cents: 10_000 };
    client.command(jetsaga_events::subjects::CUSTOMERS_CMD_CREATE, &customer).await.unwrap();
    let order = serde_json::json!({"customer_id": "c", "items": [{"product_id": "p", "quantity": 1}]});
    let reply = client.command(jetsaga_events::subjects::ORDERS_CMD_CREATE, &order).await.unwrap();
    client.wait_terminal(reply["order_id"].as_str().expect("the reply names the order"), SETTLE).await.unwrap()
}
