//! Metrics a deployment's alarms read from log lines: CloudWatch's
//! Embedded Metric Format, which the Lambda and ECS log drivers turn into
//! metrics without an API call (and without AWS credentials in the process).

use std::time::Duration;

/// The CloudWatch namespace of jetsaga's own metrics.
pub const NAMESPACE: &str = "Jetsaga";

/// The metric: messages in a dead-letter stream (dimension `Stream`).
pub const DEAD_LETTERS: &str = "DeadLetters";

/// One Embedded Metric Format line: `stream` holds `depth` dead letters.
pub fn dead_letters_line(stream: &str, depth: u64) -> serde_json::Value {
    serde_json::json!({
        "_aws": {
            "Timestamp": chrono::Utc::now().timestamp_millis(),
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["Stream"]], "Metrics": [{"Name": DEAD_LETTERS, "Unit": "Count"}]}]
        },
        "Stream": stream,
        DEAD_LETTERS: depth
    })
}

/// Prints `stream`'s depth as a [`dead_letters_line`] on stdout every
/// `every`, for the template's dead-letter alarm (a stream that cannot be
/// read counts as empty: the line must keep coming for the alarm's period).
pub async fn report_dead_letters(nats: async_nats::Client, stream: String, every: Duration) {
    let js = async_nats::jetstream::new(nats);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let depth = match js.get_stream(&stream).await {
            Ok(mut found) => found.info().await.map(|i| i.state.messages).unwrap_or(0),
            Err(_) => 0,
        };
        println!("{}", dead_letters_line(&stream, depth));
    }
}
