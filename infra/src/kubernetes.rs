//! Kubernetes manifests (`infra/kubernetes/`, `kubectl apply -k`),
//! generated from the saga's functions like the CloudFormation template:
//!
//! - `nats.yaml`: a 3-node JetStream cluster (StatefulSet, persistent
//!   volumes, TLS for clients and routes, the generated accounts), its
//!   Services, a PodDisruptionBudget and a NetworkPolicy;
//! - `provision.yaml`: the Job that creates streams and consumers as `admin`;
//! - `functions.yaml`: per function a Deployment (2 copies sharing the
//!   function's durable consumer, its own NATS user, PostgreSQL, probes on
//!   the process's own health, requests, non-root and read-only) and a
//!   PodDisruptionBudget;
//! - `gateway.yaml`: the HTTP API (Deployment, Service, Ingress, budget);
//! - `ops.yaml`: the operations service (status, dead letters, redrive);
//! - `keda.yaml`: per function a KEDA `ScaledObject` on its consumer's lag
//!   (KEDA's `nats-jetstream` scaler);
//! - `kustomization.yaml`: the namespace, the image, all of the above.
//!
//! Secrets are not generated (they hold passwords): `scripts/deploy-k8s`
//! creates them, and the README lists them for a user who applies the
//! manifests by hand.

use serde_json::{Value, json};

use crate::cloudformation::deployable;

/// The namespace everything lives in.
pub const NAMESPACE: &str = "jetsaga";
/// The image name the manifests use; `kustomization.yaml` maps it to a
/// registry and tag (`images:`), and `scripts/deploy-k8s --image` sets it.
pub const IMAGE: &str = "jetsaga";
/// The NATS server image (the official one; 2.14+ for message schedules).
pub const NATS_IMAGE: &str = "docker.io/library/nats:2.15.1-alpine";
/// Where pods find the cluster's CA (`NATS_CA`).
const CA_DIR: &str = "/etc/jetsaga/tls";
/// The port of a runner's health probes.
pub const HEALTH_PORT: u16 = 8081;
/// Where a function's process serves Prometheus metrics (`--metrics-addr`).
pub const METRICS_PORT: u16 = 9090;
/// The gateway's HTTP port.
pub const HTTP_PORT: u16 = 8080;
/// Secret of every NATS user's password, one key per user.
pub const USERS_SECRET: &str = "jetsaga-nats-users";
/// Secret of the NATS nodes' certificate and key (and `ca.crt`).
pub const NATS_TLS_SECRET: &str = "nats-tls";
/// Secret (or ConfigMap-like Secret) with only the CA certificate, for clients.
pub const NATS_CA_SECRET: &str = "nats-ca";
/// Secret with the PostgreSQL URL (`url`).
pub const POSTGRES_SECRET: &str = "jetsaga-postgres";
/// Secret with the session signing secret (`secret`).
pub const JWT_SECRET: &str = "jetsaga-jwt";
/// The in-cluster NATS URL.
pub const NATS_URL: &str = "tls://nats:4222";

/// The functions deployed (the default, choreographed saga).
pub fn functions() -> Vec<(&'static str, &'static jetsaga_core::FunctionSpec)> {
    deployable().into_iter().filter(|(name, _)| crate::cloudformation::runs_choreographed(name)).collect()
}

fn labels(component: &str) -> Value {
    json!({"app.kubernetes.io/name": "jetsaga", "app.kubernetes.io/component": component})
}

fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
}

/// Environment of a process connecting as NATS user `user`.
fn nats_env(user: &str) -> Vec<Value> {
    vec![
        json!({"name": "NATS_URL", "value": NATS_URL}),
        json!({"name": "NATS_USER", "value": user}),
        secret_env("NATS_PASSWORD", USERS_SECRET, user),
        json!({"name": "NATS_CA", "value": format!("{CA_DIR}/ca.crt")}),
        json!({"name": "RUST_LOG", "value": "info"}),
        // One JSON object per line, for the cluster's log pipeline.
        json!({"name": "JETSAGA_LOG_FORMAT", "value": "json"}),
    ]
}

/// Non-root, read-only, nothing extra: what the image allows.
fn container_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    })
}

fn probe(path: &str, port: u16, period: u32) -> Value {
    json!({"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3})
}

/// The volumes every jetsaga pod has: the CA, and writable /data and /tmp
/// (the root file system is read-only).
fn jetsaga_volumes() -> (Value, Value) {
    let volumes = json!([
        {"name": "nats-ca", "secret": {"secretName": NATS_CA_SECRET}},
        {"name": "data", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}}
    ]);
    let mounts = json!([
        {"name": "nats-ca", "mountPath": CA_DIR, "readOnly": true},
        {"name": "data", "mountPath": "/data"},
        {"name": "tmp", "mountPath": "/tmp"}
    ]);
    (volumes, mounts)
}

/// A Deployment of the jetsaga image.
struct Workload<'a> {
    component: &'a str,
    replicas: u32,
    args: Vec<String>,
    env: Vec<Value>,
    port: u16,
    cpu: &'a str,
    memory: &'a str,
    memory_limit: &'a str,
    /// Serves Prometheus metrics on [`METRICS_PORT`] (scrape annotations).
    metrics: bool,
}

fn deployment(w: Workload<'_>) -> Value {
    let (volumes, mounts) = jetsaga_volumes();
    let mut metadata = json!({"labels": labels(w.component)});
    let mut ports = vec![json!({"name": "http", "containerPort": w.port})];
    if w.metrics {
        // The convention most Prometheus setups scrape by.
        metadata["annotations"] = json!({
            "prometheus.io/scrape": "true",
            "prometheus.io/port": METRICS_PORT.to_string(),
            "prometheus.io/path": "/metrics"
        });
        ports.push(json!({"name": "metrics", "containerPort": METRICS_PORT}));
    }
    let name = format!("jetsaga-{}", w.component);
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels(w.component)},
        "spec": {
            "replicas": w.replicas,
            "selector": {"matchLabels": labels(w.component)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": metadata,
                "spec": {
                    "automountServiceAccountToken": false,
                    // In-flight batches are finished (committed, published, acked) on SIGTERM.
                    "terminationGracePeriodSeconds": 45,
                    "securityContext": {"fsGroup": 65532},
                    "containers": [{
                        "name": w.component,
                        "image": IMAGE,
                        "args": w.args,
                        "env": w.env,
                        "ports": ports,
                        "readinessProbe": probe("/readyz", w.port, 5),
                        "livenessProbe": probe("/healthz", w.port, 10),
                        "startupProbe": {
                            "httpGet": {"path": "/healthz", "port": w.port},
                            "periodSeconds": 2,
                            "failureThreshold": 30
                        },
                        "resources": {
                            "requests": {"cpu": w.cpu, "memory": w.memory},
                            "limits": {"memory": w.memory_limit}
                        },
                        "securityContext": container_security(),
                        "volumeMounts": mounts
                    }],
                    "volumes": volumes
                }
            }
        }
    })
}

fn disruption_budget(component: &str, min_available: u32) -> Value {
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": format!("jetsaga-{component}"), "labels": labels(component)},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": labels(component)}}
    })
}

/// How a function's process runs where something else provisions and
/// serves HTTP: its store, its health on [`HEALTH_PORT`].
pub(crate) fn function_args(name: &str, store: &str) -> Vec<String> {
    [
        "up",
        "--function",
        name,
        "--no-provision",
        "--no-http",
        // No demo catalog in a real deployment, and no flow printed.
        "--no-seed",
        "--quiet",
        "--store",
        store,
        "--health-port",
        &HEALTH_PORT.to_string(),
        "--metrics-addr",
        &format!("0.0.0.0:{METRICS_PORT}"),
    ]
    .map(String::from)
    .to_vec()
}

/// Every function: a Deployment of 2 copies and its budget.
pub fn function_manifests() -> Vec<Value> {
    let mut docs = Vec::new();
    for (name, _) in functions() {
        let mut env = nats_env(name);
        env.push(secret_env("DATABASE_URL", POSTGRES_SECRET, "url"));
        let args = function_args(name, "postgres");
        docs.push(deployment(Workload {
            component: name,
            replicas: 2,
            args,
            env,
            port: HEALTH_PORT,
            cpu: "100m",
            memory: "64Mi",
            memory_limit: "512Mi",
            metrics: true,
        }));
        docs.push(disruption_budget(name, 1));
    }
    docs
}

/// KEDA `ScaledObject`s: each function's copies follow the lag of its
/// consumers (the saga stream's, and the command stream's for functions
/// that take commands), between 2 and 10.
pub fn keda_manifests() -> Vec<Value> {
    let defaults = jetsaga_jetstream::Config::default();
    functions()
        .into_iter()
        .map(|(name, spec)| {
            let trigger = |stream: &str| {
                json!({
                    "type": "nats-jetstream",
                    "metadata": {
                        "natsServerMonitoringEndpoint": format!("nats-headless.{NAMESPACE}.svc.cluster.local:8222"),
                        "account": "SAGA",
                        "stream": stream,
                        "consumer": name,
                        "lagThreshold": "100",
                        "activationLagThreshold": "0",
                        "useHttps": "false"
                    }
                })
            };
            let mut triggers = Vec::new();
            if !spec.subscribes.is_empty() {
                triggers.push(trigger(&defaults.stream));
            }
            if !spec.accepts.is_empty() {
                triggers.push(trigger(&defaults.command_stream));
            }
            json!({
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": format!("jetsaga-{name}"), "labels": labels(name)},
                "spec": {
                    "scaleTargetRef": {"name": format!("jetsaga-{name}")},
                    "minReplicaCount": 2,
                    "maxReplicaCount": 10,
                    "pollingInterval": 10,
                    "cooldownPeriod": 120,
                    "triggers": triggers
                }
            })
        })
        .collect()
}

/// The HTTP API: Deployment, Service, Ingress and budget.
pub fn gateway_manifests() -> Vec<Value> {
    let mut env = nats_env(crate::nats::GATEWAY_USER);
    env.push(secret_env("JETSAGA_JWT_SECRET", JWT_SECRET, "secret"));
    let args = [
        "gateway",
        "--http-host",
        "0.0.0.0",
        "--http-port",
        &HTTP_PORT.to_string(),
        "--secure-cookies",
        // The ingress controller's pods: their X-Forwarded-For names the client.
        "--trusted-proxy",
        "10.0.0.0/8",
    ]
    .map(String::from)
    .to_vec();
    vec![
        deployment(Workload {
            component: "gateway",
            replicas: 2,
            args,
            env,
            port: HTTP_PORT,
            cpu: "200m",
            memory: "128Mi",
            memory_limit: "1Gi",
            metrics: false,
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "jetsaga-gateway", "labels": labels("gateway")},
            "spec": {"selector": labels("gateway"), "ports": [{"name": "http", "port": 80, "targetPort": HTTP_PORT}]}
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "jetsaga-gateway", "labels": labels("gateway")},
            "spec": {
                "tls": [{"hosts": ["shop.example.com"], "secretName": "jetsaga-gateway-tls"}],
                "rules": [{
                    "host": "shop.example.com",
                    "http": {"paths": [{
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": {"service": {"name": "jetsaga-gateway", "port": {"number": 80}}}
                    }]}
                }]
            }
        }),
        disruption_budget("gateway", 1),
    ]
}

/// The operations service (the admin API asks it).
pub fn ops_manifests() -> Vec<Value> {
    vec![deployment(Workload {
        component: "ops",
        replicas: 1,
        args: ["ops", "--health-port", &HEALTH_PORT.to_string()].map(String::from).to_vec(),
        env: nats_env(crate::nats::OPS_USER),
        port: HEALTH_PORT,
        cpu: "50m",
        memory: "32Mi",
        memory_limit: "256Mi",
        metrics: false,
    })]
}

/// The provisioning Job, as `admin`: streams R3 and every consumer.
pub fn provision_manifests() -> Vec<Value> {
    let (volumes, mounts) = jetsaga_volumes();
    vec![json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "jetsaga-provision", "labels": labels("provision")},
        "spec": {
            "backoffLimit": 20,
            "template": {
                "metadata": {"labels": labels("provision")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "provision",
                        "image": IMAGE,
                        "args": ["provision", "--replicas", "3"],
                        "env": nats_env("admin"),
                        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                        "securityContext": container_security(),
                        "volumeMounts": mounts
                    }],
                    "volumes": volumes
                }
            }
        }
    })]
}

/// The NATS cluster: config, Services, StatefulSet, budget, network policy.
pub fn nats_manifests() -> Vec<Value> {
    let users: Vec<String> = crate::nats::users();
    let password_env: Vec<Value> = users
        .iter()
        .map(|user| secret_env(&format!("JETSAGA_{}_PASSWORD", user.to_uppercase()), USERS_SECRET, user))
        .collect();
    let mut env = vec![json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})];
    env.extend(password_env);
    let routes: Vec<String> =
        (0..3).map(|i| format!("nats-route://nats-{i}.nats-headless.{NAMESPACE}.svc.cluster.local:6222")).collect();
    let config = crate::nats::node_config(&crate::nats::NodeLayout {
        server_name: "$POD_NAME",
        routes: &routes,
        // In the cluster only: the NetworkPolicy admits KEDA and this namespace.
        monitoring: "0.0.0.0:8222",
    });
    let nats_labels = json!({"app.kubernetes.io/name": "nats", "app.kubernetes.io/part-of": "jetsaga"});
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "nats-config", "labels": nats_labels},
            "data": {"nats.conf": config}
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "nats", "labels": nats_labels},
            "spec": {"selector": nats_labels, "ports": [{"name": "client", "port": 4222}]}
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "nats-headless", "labels": nats_labels},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": nats_labels,
                "ports": [
                    {"name": "client", "port": 4222},
                    {"name": "cluster", "port": 6222},
                    {"name": "monitor", "port": 8222}
                ]
            }
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "nats", "labels": nats_labels},
            "spec": {
                "serviceName": "nats-headless",
                "replicas": 3,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": nats_labels},
                "template": {
                    "metadata": {"labels": nats_labels},
                    "spec": {
                        "automountServiceAccountToken": false,
                        "terminationGracePeriodSeconds": 60,
                        "securityContext": {"fsGroup": 1000, "runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true},
                        "containers": [{
                            "name": "nats",
                            "image": NATS_IMAGE,
                            "args": ["--config", "/etc/nats/nats.conf"],
                            "env": env,
                            "ports": [
                                {"name": "client", "containerPort": 4222},
                                {"name": "cluster", "containerPort": 6222},
                                {"name": "monitor", "containerPort": 8222}
                            ],
                            "readinessProbe": {"httpGet": {"path": "/healthz?js-enabled-only=true", "port": 8222}, "periodSeconds": 10},
                            "livenessProbe": {"httpGet": {"path": "/healthz?js-enabled-only=true", "port": 8222}, "periodSeconds": 30, "failureThreshold": 3},
                            "startupProbe": {"httpGet": {"path": "/healthz", "port": 8222}, "periodSeconds": 5, "failureThreshold": 60},
                            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": true},
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/nats/nats.conf", "subPath": "nats.conf"},
                                {"name": "tls", "mountPath": crate::nats::TLS_DIR, "readOnly": true},
                                {"name": "data", "mountPath": "/data"}
                            ]
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "nats-config"}},
                            {"name": "tls", "secret": {"secretName": NATS_TLS_SECRET}}
                        ]
                    }
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}
                }]
            }
        }),
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "nats", "labels": nats_labels},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": nats_labels}}
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "nats", "labels": nats_labels},
            "spec": {
                "podSelector": {"matchLabels": nats_labels},
                "policyTypes": ["Ingress"],
                "ingress": [
                    // Clients: the pods of this namespace (each with its own user).
                    {"from": [{"podSelector": {}}], "ports": [{"port": 4222}]},
                    // Routes: the other nodes only (and their certificates: see nats.conf).
                    {"from": [{"podSelector": {"matchLabels": nats_labels}}], "ports": [{"port": 6222}]},
                    // Monitoring (KEDA's scaler reads consumer lag here): KEDA's namespace and this one.
                    {"from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}},
                        {"podSelector": {}}
                    ], "ports": [{"port": 8222}]}
                ]
            }
        }),
    ]
}

/// The kustomization tying the files together.
pub fn kustomization(version: &str) -> Value {
    json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": ["namespace.yaml", "nats.yaml", "provision.yaml", "functions.yaml", "gateway.yaml", "ops.yaml", "keda.yaml"],
        "labels": [{"pairs": {"app.kubernetes.io/part-of": "jetsaga"}, "includeSelectors": false}],
        // Point `jetsaga` at your registry: `kustomize edit set image jetsaga=registry.example.com/jetsaga:TAG`.
        "images": [{"name": IMAGE, "newName": IMAGE, "newTag": version}]
    })
}

/// YAML documents, `---`-separated, with the generated-file header.
pub fn to_yaml(docs: &[Value]) -> String {
    let mut out = String::from("# Generated by `jetsaga infra write` from the saga's functions; do not edit.\n");
    for doc in docs {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(doc).expect("manifests serialize"));
    }
    out
}

/// Every file of `infra/kubernetes/`.
pub fn files() -> Vec<(&'static str, String)> {
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    vec![
        ("infra/kubernetes/kustomization.yaml", to_yaml(&[kustomization(env!("CARGO_PKG_VERSION"))])),
        ("infra/kubernetes/namespace.yaml", to_yaml(&[namespace])),
        ("infra/kubernetes/nats.yaml", to_yaml(&nats_manifests())),
        ("infra/kubernetes/provision.yaml", to_yaml(&provision_manifests())),
        ("infra/kubernetes/functions.yaml", to_yaml(&function_manifests())),
        ("infra/kubernetes/gateway.yaml", to_yaml(&gateway_manifests())),
        ("infra/kubernetes/ops.yaml", to_yaml(&ops_manifests())),
        ("infra/kubernetes/keda.yaml", to_yaml(&keda_manifests())),
    ]
}
