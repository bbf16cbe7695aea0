//! Talking to a running saga over NATS: commands and queries by
//! request/reply, with errors that say what to do.

use std::time::Duration;

use jetsaga_events::subjects::*;
use jetsaga_events::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long a command or query may take before we give up.
const TIMEOUT: Duration = Duration::from_secs(15);

pub use jetsaga_jetstream::service::inbox_prefix;
pub use jetsaga_runner::connect::{connect_options, servers};

/// A connection to the saga.
#[derive(Clone, Debug)]
pub struct Client {
    /// The NATS connection.
    pub nats: async_nats::Client,
    url: String,
}

impl Client {
    /// Wraps a connection made to `url`.
    pub fn new(nats: async_nats::Client, url: String) -> Self {
        Self { nats, url }
    }

    /// Connects to `url`.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let nats = connect_options("jetsaga cli")?
            .connect(servers(url))
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to NATS at {url}: {e}. Is `jetsaga up` running? (NATS_URL or --nats-url picks the server)"))?;
        Ok(Self::new(nats, url.to_string()))
    }

    /// Sends a request and returns the JSON reply, turning service errors into messages.
    pub async fn request(&self, subject: &str, body: Vec<u8>) -> anyhow::Result<Value> {
        let reply = tokio::time::timeout(TIMEOUT, self.nats.request(subject.to_string(), body.into()))
            .await
            .map_err(|_| anyhow::anyhow!("no answer on {subject} within {TIMEOUT:?}"))?
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => anyhow::anyhow!(
                    "nothing answers {subject} on {}: is `jetsaga up` running (with the function that owns it)?",
                    self.url
                ),
                _ => anyhow::anyhow!("request on {subject} failed: {e}"),
            })?;
        let value: Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| anyhow::anyhow!("the reply on {subject} is not JSON: {e}"))?;
        if let Some(headers) = &reply.headers
            && let Some(code) = headers.get("Nats-Service-Error-Code")
        {
            let message = value["error"].as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
            return Err(RequestError { code: code.as_str().parse().unwrap_or(500), message }.into());
        }
        Ok(value)
    }

    /// Sends a command and returns the reply.
    pub async fn command<T: Serialize>(&self, subject: &str, body: &T) -> anyhow::Result<Value> {
        self.request(subject, serde_json::to_vec(body)?).await
    }

    /// Asks any function's query (request/reply) and decodes the reply.
    pub async fn query<T: Serialize, R: DeserializeOwned>(&self, subject: &str, body: &T) -> anyhow::Result<R> {
        let value = self.request(subject, serde_json::to_vec(body)?).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// `orders.query.get`.
    pub async fn order(&self, order_id: &str) -> anyhow::Result<OrderView> {
        self.query(ORDERS_QUERY_GET, &GetOrder { order_id: order_id.into() }).await
    }

    /// `inventory.query.products`.
    pub async fn products(&self) -> anyhow::Result<ProductList> {
        self.query(INVENTORY_QUERY_PRODUCTS, &ListProducts {}).await
    }

    /// `customers.query.list`.
    pub async fn customers(&self) -> anyhow::Result<CustomerList> {
        self.query(CUSTOMERS_QUERY_LIST, &ListCustomers {}).await
    }

    /// `customers.query.get`.
    pub async fn customer(&self, customer_id: &str) -> anyhow::Result<CustomerView> {
        self.query(CUSTOMERS_QUERY_GET, &GetCustomer { customer_id: customer_id.into() }).await
    }

    /// Waits until every named function answers and consumes its streams
    /// (provisioned and bound: a command sent from now on is kept and
    /// processed, even by `nats pub`).
    pub async fn wait_for_services(&self, names: &[String], timeout: Duration) -> anyhow::Result<()> {
        jetsaga_runner::connect::wait_for_functions(&self.nats, names, timeout).await
    }

    /// Polls an order until it reaches a terminal state.
    pub async fn wait_terminal(&self, order_id: &str, timeout: Duration) -> anyhow::Result<OrderView> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.order(order_id).await {
                Ok(view) if view.status.is_terminal() => return Ok(view),
                Ok(_) => {}
                Err(e) if e.downcast_ref::<RequestError>().is_some_and(|r| r.code == 404) => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("order {order_id} did not finish within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An error answered by a function (`Nats-Service-Error-Code`).
#[derive(Debug, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RequestError {
    /// 400 bad request, 404 not found, 422 refused, 503 try again.
    pub code: u16,
    /// What the function said.
    pub message: String,
}
