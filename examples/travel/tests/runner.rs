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
}
