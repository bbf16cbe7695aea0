//! The verbs that need no running saga, or bring their own: the generated
//! deployment files, the saga's functions, `bench` and `chaos`.

use super::InfraCommand;
use crate::bench;

/// `jetsaga functions`: what each function subscribes to, accepts, emits and serves.
pub(super) fn functions(mode: jetsaga_events::SagaMode, names: bool, json: bool) {
    let functions = crate::saga::SagaOptions::mode(mode).functions();
    if names {
        for function in &functions {
            println!("{}", function.spec().name);
        }
        return;
    }
    let specs: Vec<serde_json::Value> = functions
        .iter()
        .map(|f| {
            let spec = f.spec();
            serde_json::json!({
                "name": spec.name,
                "description": spec.description,
                "subscribes": spec.subscribes,
                "accepts": spec.accepts,
                "direct": spec.direct,
                "emits": spec.emits,
                "queries": spec.queries,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&specs).unwrap_or_default());
        return;
    }
    println!("the {} saga:", crate::saga::mode_name(mode));
    for spec in &specs {
        println!("\n{}: {}", spec["name"].as_str().unwrap_or(""), spec["description"].as_str().unwrap_or(""));
        for field in ["subscribes", "accepts", "direct", "emits", "queries"] {
            let subjects: Vec<&str> = spec[field].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            if !subjects.is_empty() {
                println!("  {field:<11} {}", subjects.join(", "));
            }
        }
    }
}

/// `jetsaga infra ...`: the deployment files generated from the declarations.
pub(super) fn infra(command: InfraCommand) -> anyhow::Result<()> {
    match command {
        InfraCommand::Template => print!("{}", jetsaga_infra::files()[0].1),
        InfraCommand::NatsConfig => print!("{}", jetsaga_infra::nats_cluster_config()),
        InfraCommand::Credentials { out, owner, jwt: true, own } => {
            anyhow::ensure!(own.is_empty(), "--own goes with password credentials (compose), not with --jwt");
            let made = crate::credentials::write_decentralized(&out, owner)?;
            println!(
                "credentials in {}: {} NATS users as JWTs ({} new), operator keys {}, account SAGA is {}",
                out.display(),
                made.users,
                made.new_users,
                if made.new_operator { "made" } else { "kept" },
                made.account
            );
        }
        InfraCommand::Credentials { out, owner, jwt: false, own } => {
            let made = crate::credentials::write(&out, owner)?;
            for dir in own.iter() {
                let owner = owner.expect("clap requires --owner with --own");
                std::os::unix::fs::chown(dir, Some(owner), Some(owner))
                    .map_err(|e| anyhow::anyhow!("cannot hand {} to user {owner}: {e}", dir.display()))?;
            }
            println!(
                "credentials in {}: {} NATS users ({} new passwords), certificate {}",
                out.display(),
                made.users,
                made.new_passwords,
                if made.new_certificate { "made (a new private CA)" } else { "kept" }
            );
        }
        InfraCommand::Write { root } => {
            for (path, contents) in jetsaga_infra::files() {
                let path = root.join(path);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&path, contents)?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

/// `jetsaga bench`: a run against the raw JetStream limit, or with
/// `--bootstraps` the Lambda bootstraps' size and start time.
pub(super) async fn bench(args: bench::BenchArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.bootstraps {
        let figures = bench::measure_bootstraps(dir, 11)?;
        println!("{:<24} {:>12} {:>16} {:>17}", "bootstrap", "bytes", "first init (ms)", "median init (ms)");
        for f in &figures {
            println!("{:<24} {:>12} {:>16.1} {:>17.1}", f.name, f.bytes, f.first_init_ms, f.median_init_ms);
        }
        if let Some(path) = args.json {
            std::fs::write(&path, serde_json::to_string_pretty(&figures)? + "\n")?;
        }
        return Ok(());
    }
    let (json_path, svg_path) = (args.json.clone(), args.svg.clone());
    let report = bench::run(args).await?;
    bench::print(&report);
    if let Some(path) = json_path {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("  json:              {}", path.display());
    }
    if let Some(path) = svg_path {
        std::fs::write(&path, bench::svg(&report))?;
        println!("  plot:              {}", path.display());
    }
    if !report.correct {
        anyhow::bail!("the run lost or doubled something: {}", report.problems.join("; "));
    }
    Ok(())
}

/// `jetsaga chaos`: a fault-injection run; exit code 1 when it finds something.
pub(super) async fn chaos(args: crate::chaos::ChaosArgs) -> anyhow::Result<()> {
    let json_path = args.json.clone();
    let report = crate::chaos::run(args).await?;
    crate::chaos::print(&report);
    if let Some(path) = json_path {
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    if !report.tally.findings.is_empty() {
        return Err(jetsaga_runner::chaos::Found(report.tally.findings.len()).into());
    }
    Ok(())
}
