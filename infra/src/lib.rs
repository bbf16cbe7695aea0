//! Deployment files generated from the saga definition and the functions'
//! declarations, so names, subjects and permissions live in one place: the
//! CloudFormation template (`infra/cloudformation.json`), the NATS
//! cluster configuration with one user per function (`infra/nats/`) and the
//! Kubernetes manifests (`infra/kubernetes/`), the compose file
//! (`infra/compose/`) and the Grafana dashboard and Prometheus alerting
//! rules (`infra/observability/`, `infra/kubernetes/monitoring/`). A test
//! fails when the checked-in files drift (`jetsaga infra write`
//! regenerates them).

pub mod cloudformation;
pub mod compose;
pub mod kubernetes;
pub mod nats;
pub mod observability;

pub use cloudformation::{cloudformation, deployable};
pub use nats::{nats_accounts, nats_cluster_config};

/// Every generated file: `(path relative to the repository, contents)`.
pub fn files() -> Vec<(&'static str, String)> {
    let mut template = serde_json::to_string_pretty(&cloudformation()).expect("templates serialize");
    template.push('\n');
    let mut files = vec![("infra/cloudformation.json", template), ("infra/nats/cluster.conf", nats_cluster_config())];
    files.extend(kubernetes::files());
    files.extend(compose::files());
    files.extend(observability::files());
    files
}
