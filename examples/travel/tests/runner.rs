//! The trip saga's own binary, as a user runs it: `travel up` starts a
//! nats-server and every function, `travel trace` and `travel status`
//! read what happened, and `travel chaos` kills processes and the server
//! while trips run, then finds nothing lost, doubled or held.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn travel() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_travel"));
    command.env_remove("NATS_URL").env("NO_COLOR", "1");
    command
}

fn output(args: &[&str], dir: &std::path::Path) -> (bool, String) {
    let out = travel().arg("--data-dir").arg(dir).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `travel nats-accounts` with each user's password `<user>-secret`.
fn accounts_with_passwords() -> String {
    let accounts = travel().arg("nats-accounts").output().unwrap();
    assert!(accounts.status.success());
    let mut config = String::from_utf8(accounts.stdout).unwrap();
    while let Some(start) = config.find("$JETSAGA_") {
        let end = start + config[start..].find("_PASSWORD").expect("a password variable") + "_PASSWORD".len();
        let user = config[start + "$JETSAGA_".len()..end - "_PASSWORD".len()].to_lowercase();
        config.replace_range(start..end, &format!("\"{user}-secret\""));
    }
    config
}

fn password(user: &str) -> String {
    format!("{user}-secret")
}

async fn request(nats: &async_nats::Client, subject: &str, body: Value) -> Value {
    let answer = nats.request(subject.to_string(), body.to_string().into()).await.unwrap();
    serde_json::from_slice(&answer.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn travel_up_then_trace_status_and_dlq_show_a_booked_trip() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut up = travel()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["up", "--nats-port", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let banner = lines.next().expect("travel up prints a banner").unwrap();
    assert!(banner.starts_with("travel is up: trip, flights, hotels, cars on nats://127.0.0.1:"), "{banner}");
    let url = std::fs::read_to_string(dir.path().join("nats.url")).unwrap();
    assert_eq!(url, format!("nats://127.0.0.1:{port}"));
    let printed =
        std::thread::spawn(move || lines.map_while(Result::ok).take_while(|l| !l.contains("CONFIRMED")).count());

    let nats = async_nats::connect(url.as_str()).await.unwrap();
    for (subject, resource) in
        [("flights.cmd.add_seats", "LH-400"), ("hotels.cmd.add_rooms", "h-harbour"), ("cars.cmd.add_cars", "car-jfk")]
    {
        request(&nats, subject, json!({"resource": resource, "count": 2})).await;
    }
    let itinerary = json!({"flight": "LH-400", "hotel": "h-harbour", "car": "car-jfk", "nights": 3});
    request(&nats, "trips.cmd.book", json!({"trip_id": "t-1", "traveler": "ada", "itinerary": itinerary})).await;
    let started = Instant::now();
    while request(&nats, "trips.query.get", json!({"trip_id": "t-1"})).await["status"] != "confirmed" {
        assert!(started.elapsed() < Duration::from_secs(30), "t-1 was not confirmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `up` printed the flow as it happened, up to the confirmation.
    assert!(printed.join().unwrap() >= 4, "travel up printed fewer lines than the trip's events");

    let (ok, trace) = output(&["trace", "t-1"], dir.path());
    assert!(ok, "{trace}");
    for line in
        ["requested: flight LH-400", "flight LH-400 booked", "hotel h-harbour booked", "car booked", "CONFIRMED"]
    {
        assert!(trace.contains(line), "the trace lacks {line:?}:\n{trace}");
    }
    let (ok, status) = output(&["status"], dir.path());
    assert!(ok, "{status}");
    assert!(status.contains("stream TRAVEL:") && status.contains("dead letters: 0"), "{status}");
    let (ok, dlq) = output(&["dlq", "list"], dir.path());
    assert!(ok && dlq.contains("the dead-letter queue is empty"), "{dlq}");
    let (ok, unknown) = output(&["trace", "t-404"], dir.path());
    assert!(!ok && unknown.contains("no events of saga \"t-404\" in the stream TRAVEL"), "{unknown}");

    // Ctrl-C (SIGINT) stops it, the server with it.
    let _ = Command::new("kill").arg("-INT").arg(up.id().to_string()).status();
    let stopped = Instant::now();
    while up.try_wait().unwrap().is_none() {
        assert!(stopped.elapsed() < Duration::from_secs(30), "travel up did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn travel_run_names_the_functions_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = output(&["--nats-url", "nats://127.0.0.1:1", "run", "--function", "boats"], dir.path());
    assert!(!ok, "{text}");
    assert!(
        text.contains("no function \"boats\" in the travel saga: choose from trip, flights, hotels, cars"),
        "{text}"
    );
}

#[test]
fn travel_chaos_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("chaos.json");
    let out = travel()
        .args(["chaos", "--sagas", "150", "--rate", "40", "--seed", "29", "--fault-every", "700ms", "--json"])
        .arg(&report)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "travel chaos failed ({:?}):\n{text}", out.status.code());
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["findings"], json!([]), "{text}");
    assert_eq!(report["accepted"], 150, "{text}");
    // Both ends happen under this workload, and the faults really struck.
    let outcomes = &report["outcomes"];
    let ended =
        outcomes["trips.evt.confirmed"].as_u64().unwrap_or(0) + outcomes["trips.evt.failed"].as_u64().unwrap_or(0);
    assert_eq!(ended, 150, "{text}");
    assert!(
        outcomes["trips.evt.confirmed"].as_u64() > Some(0) && outcomes["trips.evt.failed"].as_u64() > Some(0),
        "{text}"
    );
    assert!(report["faults"]["kill"].as_u64() > Some(0) && report["faults"]["server"].as_u64() > Some(0), "{text}");
}

#[test]
fn travel_bench_measures_every_trip_against_raw_jetstream() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bench.json");
    let out = travel().args(["bench", "--sagas", "200", "--window", "32", "--json"]).arg(&report).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "travel bench failed:\n{text}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["ended"], 200, "{text}");
    // Each trip is at least requested, one step's answer and its end.
    assert!(report["messages_per_saga"].as_f64().unwrap() >= 3.0, "{text}");
    let ratio = report["ratio_to_raw"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 1.0, "a saga cannot beat raw JetStream carrying its messages: {text}");
    let latency = &report["latency"];
    assert!(latency["p50_ms"].as_f64() <= latency["p99_ms"].as_f64(), "{text}");
    assert!(text.contains("ratio to raw:"), "{text}");
    // The targets, against a raw chain of as many hops as a trip has messages.
    let targets = &report["targets"];
    // A trip's path: its command, then requested, flight, hotel, car, confirmed (or fewer when refused).
    let hops = targets["hops"].as_u64().unwrap();
    assert!((3..=6).contains(&hops), "{hops} hops from a trip's command to its end: {text}");
    let chain = targets["raw_chain"]["p50_ms"].as_f64().unwrap();
    assert!(chain > 0.0, "no raw chain of {hops} hops measured: {text}");
    let p50_ratio = targets["p50_ratio"].as_f64().unwrap();
    assert!((p50_ratio - latency["p50_ms"].as_f64().unwrap() / chain).abs() < 1e-6, "{text}");
    assert!(text.contains(">= 50%") && text.contains("(judged at --rate 500)"), "{text}");
}

/// `travel nats-accounts` gives each function a NATS user with exactly its
/// subjects: the saga runs with every function as its own user (after
/// `travel provision` as `admin`), and a function refused what another's
/// declarations allow is refused by the server.
#[tokio::test(flavor = "multi_thread")]
async fn each_travel_function_runs_as_its_own_nats_user_with_only_its_subjects() {
    let users = ["admin", "trip", "flights", "hotels", "cars"];
    let config = accounts_with_passwords();
    assert!(config.starts_with("accounts {\n  TRAVEL {"), "{config}");
    for user in users.iter().chain(&["bridge"]) {
        assert!(config.contains(&format!("user: \"{user}\"")), "no NATS user {user}: {config}");
    }
    let server = jetsaga_tests::nats::NatsServer::start_with_config(&config);
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let as_user = |user: &str| {
        let mut command = travel();
        command.env("NATS_USER", user).env("NATS_PASSWORD", password(user)).arg("--nats-url").arg(&url);
        command.arg("--data-dir").arg(dir.path());
        command
    };
    let provisioned = as_user("admin").arg("provision").output().unwrap();
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));
    let mut functions = Processes(Vec::new());
    for name in &users[1..] {
        let child = as_user(name)
            .args(["run", "--function", name, "--no-provision", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        functions.0.push(child);
    }
    let connect = |user: &'static str| {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
            .custom_inbox_prefix(jetsaga_jetstream::service::inbox_prefix(user))
            .connect(url.clone())
    };
    let admin = connect("admin").await.unwrap();
    jetsaga_runner::connect::wait_for_functions(
        &admin,
        &users[1..].iter().map(|u| u.to_string()).collect::<Vec<_>>(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    for (subject, resource) in
        [("flights.cmd.add_seats", "LH-400"), ("hotels.cmd.add_rooms", "h-harbour"), ("cars.cmd.add_cars", "car-jfk")]
    {
        request(&admin, subject, json!({"resource": resource, "count": 2})).await;
    }
    let itinerary = json!({"flight": "LH-400", "hotel": "h-harbour", "car": "car-jfk", "nights": 3});
    request(&admin, "trips.cmd.book", json!({"trip_id": "t-1", "traveler": "ada", "itinerary": itinerary})).await;
    let started = Instant::now();
    while request(&admin, "trips.query.get", json!({"trip_id": "t-1"})).await["status"] != "confirmed" {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "t-1 was not confirmed with every function as its own user"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // What the trip may do, the flights step may not: confirm a trip, read the trip's consumer.
    let refused = |result: Result<Result<(), String>, tokio::time::error::Elapsed>| !matches!(result, Ok(Ok(())));
    const WITHIN: Duration = Duration::from_secs(3);
    let trip = connect("trip").await.unwrap();
    let flights = connect("flights").await.unwrap();
    // The JetStream API as the runtime asks it (a stream lookup is more than a function may do).
    let consumer_info = |nats: async_nats::Client| async move {
        let answer = nats.request("$JS.API.CONSUMER.INFO.TRAVEL.trip", "".into()).await.map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_slice(&answer.payload).map_err(|e| e.to_string())?;
        if answer["error"].is_null() { Ok(()) } else { Err(answer["error"].to_string()) }
    };
    assert!(
        !refused(tokio::time::timeout(WITHIN, consumer_info(trip.clone())).await),
        "the trip reads its own consumer"
    );
    assert!(
        refused(tokio::time::timeout(WITHIN, consumer_info(flights.clone())).await),
        "flights read the trip's consumer"
    );
    let confirm = |js: async_nats::jetstream::Context| async move {
        let ack = js.publish("trips.evt.confirmed", "{}".into()).await.map_err(|e| e.to_string())?;
        ack.await.map(|_| ()).map_err(|e| e.to_string())
    };
    assert!(
        refused(tokio::time::timeout(WITHIN, confirm(async_nats::jetstream::new(flights))).await),
        "flights confirmed a trip"
    );
    drop(functions);
}

/// Child processes stopped when dropped, also when a test fails.
struct Processes(Vec<std::process::Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The trip saga on the Lambda path, as on AWS: the `travel` binary is each
/// function's bootstrap under cargo-lambda's emulator (storing in DynamoDB,
/// moto's server here), and `travel bridge` feeds them from JetStream.
#[tokio::test(flavor = "multi_thread")]
async fn travel_runs_as_lambda_bootstraps_fed_by_its_bridge() {
    // The bridge as on AWS: its own NATS user (`travel nats-accounts`),
    // binding to what an administrator provisioned.
    let server = jetsaga_tests::nats::NatsServer::start_with_config(&accounts_with_passwords());
    let as_user = |user: &str| {
        let mut command = travel();
        command.env("NATS_USER", user).env("NATS_PASSWORD", password(user)).arg("--nats-url").arg(server.url());
        command
    };
    let provisioned = as_user("admin").arg("provision").output().unwrap();
    assert!(provisioned.status.success(), "{}", String::from_utf8_lossy(&provisioned.stderr));
    let names: Vec<String> = ["trip", "flights", "hotels", "cars"].map(String::from).to_vec();
    let bootstrap = std::path::PathBuf::from(env!("CARGO_BIN_EXE_travel"));
    let env = vec![("TRAVEL_DEADLINE".to_string(), "60s".to_string())];
    let mut lambda = jetsaga_runner::lambda_local::LambdaLocal::start(bootstrap, &names, env, None, "travel-")
        .unwrap_or_else(|e| panic!("{e}"));
    for name in &names {
        lambda.spawn(name).unwrap();
    }
    let bridge = as_user("bridge")
        .args(["bridge", "--lambda-endpoint", &lambda.invoke_url, "--invoke-timeout", "10s", "--no-provision"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _bridge = Processes(vec![bridge]);
    let nats = async_nats::ConnectOptions::with_user_and_password("admin".into(), password("admin"))
        .connect(server.url())
        .await
        .unwrap();
    jetsaga_runner::connect::wait_for_functions(&nats, &names, Duration::from_secs(90)).await.unwrap();
    for (subject, resource) in
        [("flights.cmd.add_seats", "LH-400"), ("hotels.cmd.add_rooms", "h-harbour"), ("cars.cmd.add_cars", "car-jfk")]
    {
        request(&nats, subject, json!({"resource": resource, "count": 2})).await;
    }
    let itinerary = json!({"flight": "LH-400", "hotel": "h-harbour", "car": "car-nowhere", "nights": 3});
    request(&nats, "trips.cmd.book", json!({"trip_id": "t-refused", "traveler": "ada", "itinerary": itinerary})).await;
    let itinerary = json!({"flight": "LH-400", "hotel": "h-harbour", "car": "car-jfk", "nights": 3});
    request(&nats, "trips.cmd.book", json!({"trip_id": "t-1", "traveler": "ada", "itinerary": itinerary})).await;
    let started = Instant::now();
    for (trip, status) in [("t-1", "confirmed"), ("t-refused", "failed")] {
        while request(&nats, "trips.query.get", json!({"trip_id": trip})).await["status"] != status {
            assert!(started.elapsed() < Duration::from_secs(60), "{trip} did not end {status} on Lambda");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The refused trip's seat and room came back; the confirmed one keeps one of each.
    let started = Instant::now();
    while request(&nats, "flights.query.free", json!({"resource": "LH-400"})).await["free"] != 1
        || request(&nats, "hotels.query.free", json!({"resource": "h-harbour"})).await["free"] != 1
    {
        assert!(started.elapsed() < Duration::from_secs(30), "the refused trip's seat and room did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the bridge may not do: manage the streams, or speak for a function as an event.
    let bridge = async_nats::ConnectOptions::with_user_and_password("bridge".into(), password("bridge"))
        .custom_inbox_prefix(jetsaga_jetstream::service::inbox_prefix("bridge"))
        .connect(server.url())
        .await
        .unwrap();
    let deleted =
        tokio::time::timeout(Duration::from_secs(3), bridge.request("$JS.API.STREAM.DELETE.TRAVEL", "".into())).await;
    assert!(!matches!(deleted, Ok(Ok(_))), "the bridge deleted the saga's stream");
    let info = async_nats::jetstream::new(nats.clone()).get_stream("TRAVEL").await;
    assert!(info.is_ok(), "the saga's stream is gone");
}

/// `travel chaos` with every function's state in PostgreSQL (a schema
/// each, shared by its copies, dropped after the run).
#[test]
fn travel_chaos_on_postgres_loses_and_doubles_nothing() {
    let url = jetsaga_tests::saga::database_url();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("chaos.json");
    let out = travel()
        .args([
            "chaos",
            "--store",
            "postgres",
            "--database-url",
            &url,
            "--sagas",
            "120",
            "--rate",
            "40",
            "--seed",
            "31",
        ])
        .args(["--fault-every", "700ms", "--json"])
        .arg(&report)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "travel chaos on PostgreSQL failed ({:?}):\n{text}", out.status.code());
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!((report["findings"].clone(), report["accepted"].clone()), (json!([]), json!(120)), "{text}");
    assert!(text.contains("PostgreSQL stores"), "{text}");
    assert!(report["faults"]["server"].as_u64() > Some(0), "{text}");
}
