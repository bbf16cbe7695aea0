//! The bridge gives up an invocation that is never answered (a Lambda
//! instance that died mid-invocation), so its worker is not held forever
//! and the batch is redelivered, never dead-lettered for it.

use std::time::{Duration, Instant};

use jetsaga_core::{FunctionSpec, Incoming, Outcome, Processor};
use jetsaga_lambda::invoker::LambdaProcessor;

/// A function that exists only as a Lambda nobody answers for.
static SPEC: FunctionSpec = FunctionSpec {
    name: "stub",
    description: "a Lambda that never answers",
    subscribes: &["orders.cmd.create"],
    accepts: &[],
    direct: &[],
    emits: &[],
    queries: &["orders.query.get"],
    key_field: None,
};

#[tokio::test]
async fn an_invocation_nobody_answers_is_given_up_as_unavailable() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = LambdaProcessor::client(Some(&url)).await;
    let processor = LambdaProcessor::new(&SPEC, client, "jetsaga-stub").with_timeout(Duration::from_millis(300));
    let create = jetsaga_events::CreateOrder {
        order_id: Some("o-1".into()),
        customer_id: "c".into(),
        items: vec![jetsaga_events::OrderItem { product_id: "p".into(), quantity: 1 }],
    };
    let started = Instant::now();
    let outcomes = processor.process(&[Incoming::new(jetsaga_core::testing::envelope_for(&create))]).await;
    assert!(started.elapsed() < Duration::from_secs(5), "given up after {:?}", started.elapsed());
    match &outcomes[..] {
        [Outcome::Unavailable(reason)] => assert!(reason.contains("timed out after 300ms"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_burst_of_invocations_reaches_the_function_only_as_many_at_a_time_as_allowed() {
    // Counts the requests that arrive and never answers them.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let arrived = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = arrived.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buffer = vec![0u8; 64 * 1024];
                if socket.read(&mut buffer).await.is_ok_and(|n| n > 0) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let client = LambdaProcessor::client(Some(&url)).await;
    let processor = LambdaProcessor::new(&SPEC, client, "jetsaga-stub")
        .with_timeout(Duration::from_millis(1500))
        .with_max_invocations(3);
    let burst: Vec<_> = (0..12)
        .map(|_| {
            let processor = processor.clone();
            tokio::spawn(async move { processor.query(jetsaga_events::subjects::ORDERS_QUERY_GET, b"{}").await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(arrived.load(std::sync::atomic::Ordering::SeqCst), 3, "only three invocations in flight at once");
    // Each one given up frees a turn for the next three.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(arrived.load(std::sync::atomic::Ordering::SeqCst), 6);
    for query in burst {
        query.abort();
    }
}
