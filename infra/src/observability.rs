//! What an operator watches jetsaga with, generated from one list of panels
//! and one list of alerts so that the two never disagree:
//!
//! - `infra/observability/grafana-dashboard.json`: a Grafana dashboard
//!   (import it, pick the Prometheus data source);
//! - `infra/observability/prometheus-rules.yaml`: Prometheus alerting rules
//!   (`rule_files:`) for what `jetsaga status` warns about;
//! - `infra/kubernetes/monitoring/`: the same for a cluster running the
//!   Prometheus operator and Grafana's dashboard sidecar (`kubectl apply -k
//!   infra/kubernetes/monitoring`): a `PodMonitor` for every jetsaga pod's
//!   `metrics` port, a `PrometheusRule`, and the dashboard as a ConfigMap.
//!
//! Every expression uses only metrics jetsaga exports (a test scrapes a
//! runner and a gateway and checks).

use serde_json::{Value, json};

use crate::kubernetes::{NAMESPACE, to_yaml};

/// A dashboard panel: title, unit, what it explains, and its queries (legend, PromQL).
struct Panel {
    title: &'static str,
    unit: &'static str,
    description: &'static str,
    queries: &'static [(&'static str, &'static str)],
}

const PANELS: &[Panel] = &[
    Panel {
        title: "Sagas per second, by outcome",
        unit: "ops",
        description: "Sagas started, and ended by outcome (completed, failed, canceled), as the order function commits them.",
        queries: &[
            ("started", "sum(rate(jetsaga_sagas_started_total[$__rate_interval]))"),
            ("{{outcome}}", "sum by (outcome) (rate(jetsaga_sagas_ended_total[$__rate_interval]))"),
        ],
    },
    Panel {
        title: "Saga end to end, p50 and p99",
        unit: "s",
        description: "From the order's creation to its end, by outcome.",
        queries: &[
            (
                "p50 {{outcome}}",
                "histogram_quantile(0.5, sum by (le, outcome) (rate(jetsaga_saga_duration_seconds_bucket[$__rate_interval])))",
            ),
            (
                "p99 {{outcome}}",
                "histogram_quantile(0.99, sum by (le, outcome) (rate(jetsaga_saga_duration_seconds_bucket[$__rate_interval])))",
            ),
        ],
    },
    Panel {
        title: "Consumer lag, by function",
        unit: "short",
        description: "Messages the function's durable consumer has not delivered yet (pending) and delivered but not \
                      acknowledged (ack pending): what KEDA scales on.",
        queries: &[
            ("{{function}} {{stream}} pending", "max by (function, stream) (jetsaga_consumer_pending)"),
            ("{{function}} {{stream}} ack pending", "max by (function, stream) (jetsaga_consumer_ack_pending)"),
        ],
    },
    Panel {
        title: "Outbox backlog, by function",
        unit: "short",
        description: "Events committed with a handler's changes but not yet published.",
        queries: &[("{{function}}", "max by (function) (jetsaga_outbox_unpublished)")],
    },
    Panel {
        title: "Outbox oldest age, by function",
        unit: "s",
        description: "How long the oldest unpublished event has waited: grows when NATS refuses publishes.",
        queries: &[("{{function}}", "max by (function) (jetsaga_outbox_oldest_age_seconds)")],
    },
    Panel {
        title: "Dead letters, by function",
        unit: "short",
        description: "Messages given up on in the last hour (see `jetsaga dlq list`), and those the dead-letter \
                      stream refused.",
        queries: &[
            ("{{function}} stored", "sum by (function) (increase(jetsaga_dead_letters_total[1h]))"),
            ("{{function}} unstored", "max by (function) (jetsaga_dead_letters_unstored)"),
        ],
    },
    Panel {
        title: "Messages handled, by function and outcome",
        unit: "ops",
        description: "processed, rejected (a business refusal), duplicate, retry, dead_lettered, refused.",
        queries: &[(
            "{{function}} {{outcome}}",
            "sum by (function, outcome) (rate(jetsaga_messages_total[$__rate_interval]))",
        )],
    },
    Panel {
        title: "Commit latency p99, by function",
        unit: "s",
        description: "The store transaction that keeps a batch's changes, inbox records and outbox.",
        queries: &[(
            "{{function}}",
            "histogram_quantile(0.99, sum by (le, function) (rate(jetsaga_commit_seconds_bucket[$__rate_interval])))",
        )],
    },
    Panel {
        title: "Redelivered, by function",
        unit: "short",
        description: "Messages the server delivered more than once (a crash, a timeout, a retry) and not yet acknowledged.",
        queries: &[("{{function}} {{stream}}", "max by (function, stream) (jetsaga_consumer_redelivered)")],
    },
    Panel {
        title: "HTTP requests, by route and status",
        unit: "reqps",
        description: "The gateway's requests (429 and 503 are its early refusals under load).",
        queries: &[(
            "{{method}} {{route}} {{status}}",
            "sum by (method, route, status) (rate(jetsaga_http_requests_total[$__rate_interval]))",
        )],
    },
    Panel {
        title: "HTTP latency p99, by route",
        unit: "s",
        description: "The gateway's request latency.",
        queries: &[(
            "{{method}} {{route}}",
            "histogram_quantile(0.99, sum by (le, method, route) (rate(jetsaga_http_request_duration_seconds_bucket[$__rate_interval])))",
        )],
    },
];

/// An alert: name, PromQL, how long it must hold, severity, summary, what to do.
struct Alert {
    name: &'static str,
    expr: &'static str,
    hold: &'static str,
    severity: &'static str,
    summary: &'static str,
    action: &'static str,
}

const ALERTS: &[Alert] = &[
    Alert {
        name: "JetsagaConsumerStuck",
        expr: "max by (function, stream) (jetsaga_consumer_pending) > 0 \
               unless on (function) sum by (function) (rate(jetsaga_messages_total[5m])) > 0",
        hold: "5m",
        severity: "critical",
        summary: "{{ $labels.function }} has messages waiting on {{ $labels.stream }} and handles none",
        action: "Is any copy of the function running and consuming (`jetsaga status`, its /readyz)? Its log says why it stopped.",
    },
    Alert {
        name: "JetsagaOutboxGrowing",
        expr: "max by (function) (jetsaga_outbox_oldest_age_seconds) > 60",
        hold: "2m",
        severity: "warning",
        summary: "{{ $labels.function }} has held committed events unpublished for over a minute",
        action: "NATS refuses or does not answer its publishes: check the saga stream (full? no leader?) and the function's log.",
    },
    Alert {
        name: "JetsagaDeadLetter",
        expr: "sum by (function) (increase(jetsaga_dead_letters_total[10m])) > 0",
        hold: "0m",
        severity: "warning",
        summary: "{{ $labels.function }} dead-lettered a message",
        action: "`jetsaga dlq list` shows why; fix the cause, then `jetsaga dlq redrive` or `jetsaga dlq delete`.",
    },
    Alert {
        name: "JetsagaDeadLetterUnstored",
        expr: "max by (function) (jetsaga_dead_letters_unstored) > 0",
        hold: "0m",
        severity: "critical",
        summary: "{{ $labels.function }} cannot store dead letters (the dead-letter stream is full or away)",
        action: "Their messages are kept and retried; make room in the DLQ stream (`jetsaga dlq delete`) or restore it.",
    },
    Alert {
        name: "JetsagaSagasPastDeadline",
        expr: "histogram_quantile(0.99, sum by (le) (rate(jetsaga_saga_duration_seconds_bucket[10m]))) > 300",
        hold: "10m",
        severity: "warning",
        summary: "Sagas end later than the saga deadline (5 minutes by default)",
        action: "Deadlines fire late or not at all: are message schedules allowed on the saga stream, and is the order \
                 function consuming? `jetsaga sagas --stuck` lists those past due.",
    },
];

/// The dashboard's JSON model.
pub fn dashboard() -> Value {
    let panels: Vec<Value> = PANELS
        .iter()
        .enumerate()
        .map(|(i, panel)| {
            let targets: Vec<Value> = panel
                .queries
                .iter()
                .enumerate()
                .map(|(j, (legend, expr))| {
                    json!({
                        "refId": char::from(b'A' + u8::try_from(j).expect("few queries")).to_string(),
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        "expr": expr,
                        "legendFormat": legend,
                    })
                })
                .collect();
            json!({
                "id": i + 1,
                "type": "timeseries",
                "title": panel.title,
                "description": panel.description,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i / 2) * 8},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
                "targets": targets,
            })
        })
        .collect();
    json!({
        "uid": "jetsaga",
        "title": "jetsaga",
        "description": "Sagas, their steps, outboxes, dead letters and the HTTP gateway (metrics of jetsaga's --metrics-addr and the gateway's /metrics).",
        "tags": ["jetsaga", "nats", "saga"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
        }]},
        "panels": panels,
    })
}

/// The alerting rules as a Prometheus rule group.
pub fn rule_groups() -> Value {
    let rules: Vec<Value> = ALERTS
        .iter()
        .map(|a| {
            json!({
                "alert": a.name,
                "expr": a.expr,
                "for": a.hold,
                "labels": {"severity": a.severity, "service": "jetsaga"},
                "annotations": {"summary": a.summary, "description": a.action},
            })
        })
        .collect();
    json!({"groups": [{"name": "jetsaga", "rules": rules}]})
}

/// Every PromQL expression of the dashboard and the rules (for tests).
pub fn expressions() -> Vec<&'static str> {
    PANELS.iter().flat_map(|p| p.queries.iter().map(|(_, e)| *e)).chain(ALERTS.iter().map(|a| a.expr)).collect()
}

fn monitoring_manifests() -> Vec<Value> {
    let labels = json!({"app.kubernetes.io/name": "jetsaga"});
    let mut dashboard = serde_json::to_string_pretty(&dashboard()).expect("dashboards serialize");
    dashboard.push('\n');
    vec![
        // The functions serve on their `metrics` port (pods without one are not scraped)…
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": "jetsaga-functions", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics"}],
            }
        }),
        // …the gateway on its HTTP port (its own GET /metrics).
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": "jetsaga-gateway", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/name": "jetsaga", "app.kubernetes.io/component": "gateway"}},
                "podMetricsEndpoints": [{"port": "http", "path": "/metrics"}],
            }
        }),
        json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "jetsaga", "namespace": NAMESPACE, "labels": labels},
            "spec": rule_groups(),
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            // Grafana's dashboard sidecar loads ConfigMaps labelled `grafana_dashboard`.
            "metadata": {"name": "jetsaga-dashboard", "namespace": NAMESPACE, "labels": {"grafana_dashboard": "1"}},
            "data": {"jetsaga.json": dashboard},
        }),
    ]
}

/// Every file of `infra/observability/` and `infra/kubernetes/monitoring/`.
pub fn files() -> Vec<(&'static str, String)> {
    let mut dashboard = serde_json::to_string_pretty(&dashboard()).expect("dashboards serialize");
    dashboard.push('\n');
    let mut rules =
        String::from("# Generated by `jetsaga infra write`; do not edit. Prometheus `rule_files:` entry.\n");
    rules.push_str(&serde_yaml::to_string(&rule_groups()).expect("rules serialize"));
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["monitoring.yaml"],
    });
    vec![
        ("infra/observability/grafana-dashboard.json", dashboard),
        ("infra/observability/prometheus-rules.yaml", rules),
        ("infra/kubernetes/monitoring/kustomization.yaml", to_yaml(&[kustomization])),
        ("infra/kubernetes/monitoring/monitoring.yaml", to_yaml(&monitoring_manifests())),
    ]
}
