//! The CloudFormation template: per function a Lambda (the shared
//! bootstrap, `JETSAGA_FUNCTION` set to the function), an on-demand
//! DynamoDB table, a role allowed only that table and its log group, and an
//! error alarm; the bridge on ECS Fargate allowed only to invoke them.

use jetsaga_core::FunctionSpec;
use jetsaga_events::SagaMode;
use jetsaga_saga::STEPS;
use serde_json::{Value, json};

/// Every function that can be deployed, with its declaration (in the
/// choreographed saga if it runs there).
pub fn deployable() -> Vec<(&'static str, &'static FunctionSpec)> {
    STEPS.iter().map(|step| (step.name(), step.spec(SagaMode::Choreographed))).collect()
}

fn logical(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

/// Whether `name` runs in the (default) choreographed saga.
pub fn runs_choreographed(name: &str) -> bool {
    STEPS.iter().any(|s| s.name() == name && s.modes.contains(&SagaMode::Choreographed))
}

/// The condition under which a function is deployed: none if it runs in
/// both saga modes, else the one mode it runs in.
fn condition(name: &str) -> Option<&'static str> {
    let step = STEPS.iter().find(|s| s.name() == name)?;
    match step.modes {
        [SagaMode::Choreographed] => Some("Choreographed"),
        [SagaMode::Orchestrated] => Some("Orchestrated"),
        _ => None,
    }
}

fn with_condition(mut resource: Value, name: &str) -> Value {
    if let Some(condition) = condition(name) {
        resource["Condition"] = json!(condition);
    }
    resource
}

/// An alarm when a metric reaches 1 within five minutes, notifying the
/// alarm topic when one is given. `metric` is (namespace, name, statistic).
fn alarm(description: &str, metric: (&str, &str, &str), dimensions: Value) -> Value {
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

/// The CloudFormation template: per function a Lambda (provided.al2023,
/// arm64), an on-demand DynamoDB table with point-in-time recovery and
/// TTL, a role allowed only that table and its log group, an error alarm;
/// the bridge as an ECS Fargate service allowed only to invoke the
/// functions; an alarm on dead letters.
pub fn cloudformation() -> Value {
    let mut resources = serde_json::Map::new();
    let mut outputs = serde_json::Map::new();
    let mut function_arns = Vec::new();
    for (name, spec) in deployable() {
        let l = logical(name);
        let table = format!("{l}Table");
        let function = format!("{l}Function");
        let function_name = json!({"Fn::Sub": format!("${{Prefix}}{name}")});
        resources.insert(
            table.clone(),
            with_condition(
                json!({
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
                }),
                name,
            ),
        );
        resources.insert(
            format!("{l}LogGroup"),
            with_condition(
                json!({
                    "Type": "AWS::Logs::LogGroup",
                    "DeletionPolicy": "Delete",
                    "UpdateReplacePolicy": "Delete",
                    "Properties": {
                        "LogGroupName": {"Fn::Sub": format!("/aws/lambda/${{Prefix}}{name}")},
                        "RetentionInDays": {"Ref": "LogRetentionDays"}
                    }
                }),
                name,
            ),
        );
        resources.insert(
            format!("{l}Role"),
            with_condition(
                json!({
                    "Type": "AWS::IAM::Role",
                    "Properties": {
                        "Description": format!("jetsaga {name}: its own table and log group, nothing else"),
                        "AssumeRolePolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
                        },
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
                                        "Resource": {"Fn::GetAtt": [format!("{l}LogGroup"), "Arn"]}
                                    }
                                ]
                            }
                        }]
                    }
                }),
                name,
            ),
        );
        let environment = json!({
            "JETSAGA_FUNCTION": name,
            "JETSAGA_TABLE": {"Ref": table},
            "JETSAGA_SAGA": {"Ref": "SagaMode"},
            "JETSAGA_SHIPPING_FAILURE_RATE": {"Ref": "ShippingFailureRate"},
            "JETSAGA_STEP_TIMEOUT": {"Ref": "StepTimeout"},
            "JETSAGA_SAGA_TIMEOUT": {"Ref": "SagaTimeout"},
            "JETSAGA_DEADLINES": {"Ref": "Deadlines"},
            "JETSAGA_MAX_ORDERS_IN_FLIGHT": {"Ref": "MaxOrdersInFlight"},
            "JETSAGA_MAX_ORDERS_PER_MINUTE": {"Ref": "MaxOrdersPerMinute"},
            "JETSAGA_SIGN_UP_CREDIT_CENTS": {"Ref": "SignUpCreditCents"},
            "JETSAGA_KEEP_ENDED_ORDERS": {"Ref": "KeepEndedOrders"}
        });
        resources.insert(
            function.clone(),
            with_condition(
                json!({
                    "Type": "AWS::Lambda::Function",
                    "Properties": {
                        "FunctionName": function_name,
                        "Description": spec.description,
                        "Runtime": "provided.al2023",
                        "Architectures": [{"Ref": "Architecture"}],
                        "Handler": "bootstrap",
                        "Code": format!("build/{}/bootstrap.zip", jetsaga_lambda::BOOTSTRAP_BINARY),
                        "MemorySize": {"Ref": "MemorySize"},
                        "Timeout": 30,
                        "Role": {"Fn::GetAtt": [format!("{l}Role"), "Arn"]},
                        "Environment": {"Variables": environment},
                        "LoggingConfig": {"LogFormat": "JSON", "LogGroup": {"Ref": format!("{l}LogGroup")}}
                    }
                }),
                name,
            ),
        );
        resources.insert(
            format!("{l}ErrorsAlarm"),
            with_condition(
                alarm(
                    &format!(
                        "jetsaga {name}: invocations failed (the bridge retries them; look at the function's logs)"
                    ),
                    ("AWS/Lambda", "Errors", "Sum"),
                    json!([{"Name": "FunctionName", "Value": {"Ref": function}}]),
                ),
                name,
            ),
        );
        let arn = json!({"Fn::GetAtt": [function, "Arn"]});
        match condition(name) {
            Some(condition) => {
                function_arns.push(json!({"Fn::If": [condition, arn.clone(), {"Ref": "AWS::NoValue"}]}));
                outputs.insert(format!("{l}FunctionArn"), json!({"Condition": condition, "Value": arn}));
            }
            None => {
                function_arns.push(arn.clone());
                outputs.insert(format!("{l}FunctionArn"), json!({"Value": arn}));
            }
        }
    }

    resources.insert(
        "BridgeCluster".into(),
        json!({"Type": "AWS::ECS::Cluster", "Properties": {"ClusterName": {"Fn::Sub": "${Prefix}bridge"}}}),
    );
    resources.insert(
        "BridgeLogGroup".into(),
        json!({
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {"LogGroupName": {"Fn::Sub": "/ecs/${Prefix}bridge"}, "RetentionInDays": {"Ref": "LogRetentionDays"}}
        }),
    );
    resources.insert(
        "BridgeExecutionRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": "jetsaga bridge task execution: pull the image, read the NATS credentials, write logs",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]
                },
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
    resources.insert(
        "BridgeTaskRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": "jetsaga bridge: invoke the saga's functions, nothing else",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:AssumeRole"}]
                },
                "Policies": [{
                    "PolicyName": "invoke-functions",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": function_arns}]
                    }
                }]
            }
        }),
    );
    resources.insert(
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
                    "Command": [
                        "bridge", "--saga", {"Ref": "SagaMode"}, "--function-prefix", {"Ref": "Prefix"},
                        "--batch-size", {"Ref": "BridgeBatchSize"}, "--concurrency", {"Ref": "BridgeConcurrency"},
                        "--replicas", {"Ref": "StreamReplicas"}, "--metrics-interval-secs", "60", "--quiet",
                        "--no-provision"
                    ],
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
    resources.insert(
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
    gateway(&mut resources, &mut outputs);
    resources.insert(
        "DeadLettersAlarm".into(),
        alarm(
            "jetsaga: messages in the DLQ stream (inspect with `jetsaga dlq list`, redrive with `jetsaga dlq redrive`)",
            ("Jetsaga", "DeadLetters", "Maximum"),
            json!([{"Name": "Stream", "Value": jetsaga_jetstream::streams::DLQ}]),
        ),
    );

    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "jetsaga order saga on AWS Lambda: one function and one DynamoDB table per step, fed from NATS JetStream by the jetsaga bridge on ECS Fargate, and the HTTP API as a Lambda behind a Function URL. Generated by `jetsaga infra write`; do not edit.",
        // Function code is a local zip that `aws cloudformation package` uploads (scripts/deploy).
        "Metadata": {"cfn-lint": {"config": {"ignore_checks": ["W3002"]}}},
        "Parameters": {
            "Prefix": {"Type": "String", "Default": "jetsaga-", "AllowedPattern": "^[a-z0-9-]{1,20}$", "Description": "Name prefix of functions, tables and the bridge"},
            "SagaMode": {"Type": "String", "Default": "choreographed", "AllowedValues": ["choreographed", "orchestrated"], "Description": "Choreographed (events) or orchestrated (an orchestrator sends commands)"},
            "Architecture": {"Type": "String", "Default": "arm64", "AllowedValues": ["arm64", "x86_64"], "Description": "Must match how the bootstraps were built"},
            "MemorySize": {"Type": "Number", "Default": 128, "MinValue": 128, "MaxValue": 10240},
            "ShippingFailureRate": {"Type": "String", "Default": "0", "Description": "Share of shipments that fail, 0 to 1 (demo knob)"},
            "StepTimeout": {"Type": "String", "Default": "30s", "AllowedPattern": "^[a-z0-9.=,]{1,200}$", "Description": "How long an order waits for a step before it fails: 30s, or 30s,payment=10s (units ms, s, m, h)"},
            "SagaTimeout": {"Type": "String", "Default": "5m", "AllowedPattern": "^[0-9.]+(ms|s|m|h)?$", "Description": "How long an order may take in all"},
            "SignUpCreditCents": {"Type": "Number", "Default": 10000, "MinValue": 0, "Description": "Credit, in cents, a user's sign-up gives their customer (anyone may sign up)"},
            "MaxOrdersInFlight": {"Type": "Number", "Default": 20, "MinValue": 0, "Description": "Orders one customer may have under way at once (0: no limit)"},
            "MaxOrdersPerMinute": {"Type": "Number", "Default": 60, "MinValue": 0, "Description": "Orders one customer may start in a minute (0: no limit)"},
            "KeepEndedOrders": {"Type": "String", "Default": "30d", "AllowedPattern": "^[0-9]{1,6}(d|h|m)$", "Description": "How long an ended order is kept before DynamoDB's TTL removes it: 30d, 12h (1 minute to 10 years)"},
            "Deadlines": {"Type": "String", "Default": "on", "AllowedValues": ["on", "off"], "Description": "off: orders wait for their steps forever (NATS older than 2.14 cannot schedule messages)"},
            "NatsUrl": {"Type": "String", "Description": "NATS server or cluster the bridge connects to, e.g. tls://nats.internal:4222"},
            "GatewayNatsPassword": {"Type": "String", "NoEcho": true, "MinLength": 16, "Description": "Password of the NATS user `gateway` (infra/nats: $JETSAGA_GATEWAY_PASSWORD)"},
            "JwtSecret": {"Type": "String", "NoEcho": true, "MinLength": 32, "Description": "The HTTP API's session token signing secret (32 characters or more)"},
            "NatsCredentialsSecretArn": {"Type": "String", "Description": "Secrets Manager secret holding the bridge user's NATS credentials (.creds file content)"},
            "BridgeImage": {"Type": "String", "Description": "Container image whose entrypoint is the jetsaga binary"},
            "BridgeCount": {"Type": "Number", "Default": 1, "MinValue": 0, "Description": "Bridge tasks; several share each function's consumer"},
            "BridgeBatchSize": {"Type": "String", "Default": "100", "Description": "Most records per invocation"},
            "BridgeConcurrency": {"Type": "String", "Default": "2", "Description": "Invocations in flight per function and task"},
            "StreamReplicas": {"Type": "String", "Default": "3", "AllowedValues": ["1", "3", "5"], "Description": "Replicas of the SAGA and DLQ streams (3 on the cluster of infra/nats)"},
            "Subnets": {"Type": "List<AWS::EC2::Subnet::Id>", "Description": "Private subnets that reach NATS and the Lambda API"},
            "SecurityGroups": {"Type": "List<AWS::EC2::SecurityGroup::Id>", "Description": "Security groups of the bridge tasks"},
            "LogRetentionDays": {"Type": "Number", "Default": 30, "AllowedValues": [1, 3, 5, 7, 14, 30, 60, 90, 180, 365]},
            "AlarmTopicArn": {"Type": "String", "Default": "", "Description": "SNS topic for alarms (empty: no notifications)"}
        },
        "Conditions": {
            "Orchestrated": {"Fn::Equals": [{"Ref": "SagaMode"}, "orchestrated"]},
            "Choreographed": {"Fn::Not": [{"Condition": "Orchestrated"}]},
            "HasAlarmTopic": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]}
        },
        "Resources": resources,
        "Outputs": outputs
    })
}

/// The HTTP gateway: the one bootstrap with `JETSAGA_FUNCTION=gateway`,
/// behind a Function URL in streaming mode (so the live order events, which
/// are server-sent events, reach the client as they happen). It does its own
/// authentication (session tokens), hence `AuthType: NONE`, and reaches NATS
/// from the private subnets as the `gateway` user; it needs no AWS access
/// beyond its log group and its network interfaces.
fn gateway(resources: &mut serde_json::Map<String, Value>, outputs: &mut serde_json::Map<String, Value>) {
    resources.insert(
        "GatewayLogGroup".into(),
        json!({
            "Type": "AWS::Logs::LogGroup",
            "DeletionPolicy": "Delete",
            "UpdateReplacePolicy": "Delete",
            "Properties": {
                "LogGroupName": {"Fn::Sub": "/aws/lambda/${Prefix}gateway"},
                "RetentionInDays": {"Ref": "LogRetentionDays"}
            }
        }),
    );
    resources.insert(
        "GatewayRole".into(),
        json!({
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Description": "jetsaga HTTP gateway: its log group and its network interfaces in the VPC, nothing else",
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]
                },
                "ManagedPolicyArns": [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"}],
                "Policies": [{
                    "PolicyName": "own-logs",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Effect": "Allow",
                            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                            "Resource": {"Fn::GetAtt": ["GatewayLogGroup", "Arn"]}
                        }]
                    }
                }]
            }
        }),
    );
    resources.insert(
        "GatewayFunction".into(),
        json!({
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": {"Fn::Sub": "${Prefix}gateway"},
                "Description": "jetsaga HTTP API: REST calls to the saga's NATS commands and queries",
                "Runtime": "provided.al2023",
                "Architectures": [{"Ref": "Architecture"}],
                "Handler": "bootstrap",
                "Code": format!("build/{}/bootstrap.zip", jetsaga_lambda::BOOTSTRAP_BINARY),
                "MemorySize": {"Ref": "MemorySize"},
                // A live order stream lasts at most 15 minutes; other requests time out after 15 s.
                "Timeout": 900,
                "Role": {"Fn::GetAtt": ["GatewayRole", "Arn"]},
                "VpcConfig": {"SubnetIds": {"Ref": "Subnets"}, "SecurityGroupIds": {"Ref": "SecurityGroups"}},
                "Environment": {"Variables": {
                    "JETSAGA_FUNCTION": "gateway",
                    "NATS_URL": {"Ref": "NatsUrl"},
                    "NATS_USER": "gateway",
                    "NATS_PASSWORD": {"Ref": "GatewayNatsPassword"},
                    "JETSAGA_JWT_SECRET": {"Ref": "JwtSecret"}
                }},
                "LoggingConfig": {"LogFormat": "JSON", "LogGroup": {"Ref": "GatewayLogGroup"}}
            }
        }),
    );
    resources.insert(
        "GatewayUrl".into(),
        json!({
            "Type": "AWS::Lambda::Url",
            "Properties": {
                "TargetFunctionArn": {"Fn::GetAtt": ["GatewayFunction", "Arn"]},
                "AuthType": "NONE",
                "InvokeMode": "RESPONSE_STREAM"
            }
        }),
    );
    resources.insert(
        "GatewayUrlPermission".into(),
        json!({
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunctionUrl",
                "FunctionName": {"Ref": "GatewayFunction"},
                "Principal": "*",
                "FunctionUrlAuthType": "NONE"
            }
        }),
    );
    resources.insert(
        "GatewayErrorsAlarm".into(),
        alarm(
            "jetsaga gateway: invocations failed (look at the gateway's logs)",
            ("AWS/Lambda", "Errors", "Sum"),
            json!([{"Name": "FunctionName", "Value": {"Ref": "GatewayFunction"}}]),
        ),
    );
    outputs.insert(
        "GatewayUrl".into(),
        json!({"Description": "The HTTP API (append api/...)", "Value": {"Fn::GetAtt": ["GatewayUrl", "FunctionUrl"]}}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_has_a_least_privilege_role_per_function() {
        let template = cloudformation();
        let role =
            &template["Resources"]["InventoryRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0];
        assert_eq!(role["Resource"], json!({"Fn::GetAtt": ["InventoryTable", "Arn"]}));
        assert_eq!(template["Resources"]["OrchestratorFunction"]["Condition"], "Orchestrated");
        assert_eq!(
            template["Resources"]["OrderTable"]["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
            true
        );
    }
}
