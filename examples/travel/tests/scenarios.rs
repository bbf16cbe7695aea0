//! The trip saga end to end on a real nats-server, with SQLite stores:
//! confirmed, refused at the last step (everything given back), and failed
//! by its deadline while a step is down (what that step books late is given
//! back when it comes up).

use std::time::{Duration, Instant};

use jetsaga_tests::nats::NatsServer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use travel_saga::{Trip, TripStatus};

/// A runtime hosting some of the saga's functions.
struct Hosted {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn host(server: &NatsServer, dir: &std::path::Path, names: &[&str], deadline: Duration) -> Hosted {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut runtime = jetsaga_jetstream::Runtime::new(server.connect().await, travel_saga::runtime_config());
    for engine in travel_saga::engines(dir, &names, deadline).await.unwrap() {
        runtime = runtime.with(engine);
    }
    let ready = runtime.readiness();
    let cancel = CancellationToken::new();
    let shutdown = cancel.clone();
    let task = tokio::spawn(async move { runtime.run(shutdown.cancelled_owned()).await.unwrap() });
    let started = Instant::now();
    while !ready.is_ready() {
        assert!(started.elapsed() < Duration::from_secs(30), "the runtime did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Hosted { cancel, task }
}

impl Hosted {
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

/// Sends a request and returns the JSON answer (an error answer panics).
async fn request(nats: &async_nats::Client, subject: &str, body: Value) -> Value {
    let answer = nats.request(subject.to_string(), body.to_string().into()).await.unwrap();
    let error = answer.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.to_string());
    let value: Value = serde_json::from_slice(&answer.payload).unwrap_or(Value::Null);
    assert!(error.is_none(), "{subject} answered {error:?}: {value}");
    value
}

async fn free(nats: &async_nats::Client, domain: &str, resource: &str) -> u64 {
    request(nats, &format!("{domain}.query.free"), json!({"resource": resource})).await["free"].as_u64().unwrap()
}

async fn seed(nats: &async_nats::Client, with_cars: bool) {
    request(nats, "flights.cmd.add_seats", json!({"resource": "LH-400", "count": 5})).await;
    request(nats, "hotels.cmd.add_rooms", json!({"resource": "h-harbour", "count": 5})).await;
    if with_cars {
        request(nats, "cars.cmd.add_cars", json!({"resource": "car-jfk", "count": 5})).await;
    }
}

async fn book(nats: &async_nats::Client, trip_id: &str, car: &str) {
    let itinerary = json!({"flight": "LH-400", "hotel": "h-harbour", "car": car, "nights": 3});
    request(nats, "trips.cmd.book", json!({"trip_id": trip_id, "traveler": "ada", "itinerary": itinerary})).await;
}

/// The trip once it has ended.
async fn ended(nats: &async_nats::Client, trip_id: &str) -> Trip {
    let started = Instant::now();
    loop {
        let trip: Trip =
            serde_json::from_value(request(nats, "trips.query.get", json!({"trip_id": trip_id})).await).unwrap();
        if trip.status != TripStatus::Pending {
            return trip;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{trip_id} did not end: {trip:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `free` of a resource is `expected`.
async fn expect_free(nats: &async_nats::Client, domain: &str, resource: &str, expected: u64) {
    let started = Instant::now();
    loop {
        let now = free(nats, domain, resource).await;
        if now == expected {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{domain} {resource}: {now} free, expected {expected}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_is_booked_whole_or_given_back_whole() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let hosted = host(&server, dir.path(), &[], Duration::from_secs(60)).await;
    let nats = server.connect().await;
    seed(&nats, true).await;

    // Confirmed: one of each is kept.
    book(&nats, "t-1", "car-jfk").await;
    let trip = ended(&nats, "t-1").await;
    assert_eq!((trip.status, trip.reason), (TripStatus::Confirmed, None));
    expect_free(&nats, "flights", "LH-400", 4).await;
    expect_free(&nats, "hotels", "h-harbour", 4).await;
    expect_free(&nats, "cars", "car-jfk", 4).await;

    // The same booking again changes nothing.
    book(&nats, "t-1", "car-jfk").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    expect_free(&nats, "flights", "LH-400", 4).await;

    // No car at that site: the flight and the room held for it are given back.
    book(&nats, "t-2", "car-nowhere").await;
    let trip = ended(&nats, "t-2").await;
    assert_eq!(trip.status, TripStatus::Failed);
    assert_eq!(trip.reason.as_deref(), Some("car: nothing left of car-nowhere"));
    expect_free(&nats, "flights", "LH-400", 4).await;
    expect_free(&nats, "hotels", "h-harbour", 4).await;

    // A booking the trip function cannot read is refused, and nothing is held.
    let bad = nats
        .request(
            "trips.cmd.book",
            json!({"trip_id": "t-3", "traveler": "ada", "itinerary": {"flight": ""}}).to_string().into(),
        )
        .await
        .unwrap();
    assert!(bad.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).is_some(), "{bad:?}");
    hosted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trip_fails_at_its_deadline_and_a_late_booking_is_given_back() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let deadline = Duration::from_secs(2);
    let nats = server.connect().await;
    // Cars to book, then the car step goes down: the trip waits for it until its deadline.
    let cars = host(&server, dir.path(), &["cars"], deadline).await;
    request(&nats, "cars.cmd.add_cars", json!({"resource": "car-jfk", "count": 5})).await;
    cars.stop().await;
    let hosted = host(&server, dir.path(), &["trip", "flights", "hotels"], deadline).await;
    seed(&nats, false).await;
    book(&nats, "t-late", "car-jfk").await;
    let trip = ended(&nats, "t-late").await;
    assert_eq!(trip.status, TripStatus::Failed);
    assert_eq!(trip.reason.as_deref(), Some("not booked within 2s"));
    expect_free(&nats, "flights", "LH-400", 5).await;
    expect_free(&nats, "hotels", "h-harbour", 5).await;

    // The car step comes up: it sees the hotel's booking first, holds a car,
    // then the trip's failure, and gives the car back.
    let cars = host(&server, dir.path(), &["cars"], deadline).await;
    expect_free(&nats, "cars", "car-jfk", 5).await;
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js.get_stream("TRAVEL").await.unwrap();
    let mut booked = stream.info_with_subjects("cars.evt.booked").await.unwrap();
    use futures::StreamExt;
    let (_, count) = booked.next().await.expect("the late car was booked").unwrap();
    assert_eq!(count, 1);
    let trip: Trip =
        serde_json::from_value(request(&nats, "trips.query.get", json!({"trip_id": "t-late"})).await).unwrap();
    assert_eq!(trip.status, TripStatus::Failed, "a late car does not revive the trip");
    cars.stop().await;
    hosted.stop().await;
}

/// The trip saga and the shop on one NATS account: each provisions its
/// own four streams (none captures the other's subjects), and each one's
/// dead letters go to its own dead-letter stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trip_saga_shares_a_nats_server_with_the_shop() {
    use jetsaga_local::saga::{SagaOptions, StoreConfig};
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let options = SagaOptions::default();
    let shop_names: Vec<String> = options.names().iter().map(|n| n.to_string()).collect();
    let mut shop =
        jetsaga_jetstream::Runtime::new(server.connect().await, jetsaga_local::saga::runtime_config(&options));
    let shop_stores = StoreConfig::sqlite(dir.path().join("shop"));
    for engine in jetsaga_local::saga::engines(&shop_stores, &shop_names, &options).await.unwrap() {
        shop = shop.with(engine);
    }
    shop.provision().await.expect("the shop provisions beside nothing");
    let hosted = host(&server, &dir.path().join("travel"), &[], Duration::from_secs(60)).await;
    let nats = server.connect().await;
    seed(&nats, true).await;
    book(&nats, "t-1", "car-jfk").await;
    assert_eq!(ended(&nats, "t-1").await.status, TripStatus::Confirmed);
    // The shop provisions again beside the trip saga (as every process of it does at start).
    shop.provision().await.expect("the shop provisions beside the trip saga");

    let js = async_nats::jetstream::new(nats.clone());
    let subjects = |name: &'static str| {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream(name).await.unwrap();
            let mut subjects = stream.info().await.unwrap().config.subjects.clone();
            subjects.sort();
            subjects
        }
    };
    assert_eq!(subjects("TRAVEL_DLQ").await, ["$JETSAGA.DLQ.TRAVEL.>"]);
    assert_eq!(subjects("TRAVEL_CLAIMS").await, ["$JETSAGA.CLAIM.TRAVEL.*.*"]);
    assert_eq!(subjects("DLQ").await, ["dlq.>"], "the shop's dead-letter stream is as it always was");
    assert_eq!(subjects("CLAIMS").await, ["$JETSAGA.CLAIM.*.*"], "the shop's claim stream is as it always was");
    // A letter of the trip saga lands in its own dead-letter stream, not the shop's.
    let config = travel_saga::runtime_config();
    js.publish(config.dlq_subject("trip"), "x".into()).await.unwrap().await.unwrap();
    assert_eq!(js.get_stream("TRAVEL_DLQ").await.unwrap().info().await.unwrap().state.messages, 1);
    assert_eq!(js.get_stream("DLQ").await.unwrap().info().await.unwrap().state.messages, 0);
    hosted.stop().await;
}
