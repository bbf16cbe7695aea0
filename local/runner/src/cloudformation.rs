//! A saga's CloudFormation template: per function a Lambda (the saga's
//! binary as its `bootstrap`, `JETSAGA_FUNCTION` naming the function), an
//! on-demand DynamoDB table, a role allowed only that table and its log
//! group, and an error alarm; the bridge on ECS Fargate allowed only to
//! invoke them; an alarm on dead letters. [`Template::for_saga`] makes it
//! for any saga; an application adds its own parameters and resources (the
//! shop its HTTP gateway) with the same builder.

use serde_json::{Map, Value, json};

use crate::Saga;

/// One of the saga's own options, passed to every function as its
/// environment variable from a template parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SagaOption {
    /// The environment variable the option is read from (`TRAVEL_DEADLINE`).
    pub env: String,
    /// What it is (its `--help` line).
    pub help: String,
    /// Its default, if it has one.
    pub default: Option<String>,
}

impl SagaOption {
    /// The options of `O` that have an environment variable (the others
    /// cannot reach a Lambda).
    pub fn of<O: clap::Args>() -> Vec<Self> {
        let command = O::augment_args(clap::Command::new("saga"));
        command
            .get_arguments()
            .filter_map(|arg| {
                let env = arg.get_env()?.to_string_lossy().into_owned();
                Some(Self {
                    env,
                    help: arg.get_help().map(|h| h.to_string()).unwrap_or_default(),
                    default: arg.get_default_values().first().map(|d| d.to_string_lossy().into_owned()),
                })
            })
            .collect()
    }

    /// The template parameter's name: `TRAVEL_DEADLINE` → `TravelDeadline`.
    pub fn parameter(&self) -> String {
        self.env.split('_').filter(|w| !w.is_empty()).map(|w| logical(&w.to_ascii_lowercase())).collect()
    }
}

/// `flight` → `Flight`: a resource's logical name from a function's.
pub fn logical(name: &str) -> String {
    name.split(['-', '_'])
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// A template under construction.
#[derive(Clone, Debug)]
pub struct Template {
    description: String,
    /// Where `aws cloudformation package` finds the bootstrap, relative to the template.
    code: String,
    parameters: Map<String, Value>,
    conditions: Map<String, Value>,
    resources: Map<String, Value>,
    outputs: Map<String, Value>,
    /// What the bridge may invoke.
    function_arns: Vec<Value>,
}

impl Template {
    /// The parameters every deployment has: names, architecture and memory,
    /// where NATS is and the bridge's credentials, image, count, batch
    /// size and concurrency, the network, log retention and an alarm topic.
    /// `prefix` is the default name prefix (`travel-`); `code` where the
    /// bootstrap's zip is (`build/travel/bootstrap.zip`, as
    /// `cargo lambda build --output-format zip --lambda-dir build` puts it).
    pub fn new(description: impl Into<String>, prefix: &str, code: impl Into<String>) -> Self {
        let parameters = json!({
            "Prefix": {"Type": "String", "Default": prefix, "AllowedPattern": "^[a-z0-9-]{1,20}$", "Description": "Name prefix of functions, tables and the bridge"},
            "Architecture": {"Type": "String", "Default": "arm64", "AllowedValues": ["arm64", "x86_64"], "Description": "Must match how the bootstraps were built"},
            "MemorySize": {"Type": "Number", "Default": 128, "MinValue": 128, "MaxValue": 10240},
            "NatsUrl": {"Type": "String", "Description": "NATS server or cluster the bridge connects to, e.g. tls://nats.internal:4222"},
            "NatsCredentialsSecretArn": {"Type": "String", "Description": "Secrets Manager secret holding the bridge user's NATS credentials (.creds file content)"},
            "BridgeImage": {"Type": "String", "Description": "Container image whose entrypoint is the saga's binary"},
            "BridgeCount": {"Type": "Number", "Default": 1, "MinValue": 0, "Description": "Bridge tasks; several share each function's consumer"},
            "BridgeBatchSize": {"Type": "String", "Default": "100", "Description": "Most records per invocation"},
            "BridgeConcurrency": {"Type": "String", "Default": "2", "Description": "Invocations in flight per function and task"},
            "StreamReplicas": {"Type": "String", "Default": "3", "AllowedValues": ["1", "3", "5"], "Description": "Replicas of the saga's streams (3 on a three-node cluster)"},
            "Subnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Description": "Private subnets that reach NATS and the Lambda API"},
            "SecurityGroups": {"Type": "List<AWS::EC2::SecurityGroup::Id>", "Description": "Security groups of the bridge tasks"},
            "LogRetentionDays": {"Type": "Number", "Default": 30, "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 180, 365]},
            "AlarmTopicArn": {"Type": "String", "Default": "", "Description": "SNS topic for alarms (empty: no notifications)"}
        });
        let conditions = json!({
            "HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
        });
        Self {
            description: description.into(),
            code: code.into(),
            parameters: into_map(parameters),
            conditions: into_map(conditions),
            resources: Map::new(),
            outputs: Map::new(),
            function_arns: Vec::new(),
        }
    }

    /// The whole template for `saga`: its functions, each given the
    /// saga's `options` as parameters, the bridge (`bridge` of the saga's
    /// binary) and the dead-letter alarm.
    pub fn for_saga(saga: &dyn Saga, options: &[SagaOption], binary: &str) -> Value {
        let name = saga.name();
        let mut template = Self::new(
            format!(
                "The {name} saga on AWS Lambda: one function and one DynamoDB table per step, fed from NATS JetStream by the bridge on ECS Fargate. Generated by `{binary} infra write`; do not edit."
            ),
            &format!("{name}-"),
            format!("build/{binary}/bootstrap.zip"),
        );
        let mut environment = Map::new();
        for option in options {
            let parameter = option.parameter();
            let mut declared = json!({"Type": "String", "Description": option.help});
            if let Some(default) = &option.default {
                declared["Default"] = json!(default);
            }
            template.parameter(&parameter, declared);
            environment.insert(option.env.clone(), json!({"Ref": parameter}));
        }
        for function in saga.functions() {
            let spec = function.spec();
            template.function(spec.name, spec.description, environment.clone(), None);
        }
        let mut command = vec![json!("bridge")];
        command.extend(bridge_arguments());
        template.bridge(command);
        template.dead_letters_alarm(&saga.runtime_config().dlq_stream, binary);
        template.build()
    }

    /// Adds (or replaces) a parameter.
    pub fn parameter(&mut self, name: &str, declaration: Value) -> &mut Self {
        self.parameters.insert(name.into(), declaration);
        self
    }

    /// Adds a condition.
    pub fn condition(&mut self, name: &str, expression: Value) -> &mut Self {
        self.conditions.insert(name.into(), expression);
        self
    }

    /// Adds a resource.
    pub fn resource(&mut self, name: &str, resource: Value) -> &mut Self {
        self.resources.insert(name.into(), resource);
        self
    }

    /// Adds an output.
    pub fn output(&mut self, name: &str, output: Value) -> &mut Self {
        self.outputs.insert(name.into(), output);
        self
    }

    /// A function: its table, log group, role (that table and that log
    /// group, nothing else), Lambda (with `JETSAGA_FUNCTION`,
    /// `JETSAGA_TABLE` and `environment`) and error alarm, all under
    /// `condition` when one is given; the bridge may invoke it.
    pub fn function(
        &mut self,
        name: &str,
        description: &str,
        mut environment: Map<String, Value>,
        condition: Option<&str>,
    ) -> &mut Self {
        let l = logical(name);
        let table = format!("{l}Table");
        let function = format!("{l}Function");
        let log_group = format!("{l}LogGroup");
        let role = format!("{l}Role");
        let conditional = |mut resource: Value| {
            if let Some(condition) = condition {
                resource["Condition"] = json!(condition);
            }
            resource
        };
        self.resources.insert(
            table.clone(),
            conditional(json!({
                "Type": "AWS::DynamoDB::Table",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": {
                    "TableName": {"Fn::Sub": format!("${{Prefix}}{name}")},
                    "BillingMode": "PAY_PER_REQUEST",
                    "AttributeDefinitions": [
                        {"AttributeName": "pk", "AttributeType": "S"},
                        {"AttributeName": "sk", "AttributeType": "S"}
                    ],
                    "KeySchema": [
                        {"AttributeName": "pk", "KeyType": "HASH"},
                        {"AttributeName": "sk", "KeyType": "RANGE"}
                    ],
                    "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": true},
                    "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": true},
                    "SSESpecification": {"SSEEnabled": true}
                }
            })),
        );
        self.resources.insert(
            log_group.clone(),
            conditional(json!({
                "Type": "AWS::Logs::LogGroup",
                "DeletionPolicy": "Delete",
                "UpdateReplacePolicy": "Delete",
                "Properties": {
                    "LogGroupName": {"Fn::Sub": format!("/aws/lambda/${{Prefix}}{name}")},
                    "RetentionInDays": {"Ref": "LogRetentionDays"}
                }
            })),
        );
        self.resources.insert(
            role.clone(),
            conditional(json!({
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Description": format!("jetsaga {name}: its own table and log group, nothing else"),
                    "AssumeRolePolicyDocument": assume_role("lambda.amazonaws.com"),
                    "Policies": [{
                        "PolicyName": "own-table-and-logs",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": [
                                        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                                        "dynamodb:ConditionCheckItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:DescribeTable"
                                    ],
                                    "Resource": {"Fn::GetAtt": [table, "Arn"]}
                                },
                                {
                                    "Effect": "Allow",
                                    "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                                    "Resource": {"Fn::GetAtt": [log_group, "Arn"]}
                                }
                            ]
                        }
                    }]
                }
            })),
        );
        environment.insert("JETSAGA_FUNCTION".into(), json!(name));
        environment.insert("JETSAGA_TABLE".into(), json!({"Ref": table}));
        self.resources.insert(
            function.clone(),
            conditional(json!({
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "FunctionName": {"Fn::Sub": format!("${{Prefix}}{name}")},
                    "Description": description,
                    "Runtime": "provided.al2023",
                    "Architectures": [{"Ref": "Architecture"}],
                    "Handler": "bootstrap",
                    "Code": self.code,
                    "MemorySize": {"Ref": "MemorySize"},
                    "Timeout": 30,
                    "Role": {"Fn::GetAtt": [role, "Arn"]},
                    "Environment": {"Variables": environment},
                    "LoggingConfig": {"LogFormat": "JSON", "LogGroup": {"Ref": log_group}}
                }
            })),
        );
        self.resources.insert(
            format!("{l}ErrorsAlarm"),
            conditional(alarm(
                &format!("jetsaga {name}: invocations failed (the bridge retries them; look at the function's logs)"),
                ("AWS/Lambda", "Errors", "Sum"),
                json!([{"Name": "FunctionName", "Value": {"Ref": function}}]),
            )),
        );
        let arn = json!({"Fn::GetAtt": [function, "Arn"]});
        match condition {
            Some(condition) => {
                self.function_arns.push(json!({"Fn::If": [condition, arn.clone(), {"Ref": "AWS::NoValue"}]}));
                self.outputs.insert(format!("{l}FunctionArn"), json!({"Condition": condition, "Value": arn}));
            }
            None => {
                self.function_arns.push(arn.clone());
                self.outputs.insert(format!("{l}FunctionArn"), json!({"Value": arn}));
            }
        }
        self
    }

    /// The bridge: an ECS Fargate service running the image's entrypoint
    /// with `command`, as the NATS user whose credentials the secret holds,
    /// allowed to invoke the functions added before and nothing else.
    pub fn bridge(&mut self, command: Vec<Value>) -> &mut Self {
        self.resources.insert(
            "BridgeCluster".into(),
            json!({"Type": "AWS::ECS::Cluster", "Properties": {"ClusterName": {"Fn::Sub": "${Prefix}bridge"}}}),
        );
        self.resources.insert(
            "BridgeLogGroup".into(),
            json!({
                "Type": "AWS::Logs::LogGroup",
                "DeletionPolicy": "Delete",
                "UpdateReplacePolicy": "Delete",
                "Properties": {"LogGroupName": {"Fn::Sub": "/ecs/${Prefix}bridge"}, "RetentionInDays": {"Ref": "LogRetentionDays"}}
            }),
        );
        self.resources.insert(
            "BridgeExecutionRole".into(),
            json!({
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Description": "jetsaga bridge task execution: pull the image, read the NATS credentials, write logs",
                    "AssumeRolePolicyDocument": assume_role("ecs-tasks.amazonaws.com"),
                    "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"}],
                    "Policies": [{
                        "PolicyName": "nats-credentials",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "NatsCredentialsSecretArn"}}]
                        }
                    }]
                }
            }),
        );
        self.resources.insert(
            "BridgeTaskRole".into(),
            json!({
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "Description": "jetsaga bridge: invoke the saga's functions, nothing else",
                    "AssumeRolePolicyDocument": assume_role("ecs-tasks.amazonaws.com"),
                    "Policies": [{
                        "PolicyName": "invoke-functions",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": self.function_arns}]
                        }
                    }]
                }
            }),
        );
        self.resources.insert(
            "BridgeTaskDefinition".into(),
            json!({
                "Type": "AWS::ECS::TaskDefinition",
                "Properties": {
                    "Family": {"Fn::Sub": "${Prefix}bridge"},
                    "RequiresCompatibilities": ["FARGATE"],
                    "NetworkMode": "awsvpc",
                    "Cpu": "256",
                    "Memory": "512",
                    "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
                    "ExecutionRoleArn": {"Fn::GetAtt": ["BridgeExecutionRole", "Arn"]},
                    "TaskRoleArn": {"Fn::GetAtt": ["BridgeTaskRole", "Arn"]},
                    "ContainerDefinitions": [{
                        "Name": "bridge",
                        "Image": {"Ref": "BridgeImage"},
                        "Essential": true,
                        "Command": command,
                        "Environment": [{"Name": "NATS_URL", "Value": {"Ref": "NatsUrl"}}],
                        "Secrets": [{"Name": "NATS_CREDS", "ValueFrom": {"Ref": "NatsCredentialsSecretArn"}}],
                        "LogConfiguration": {
                            "LogDriver": "awslogs",
                            "Options": {
                                "awslogs-group": {"Ref": "BridgeLogGroup"},
                                "awslogs-region": {"Ref": "AWS::Region"},
                                "awslogs-stream-prefix": "bridge"
                            }
                        }
                    }]
                }
            }),
        );
        self.resources.insert(
            "BridgeService".into(),
            json!({
                "Type": "AWS::ECS::Service",
                "Properties": {
                    "ServiceName": {"Fn::Sub": "${Prefix}bridge"},
                    "Cluster": {"Ref": "BridgeCluster"},
                    "TaskDefinition": {"Ref": "BridgeTaskDefinition"},
                    "LaunchType": "FARGATE",
                    "DesiredCount": {"Ref": "BridgeCount"},
                    "NetworkConfiguration": {
                        "AwsvpcConfiguration": {
                            "AssignPublicIp": "DISABLED",
                            "Subnets": {"Ref": "Subnets"},
                            "SecurityGroups": {"Ref": "SecurityGroups"}
                        }
                    }
                }
            }),
        );
        self
    }

    /// An alarm when `stream` (the saga's dead letters) holds a message, as
    /// the bridge reports it (`--metrics-interval-secs`); its text points to
    /// `binary`'s `dlq` verbs.
    pub fn dead_letters_alarm(&mut self, stream: &str, binary: &str) -> &mut Self {
        self.resources.insert(
            "DeadLettersAlarm".into(),
            alarm(
                &format!("jetsaga: messages in the DLQ stream (inspect with `{binary} dlq list`, redrive with `{binary} dlq redrive`)"),
                (crate::metrics::NAMESPACE, crate::metrics::DEAD_LETTERS, "Maximum"),
                json!([{"Name": "Stream", "Value": stream}]),
            ),
        );
        self
    }

    /// The template.
    pub fn build(self) -> Value {
        json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": self.description,
            // Function code is a local zip that `aws cloudformation package` uploads.
            "Metadata": {"cfn-lint": {"config": {"ignore_checks": ["W3002"]}}},
            "Parameters": self.parameters,
            "Conditions": self.conditions,
            "Resources": self.resources,
            "Outputs": self.outputs
        })
    }
}

/// The arguments of `bridge` that the template's parameters set: the
/// functions' names, batch size, concurrency, stream replicas, the
/// dead-letter metric each minute, and no provisioning (the bridge's NATS
/// user may not manage streams).
pub fn bridge_arguments() -> Vec<Value> {
    vec![
        json!("--function-prefix"),
        json!({"Ref": "Prefix"}),
        json!("--batch-size"),
        json!({"Ref": "BridgeBatchSize"}),
        json!("--concurrency"),
        json!({"Ref": "BridgeConcurrency"}),
        json!("--replicas"),
        json!({"Ref": "StreamReplicas"}),
        json!("--metrics-interval-secs"),
        json!("60"),
        json!("--no-provision"),
    ]
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn assume_role(service: &str) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]
    })
}

/// An alarm when a metric reaches 1 within five minutes, notifying the
/// alarm topic when one is given. `metric` is (namespace, name, statistic).
pub fn alarm(description: &str, metric: (&str, &str, &str), dimensions: Value) -> Value {
    let (namespace, name, statistic) = metric;
    json!({
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmDescription": description,
            "Namespace": namespace,
            "MetricName": name,
            "Dimensions": dimensions,
            "Statistic": statistic,
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "notBreaching",
            "AlarmActions": {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Args)]
    struct TripOptions {
        /// How long a trip may take.
        #[arg(long, env = "TRAVEL_DEADLINE", default_value = "30s")]
        deadline: String,
        /// Not for Lambdas: no environment variable.
        #[arg(long)]
        verbose: bool,
    }

    #[test]
    fn the_saga_options_with_an_environment_variable_become_parameters() {
        let options = SagaOption::of::<TripOptions>();
        assert_eq!(
            options,
            vec![SagaOption {
                env: "TRAVEL_DEADLINE".into(),
                help: "How long a trip may take".into(),
                default: Some("30s".into())
            }]
        );
        assert_eq!(options[0].parameter(), "TravelDeadline");
        assert_eq!(logical("orders-api"), "OrdersApi");
    }

    #[test]
    fn a_conditional_function_is_invoked_only_when_it_exists() {
        let mut template = Template::new("test", "t-", "build/t/bootstrap.zip");
        template.function("fraud", "checks", Map::new(), Some("WithFraud")).function("pay", "pays", Map::new(), None);
        template.bridge(vec![json!("bridge")]);
        let template = template.build();
        let invoke = &template["Resources"]["BridgeTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            [0]["Resource"];
        assert_eq!(
            invoke,
            &json!([
                {"Fn::If": ["WithFraud", {"Fn::GetAtt": ["FraudFunction", "Arn"]}, {"Ref": "AWS::NoValue"}]},
                {"Fn::GetAtt": ["PayFunction", "Arn"]}
            ])
        );
        assert_eq!(template["Resources"]["FraudTable"]["Condition"], "WithFraud");
        assert_eq!(
            template["Resources"]["PayFunction"]["Properties"]["Environment"]["Variables"]["JETSAGA_FUNCTION"],
            "pay"
        );
    }
}
