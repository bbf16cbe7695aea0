//! The trip saga's deployment files, as a user deploys them: `travel infra
//! write` makes the CloudFormation template and the NATS accounts;
//! cfn-lint accepts the template; `aws cloudformation package` and
//! `deploy` create the stack on moto's server (which accepts CloudFormation
//! stacks, but cannot invoke Lambdas: invocation is
//! `travel_runs_as_lambda_bootstraps_fed_by_its_bridge`), and what the
//! stack holds is what the saga declares.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const HOW_TO_GET: &str = "run scripts/setup (it installs cfn-lint, awscli and moto into ~/.cache/jetsaga/tools)";

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

fn tool(name: &str) -> Command {
    Command::new(jetsaga_runner::tools::find(name, HOW_TO_GET).unwrap_or_else(|e| panic!("{e}")))
}

/// The trip's bootstrap as `cargo lambda build --output-format zip` lays it
/// out: `bootstrap` in `<dir>/build/travel/bootstrap.zip`.
fn bootstrap_zip(dir: &Path) {
    let zip = dir.join("build/travel/bootstrap.zip");
    std::fs::create_dir_all(zip.parent().unwrap()).unwrap();
    let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z: z.write(sys.argv[2], 'bootstrap')";
    run(Command::new("python3").args(["-c", script]).arg(&zip).arg(env!("CARGO_BIN_EXE_travel")));
}

#[test]
fn travel_deploys_its_generated_template_to_a_cloudformation_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let infra = dir.path().join("infra");
    let wrote = run(Command::new(env!("CARGO_BIN_EXE_travel")).args(["infra", "write", "--dir"]).arg(&infra));
    assert!(wrote.contains("cloudformation.json") && wrote.contains("nats-accounts.conf"), "{wrote}");
    let template_path = infra.join("cloudformation.json");
    let template: Value = serde_json::from_str(&std::fs::read_to_string(&template_path).unwrap()).unwrap();

    // The saga's own option reaches every function as a parameter.
    assert_eq!(template["Parameters"]["TravelDeadline"]["Type"], "String");
    let trip = &template["Resources"]["TripFunction"]["Properties"];
    assert_eq!(trip["Environment"]["Variables"]["TRAVEL_DEADLINE"]["Ref"], "TravelDeadline");
    assert_eq!(trip["Environment"]["Variables"]["JETSAGA_FUNCTION"], "trip");
    assert_eq!(trip["Code"], "build/travel/bootstrap.zip");
    // Each role may use its own table and nothing else.
    let statement =
        &template["Resources"]["FlightsRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0];
    assert_eq!(statement["Resource"]["Fn::GetAtt"][0], "FlightsTable");
    assert_eq!(
        template["Resources"]["DeadLettersAlarm"]["Properties"]["Dimensions"][0]["Value"], "TRAVEL_DLQ",
        "the alarm watches the trip's own dead letters"
    );
    // The NATS accounts hold the bridge the template runs.
    let accounts = std::fs::read_to_string(infra.join("nats-accounts.conf")).unwrap();
    assert!(accounts.contains("user: \"bridge\"") && accounts.contains("user: \"flights\""), "{accounts}");

    run(tool("cfn-lint").arg(&template_path));

    let moto = jetsaga_runner::lambda_local::DynamoEndpoint::start_moto().unwrap_or_else(|e| panic!("{e}"));
    let aws = |args: &[&str]| {
        let mut command = tool("aws");
        command
            .args(args)
            .env("AWS_ENDPOINT_URL", &moto.url)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "rehearsal")
            .env("AWS_SECRET_ACCESS_KEY", "rehearsal")
            .current_dir(&infra);
        run(&mut command)
    };
    bootstrap_zip(&infra);
    aws(&["s3", "mb", "s3://travel-artifacts"]);
    aws(&[
        "cloudformation",
        "package",
        "--template-file",
        "cloudformation.json",
        "--s3-bucket",
        "travel-artifacts",
        "--output-template-file",
        "packaged.json",
        "--use-json",
    ]);
    aws(&[
        "cloudformation",
        "deploy",
        "--template-file",
        "packaged.json",
        "--stack-name",
        "travel",
        "--capabilities",
        "CAPABILITY_IAM",
        "--parameter-overrides",
        "NatsUrl=tls://nats.internal:4222",
        "NatsCredentialsSecretArn=arn:aws:secretsmanager:us-east-1:123456789012:secret:travel-nats",
        "BridgeImage=registry.invalid/travel:1",
        "Subnets=subnet-0rehearsal",
        "SecurityGroups=sg-0rehearsal",
        "Architecture=x86_64",
    ]);

    let status =
        aws(&["cloudformation", "describe-stacks", "--stack-name", "travel", "--query", "Stacks[0].StackStatus"]);
    assert!(status.contains("CREATE_COMPLETE"), "{status}");
    let tables = aws(&["dynamodb", "list-tables", "--query", "TableNames"]);
    let functions = aws(&["lambda", "list-functions", "--query", "Functions[].FunctionName"]);
    for name in ["trip", "flights", "hotels", "cars"] {
        let deployed = format!("\"travel-{name}\"");
        assert!(tables.contains(&deployed), "no table travel-{name}: {tables}");
        assert!(functions.contains(&deployed), "no function travel-{name}: {functions}");
    }
    let services = aws(&["ecs", "list-services", "--cluster", "travel-bridge"]);
    assert!(services.contains("travel-bridge"), "no bridge service: {services}");

    // The bridge's task runs the saga's binary with the task definition's
    // command: exactly that must parse, then reach for the server.
    let task = aws(&["ecs", "list-task-definitions", "--query", "taskDefinitionArns[0]", "--output", "text"]);
    let command = aws(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        task.trim(),
        "--query",
        "taskDefinition.containerDefinitions[0].command",
    ]);
    let command: Vec<String> = serde_json::from_str(&command).unwrap();
    assert_eq!(command[0], "bridge");
    let out = Command::new(env!("CARGO_BIN_EXE_travel"))
        .args(&command)
        .env("NATS_URL", "nats://127.0.0.1:1")
        .env("JETSAGA_LAMBDA_ENDPOINT", "http://127.0.0.1:1")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("error: unexpected argument") && !said.contains("invalid value"), "{command:?}: {said}");
    assert!(said.contains("nats-server"), "the bridge's command did not reach for NATS: {command:?}: {said}");
}
