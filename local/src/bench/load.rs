//! The load: a catalog and a customer, then the orders (paced, or as fast
//! as a window allows), and every order's end as it happens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jetsaga_events::{Envelope, OrderItem};

use crate::client::Client;

use super::BenchArgs;

/// A product of the benchmark's catalog: id, price in cents, stock.
pub(crate) type Product = (String, u64, u32);

/// Creates five products with ample stock and one customer with ample credit.
pub(crate) async fn seed(client: &Client, orders: usize) -> anyhow::Result<Vec<Product>> {
    let products: Vec<(String, u64, u32)> =
        (1..=5).map(|i| (format!("p-bench-{i}"), 100 + i as u64 * 25, (orders * 3) as u32)).collect();
    for (id, price, stock) in &products {
        let upsert = jetsaga_events::UpsertProduct {
            product_id: id.clone(),
            name: id.clone(),
            price_cents: *price,
            stock: *stock,
        };
        client.command(jetsaga_events::subjects::INVENTORY_CMD_UPSERT_PRODUCT, &upsert).await?;
    }
    let customer = jetsaga_events::CreateCustomer {
        customer_id: "c-bench".into(),
        name: "Bench".into(),
        credit_limit_cents: jetsaga_events::limits::MAX_CREDIT_LIMIT_CENTS,
    };
    client.command(jetsaga_events::subjects::CUSTOMERS_CMD_CREATE, &customer).await?;
    Ok(products)
}

/// How the orders go in.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// `orders.cmd.create` requests over NATS, as the benchmark's customer;
    /// `keyed`: with a `Nats-Msg-Id` (the order id), as the gateway sends
    /// them (processed at once by the function's service, not through the
    /// command stream), so the two ways in compare like for like.
    Nats {
        /// Whether the command carries its own `Nats-Msg-Id`.
        keyed: bool,
    },
    /// `POST /api/orders` to the HTTP gateway, as a signed-in user.
    Http {
        /// The API's base URL.
        base: String,
        /// The user's session token.
        token: String,
        /// A pooled client (keep-alive, as a shop's backend would have).
        http: reqwest::Client,
    },
}

impl Entry {
    /// Sends the `i`th order; answers the order's id once accepted.
    async fn send(&self, client: &Client, i: usize, items: Vec<OrderItem>) -> anyhow::Result<String> {
        match self {
            Entry::Nats { keyed } => {
                let order_id = format!("b-{i}");
                let create = jetsaga_events::CreateOrder {
                    order_id: Some(order_id.clone()),
                    customer_id: "c-bench".into(),
                    items,
                };
                if *keyed {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", order_id.as_str());
                    let subject = jetsaga_events::subjects::ORDERS_CMD_CREATE;
                    let reply =
                        client.nats.request_with_headers(subject, headers, serde_json::to_vec(&create)?.into()).await?;
                    if let Some(error) = reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error")) {
                        anyhow::bail!("{subject}: {error}");
                    }
                } else {
                    client.command(jetsaga_events::subjects::ORDERS_CMD_CREATE, &create).await?;
                }
                Ok(order_id)
            }
            Entry::Http { base, token, http } => {
                let answer = http
                    .post(format!("{base}/api/orders"))
                    .bearer_auth(token)
                    .header("Idempotency-Key", format!("h-{i}"))
                    .json(&serde_json::json!({ "items": items }))
                    .send()
                    .await?;
                let status = answer.status();
                let body: serde_json::Value = answer.json().await?;
                match body["order_id"].as_str() {
                    Some(order_id) if status.is_success() => Ok(order_id.to_string()),
                    _ => anyhow::bail!("POST /api/orders answered {status}: {body}"),
                }
            }
        }
    }
}

/// What driving the orders saw.
#[derive(Debug)]
pub(crate) struct Drive {
    /// When the first order went out.
    pub(crate) start: Instant,
    /// When each order was sent.
    pub(crate) sent_at: HashMap<String, Instant>,
    /// How each order ended (completed, failed, canceled), and when.
    pub(crate) finished: HashMap<String, (String, Instant)>,
    /// Orders whose end was seen twice live.
    pub(crate) duplicates: Vec<String>,
    /// The orders that went in through HTTP (with `--http`, every other one).
    pub(crate) via_http: std::collections::HashSet<String>,
}

/// Sends `args.orders` orders, the `i`th through `entries[i % len]`, and
/// waits for their ends (or gives up after a deadline proportional to the
/// run). Interleaved, every entry sees the same load at the same time.
pub(crate) async fn drive(
    client: &Client,
    nats: &async_nats::Client,
    args: &BenchArgs,
    products: &[Product],
    entries: Vec<Entry>,
) -> anyhow::Result<Drive> {
    // Terminal events, as they happen.
    let mut terminal = nats.subscribe("orders.evt.*").await?;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Instant)>();
    tokio::spawn(async move {
        while let Some(message) = terminal.next().await {
            let kind = message.subject.as_str().rsplit('.').next().unwrap_or("").to_string();
            if matches!(kind.as_str(), "completed" | "failed" | "canceled")
                && let Ok(envelope) = Envelope::decode(&message.payload)
                && let Some(order_id) = envelope.saga_key
                && done_tx.send((order_id, kind, Instant::now())).is_err()
            {
                break;
            }
        }
    });

    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let via_http: Arc<Mutex<std::collections::HashSet<String>>> = Default::default();
    let start = Instant::now();
    let sender = {
        let client = client.clone();
        let (sent_at, via_http) = (sent_at.clone(), via_http.clone());
        let (orders, window, rate) = (args.orders, args.window, args.rate);
        let products: Vec<String> = products.iter().map(|p| p.0.clone()).collect();
        tokio::spawn(async move {
            // Each create is its own task, so it goes out the moment it is
            // due (a future parked in a set would wait until the set is polled).
            let window = Arc::new(tokio::sync::Semaphore::new(window.max(1)));
            let mut in_flight = tokio::task::JoinSet::new();
            let mut pace = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.max(1)))));
            for i in 0..orders {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                let permit = window.clone().acquire_owned().await.expect("the window is never closed");
                while in_flight.try_join_next().is_some() {}
                let items = vec![
                    OrderItem { product_id: products[i % products.len()].clone(), quantity: 1 + (i % 2) as u32 },
                    OrderItem { product_id: products[(i + 1) % products.len()].clone(), quantity: 1 },
                ];
                let entry = entries[i % entries.len()].clone();
                let (client, sent_at, via_http) = (client.clone(), sent_at.clone(), via_http.clone());
                in_flight.spawn(async move {
                    // Sent now; its id known once accepted (over HTTP, the gateway names it).
                    let sent = Instant::now();
                    let answer = entry.send(&client, i, items).await;
                    drop(permit);
                    match answer {
                        Ok(order_id) => {
                            if matches!(entry, Entry::Http { .. }) {
                                via_http.lock().unwrap().insert(order_id.clone());
                            }
                            sent_at.lock().unwrap().insert(order_id, sent);
                        }
                        Err(e) => tracing::warn!(error = %e, "an order was not accepted"),
                    }
                });
            }
            while in_flight.join_next().await.is_some() {}
        })
    };

    let mut finished: HashMap<String, (String, Instant)> = HashMap::new();
    let mut duplicates = Vec::new();
    let deadline = Duration::from_secs(60 + (args.orders / 50) as u64);
    let mut last_progress = Instant::now();
    while finished.len() < args.orders {
        match tokio::time::timeout(Duration::from_secs(5), done_rx.recv()).await {
            Ok(Some((order_id, kind, at))) => {
                if finished.insert(order_id.clone(), (kind, at)).is_some() {
                    duplicates.push(order_id);
                }
            }
            Ok(None) => break,
            Err(_) if start.elapsed() > deadline => break,
            Err(_) => {}
        }
        if last_progress.elapsed() > Duration::from_millis(250) {
            eprint!("\r  {} / {} orders finished", finished.len(), args.orders);
            last_progress = Instant::now();
        }
    }
    eprintln!("\r  {} / {} orders finished", finished.len(), args.orders);
    sender.await?;
    let sent_at = sent_at.lock().unwrap().clone();
    let via_http = via_http.lock().unwrap().clone();
    Ok(Drive { start, sent_at, finished, duplicates, via_http })
}
