//! Connecting to a saga's NATS server as an operator, and waiting for its
//! functions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Connection options named `name`, authenticated by `NATS_USER` with
/// `NATS_PASSWORD` (or the file `NATS_PASSWORD_FILE`), by `NATS_CREDS` (the
/// content of a `.creds` file, as Secrets Manager hands it to a container)
/// or `NATS_CREDS_FILE` when set; otherwise by whatever the URL carries.
/// TLS from `NATS_CA`, `NATS_CERT` and `NATS_KEY` (then required: see
/// [`jetsaga_jetstream::tls`]).
pub fn connect_options(name: &str) -> anyhow::Result<async_nats::ConnectOptions> {
    let tls = jetsaga_jetstream::tls::TlsSettings::from_env(|name| std::env::var(name).ok(), &[])
        .map_err(anyhow::Error::msg)?;
    let options = tls.apply(async_nats::ConnectOptions::new().name(name));
    if let Ok(user) = std::env::var("NATS_USER") {
        let password = match (std::env::var("NATS_PASSWORD"), std::env::var("NATS_PASSWORD_FILE")) {
            (Ok(password), _) => Some(password),
            (Err(_), Ok(path)) => Some(
                std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("cannot read NATS_PASSWORD_FILE {path}: {e}"))?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        if let Some(password) = password {
            return Ok(options.user_and_password(user, password));
        }
    }
    if let Ok(creds) = std::env::var("NATS_CREDS") {
        return options.credentials(&creds).map_err(|e| anyhow::anyhow!("NATS_CREDS is not a valid .creds file: {e}"));
    }
    if let Ok(path) = std::env::var("NATS_CREDS_FILE") {
        let creds =
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read NATS_CREDS_FILE {path}: {e}"))?;
        return options.credentials(&creds).map_err(|e| anyhow::anyhow!("{path} is not a valid .creds file: {e}"));
    }
    Ok(options)
}

/// The servers of a `--nats-url`/`NATS_URL`: one URL, or several separated
/// by commas (the nodes of a cluster, as the `nats` CLI takes them).
pub fn servers(url: &str) -> Vec<String> {
    url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect()
}

/// Connects to `url` (one server, or a cluster's nodes separated by
/// commas) as `name`, with [`connect_options`]; the error says which
/// server and how to pick another.
pub async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    connect_options(name)?.connect(servers(url)).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot connect to NATS at {url}: {e}. Is the saga up? (NATS_URL or --nats-url picks the server)"
        )
    })
}

/// Waits until every named function answers and consumes its streams
/// (provisioned and bound: a command sent from now on is kept and
/// processed, even by `nats pub`).
pub async fn wait_for_functions(nats: &async_nats::Client, names: &[String], timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    for name in names {
        loop {
            let subject = jetsaga_jetstream::service::outbox_subject(name);
            let state = nats.request(subject, "".into());
            // Longer than the endpoint's own bound on counting the outbox,
            // so a slow store is seen answering, not taken for an absent function.
            if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(3), state).await
                && serde_json::from_slice::<Value>(&reply.payload).is_ok_and(|state| state["consuming"] == true)
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("function {name} did not come up within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Committed events not yet published, per function (as each function's
/// outbox endpoint says); no answer (a function restarting, a slow Lambda)
/// counts as `u64::MAX`: not known to be empty.
pub async fn outbox_backlog(nats: &async_nats::Client, names: &[String]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut backlog = BTreeMap::new();
    for name in names {
        let request = nats.request(jetsaga_jetstream::service::outbox_subject(name), "".into());
        let n = match tokio::time::timeout(Duration::from_secs(10), request).await {
            Ok(Ok(reply)) => serde_json::from_slice::<Value>(&reply.payload)?["unpublished"].as_u64(),
            _ => None,
        };
        backlog.insert(name.clone(), n.unwrap_or(u64::MAX));
    }
    Ok(backlog)
}
