//! What each invocation cost, as the bill counts it, in one line on stdout:
//! the handler's time (Lambda bills an invocation's duration, rounded up
//! to the millisecond, at the function's memory size) and the DynamoDB
//! request units its store consumed ([`jetsaga_dynamodb::capacity`]). The
//! line is CloudWatch's Embedded Metric Format, which Lambda's log driver
//! turns into metrics (namespace `Jetsaga`, dimension `Function`) without
//! an API call; the runner's `bench --lambda` reads the same lines to put
//! a price on a saga. `JETSAGA_INVOCATION_METRICS=0` turns them off.

pub use jetsaga_dynamodb::capacity::Units;
use serde::{Deserialize, Serialize};

/// The CloudWatch namespace (the runner's dead-letter metric shares it).
pub const NAMESPACE: &str = "Jetsaga";

/// One invocation's cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    /// The function (`JETSAGA_FUNCTION`).
    #[serde(rename = "Function")]
    pub function: String,
    /// What was asked: `batch`, `query`, `outbox` or `mark_published`.
    #[serde(rename = "Request")]
    pub request: String,
    /// Records in a batch (0 for the others).
    #[serde(rename = "Records")]
    pub records: usize,
    /// The handler's time, in milliseconds (Lambda bills it rounded up).
    #[serde(rename = "HandlerDuration")]
    pub handler_ms: f64,
    /// DynamoDB read request units consumed.
    #[serde(rename = "ReadRequestUnits")]
    pub read_units: f64,
    /// DynamoDB write request units consumed.
    #[serde(rename = "WriteRequestUnits")]
    pub write_units: f64,
}

impl Invocation {
    /// An invocation of `function` that asked `request` and took `handler_ms`.
    pub fn new(function: &str, request: &str, records: usize, handler_ms: f64, units: Units) -> Self {
        Self {
            function: function.into(),
            request: request.into(),
            records,
            handler_ms,
            read_units: units.read,
            write_units: units.write,
        }
    }

    /// The Embedded Metric Format line.
    pub fn line(&self) -> String {
        let mut line = serde_json::to_value(self).unwrap_or_default();
        line["_aws"] = serde_json::json!({
            "Timestamp": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": [
                    {"Name": "HandlerDuration", "Unit": "Milliseconds"},
                    {"Name": "ReadRequestUnits", "Unit": "Count"},
                    {"Name": "WriteRequestUnits", "Unit": "Count"},
                ],
            }],
        });
        line.to_string()
    }

    /// Reads a line back: `None` for any other log line.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        if !line.starts_with('{') || !line.contains("\"HandlerDuration\"") {
            return None;
        }
        serde_json::from_str(line).ok()
    }
}

/// Whether the bootstrap writes the lines (`JETSAGA_INVOCATION_METRICS`, on unless `0`).
pub fn enabled() -> bool {
    std::env::var("JETSAGA_INVOCATION_METRICS").map_or(true, |v| v.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_embedded_metric_format_and_reads_back() {
        let invocation = Invocation::new("order", "batch", 3, 2.5, Units { read: 1.5, write: 8.0 });
        let line = invocation.line();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["_aws"]["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(json["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0], "Function");
        assert_eq!(json["Function"], "order");
        assert_eq!(json["WriteRequestUnits"], 8.0);
        assert_eq!(Invocation::parse(&line), Some(invocation));
        assert_eq!(Invocation::parse(r#"{"level":"INFO","message":"ready"}"#), None);
        assert_eq!(Invocation::parse("START RequestId: 1"), None);
    }
}
