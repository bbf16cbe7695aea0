//! What sagas cost on the Lambda target, from what a run's invocations
//! reported (each bootstrap's [`jetsaga_lambda::metrics`] lines): Lambda
//! requests and GB-seconds, DynamoDB request units, and the bridge's share
//! of its Fargate task, at list prices. Beside it, what the same saga
//! would cost on Step Functions, from its state-transition count.

use std::collections::BTreeMap;
use std::path::Path;

use jetsaga_lambda::metrics::Invocation;
use serde::Serialize;

/// List prices of one region, in US dollars.
#[derive(Clone, Debug, Serialize)]
pub struct Prices {
    /// The region and when the prices were read.
    pub region: &'static str,
    pub as_of: &'static str,
    /// Lambda: per request.
    pub lambda_request: f64,
    /// Lambda on arm64 (the template's default): per GB-second.
    pub lambda_gb_second: f64,
    /// DynamoDB on-demand: per read and per write request unit.
    pub read_unit: f64,
    pub write_unit: f64,
    /// Fargate on ARM64 (the bridge's task): per vCPU-hour and GB-hour.
    pub fargate_vcpu_hour: f64,
    pub fargate_gb_hour: f64,
    /// Step Functions Standard: per state transition.
    pub standard_transition: f64,
    /// Step Functions Express: per request and per GB-second (first tier).
    pub express_request: f64,
    pub express_gb_second: f64,
    /// Lambda durable functions: per durable operation (a step, a wait).
    pub durable_operation: f64,
}

/// us-east-1 list prices (first tiers, no free tier).
pub const US_EAST_1: Prices = Prices {
    region: "us-east-1",
    as_of: "2026-12",
    lambda_request: 0.20 / 1e6,
    lambda_gb_second: 0.000_013_333_4,
    read_unit: 0.125 / 1e6,
    write_unit: 0.625 / 1e6,
    fargate_vcpu_hour: 0.032_38,
    fargate_gb_hour: 0.003_56,
    standard_transition: 0.025 / 1e3,
    express_request: 1.00 / 1e6,
    express_gb_second: 0.000_016_67,
    durable_operation: 8.00 / 1e6,
};

/// The bridge's Fargate task in the template: 0.25 vCPU, 0.5 GB.
pub const BRIDGE_VCPU: f64 = 0.25;
pub const BRIDGE_GB: f64 = 0.5;

/// Invocations of a run, summed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    /// Invocations by function and request.
    pub invocations: BTreeMap<String, BTreeMap<String, u64>>,
    /// Billed milliseconds: each invocation's handler time rounded up.
    pub billed_ms: f64,
    pub read_units: f64,
    pub write_units: f64,
    /// The same by function: where the bill comes from.
    pub by_function: BTreeMap<String, FunctionUsage>,
}

/// One function's share of a run's usage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FunctionUsage {
    pub billed_ms: f64,
    pub read_units: f64,
    pub write_units: f64,
}

impl Usage {
    pub fn add(&mut self, invocation: &Invocation) {
        *self
            .invocations
            .entry(invocation.function.clone())
            .or_default()
            .entry(invocation.request.clone())
            .or_default() += 1;
        let billed_ms = invocation.handler_ms.ceil().max(1.0);
        self.billed_ms += billed_ms;
        self.read_units += invocation.read_units;
        self.write_units += invocation.write_units;
        let function = self.by_function.entry(invocation.function.clone()).or_default();
        function.billed_ms += billed_ms;
        function.read_units += invocation.read_units;
        function.write_units += invocation.write_units;
    }

    pub fn total_invocations(&self) -> u64 {
        self.invocations.values().flat_map(BTreeMap::values).sum()
    }

    /// Every invocation the bootstraps reported in their logs (their stdout).
    pub fn from_logs(logs: &[impl AsRef<Path>]) -> std::io::Result<Self> {
        let mut usage = Self::default();
        for log in logs {
            for line in std::fs::read_to_string(log)?.lines() {
                if let Some(invocation) = Invocation::parse(line) {
                    usage.add(&invocation);
                }
            }
        }
        Ok(usage)
    }
}

/// The bill for a million sagas, by item.
#[derive(Clone, Debug, Serialize)]
pub struct Bill {
    pub prices: Prices,
    pub sagas: usize,
    pub memory_mb: u32,
    /// The rate the bridge's share is computed at.
    pub sagas_per_sec: f64,
    /// Invocations of the run, by function and request.
    pub invocations: BTreeMap<String, BTreeMap<String, u64>>,
    /// Billed time and request units of the run, by function.
    pub by_function: BTreeMap<String, FunctionUsage>,
    /// Per saga.
    pub invocations_per_saga: f64,
    pub gb_seconds_per_saga: f64,
    pub read_units_per_saga: f64,
    pub write_units_per_saga: f64,
    /// Dollars per million sagas.
    pub lambda_requests: f64,
    pub lambda_duration: f64,
    pub dynamodb_reads: f64,
    pub dynamodb_writes: f64,
    pub bridge: f64,
    pub total: f64,
    /// The same saga on Step Functions and as a Lambda durable function,
    /// dollars per million, for the orchestration alone.
    pub step_functions_standard: f64,
    pub step_functions_express: f64,
    pub durable_functions: f64,
    /// What those are computed from.
    pub transitions_per_saga: u32,
    pub express_duration_ms: f64,
    pub durable_operations_per_saga: u32,
}

/// How a saga runs on the managed orchestrators, for the comparison: the
/// state transitions of one Step Functions run (each state entered counts
/// one), an Express execution's billed duration and memory, and the
/// durable operations (steps, waits) of one Lambda durable execution.
#[derive(Clone, Copy, Debug)]
pub struct StateMachine {
    pub transitions: u32,
    pub express_duration_ms: f64,
    pub express_memory_mb: f64,
    pub durable_operations: u32,
}

impl Bill {
    /// The bill of `usage` over `sagas`, each invocation at `memory_mb`; the
    /// bridge's task shared by sagas at `sagas_per_sec`.
    pub fn new(
        usage: &Usage,
        sagas: usize,
        memory_mb: u32,
        sagas_per_sec: f64,
        machine: StateMachine,
        prices: Prices,
    ) -> Self {
        let per_saga = |x: f64| x / sagas.max(1) as f64;
        let million = 1e6;
        let invocations_per_saga = per_saga(usage.total_invocations() as f64);
        let gb_seconds_per_saga = per_saga(usage.billed_ms / 1000.0 * f64::from(memory_mb) / 1024.0);
        let read_units_per_saga = per_saga(usage.read_units);
        let write_units_per_saga = per_saga(usage.write_units);
        let lambda_requests = invocations_per_saga * prices.lambda_request * million;
        let lambda_duration = gb_seconds_per_saga * prices.lambda_gb_second * million;
        let dynamodb_reads = read_units_per_saga * prices.read_unit * million;
        let dynamodb_writes = write_units_per_saga * prices.write_unit * million;
        let task_hour = BRIDGE_VCPU * prices.fargate_vcpu_hour + BRIDGE_GB * prices.fargate_gb_hour;
        let bridge = task_hour / (sagas_per_sec.max(f64::EPSILON) * 3600.0) * million;
        // Express bills duration in 100 ms steps and memory in 64 MB steps.
        let express_seconds = (machine.express_duration_ms / 100.0).ceil() * 0.1;
        let express_gb = (machine.express_memory_mb / 64.0).ceil() * 64.0 / 1024.0;
        Self {
            invocations: usage.invocations.clone(),
            by_function: usage.by_function.clone(),
            sagas,
            memory_mb,
            sagas_per_sec,
            invocations_per_saga,
            gb_seconds_per_saga,
            read_units_per_saga,
            write_units_per_saga,
            lambda_requests,
            lambda_duration,
            dynamodb_reads,
            dynamodb_writes,
            bridge,
            total: lambda_requests + lambda_duration + dynamodb_reads + dynamodb_writes + bridge,
            step_functions_standard: f64::from(machine.transitions) * prices.standard_transition * million,
            step_functions_express: (prices.express_request + express_seconds * express_gb * prices.express_gb_second)
                * million,
            durable_functions: f64::from(machine.durable_operations) * prices.durable_operation * million,
            transitions_per_saga: machine.transitions,
            express_duration_ms: machine.express_duration_ms,
            durable_operations_per_saga: machine.durable_operations,
            prices,
        }
    }

    /// The bill as lines for a terminal.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "  per saga:          {:.2} invocations, {:.5} GB-s at {} MB, {:.2} read and {:.2} write request units",
                self.invocations_per_saga,
                self.gb_seconds_per_saga,
                self.memory_mb,
                self.read_units_per_saga,
                self.write_units_per_saga
            ),
            format!(
                "  $ per million:     {:.2} total = Lambda requests {:.2} + duration {:.2} + DynamoDB reads {:.2} + writes {:.2} + bridge {:.2} (at {:.0} sagas/s)",
                self.total,
                self.lambda_requests,
                self.lambda_duration,
                self.dynamodb_reads,
                self.dynamodb_writes,
                self.bridge,
                self.sagas_per_sec
            ),
            format!(
                "  orchestration alone elsewhere, $ per million: Step Functions Standard {:.2} ({} transitions), \
                 Express {:.2} ({:.0} ms), Lambda durable functions {:.2} ({} operations); {} list prices of {}",
                self.step_functions_standard,
                self.transitions_per_saga,
                self.step_functions_express,
                self.express_duration_ms,
                self.durable_functions,
                self.durable_operations_per_saga,
                self.prices.region,
                self.prices.as_of
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bill_adds_up_from_the_invocations() {
        let mut usage = Usage::default();
        for (function, request, ms, read, write) in
            [("order", "batch", 2.2, 1.0, 6.0), ("order", "batch", 0.4, 1.0, 4.0), ("payment", "outbox", 1.0, 0.5, 0.0)]
        {
            let units = jetsaga_lambda::metrics::Units { read, write };
            usage.add(&Invocation::new(function, request, 1, ms, units));
        }
        assert_eq!(usage.total_invocations(), 3);
        assert_eq!(usage.invocations["order"]["batch"], 2);
        assert_eq!(usage.billed_ms, 3.0 + 1.0 + 1.0, "each invocation rounds up to the millisecond, at least one");
        assert_eq!(usage.by_function["order"].write_units, 10.0);
        assert_eq!(usage.by_function["payment"].billed_ms, 1.0);
        let machine = StateMachine {
            transitions: 10,
            express_duration_ms: 250.0,
            express_memory_mb: 64.0,
            durable_operations: 6,
        };
        let bill = Bill::new(&usage, 1, 1024, 100.0, machine, US_EAST_1);
        assert!((bill.lambda_requests - 0.60).abs() < 1e-9, "{}", bill.lambda_requests);
        assert!((bill.lambda_duration - 0.005 * 13.3334).abs() < 1e-6, "{}", bill.lambda_duration);
        assert!((bill.dynamodb_writes - 10.0 * 0.625).abs() < 1e-9);
        assert!((bill.dynamodb_reads - 2.5 * 0.125).abs() < 1e-9);
        let task_hour = 0.25 * 0.03238 + 0.5 * 0.00356;
        assert!((bill.bridge - task_hour / 360_000.0 * 1e6).abs() < 1e-9);
        let parts =
            bill.lambda_requests + bill.lambda_duration + bill.dynamodb_reads + bill.dynamodb_writes + bill.bridge;
        assert!((bill.total - parts).abs() < 1e-9);
        assert!((bill.step_functions_standard - 250.0).abs() < 1e-9);
        assert!((bill.durable_functions - 48.0).abs() < 1e-9);
        // 300 ms (three 100 ms steps) at 64 MB.
        assert!((bill.step_functions_express - (1.0 + 0.3 * 0.0625 * 16.67)).abs() < 1e-6);
    }
}
