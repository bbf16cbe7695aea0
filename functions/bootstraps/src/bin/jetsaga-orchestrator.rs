//! Lambda bootstrap of the `orchestrator` function.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    jetsaga_lambda::serve(jetsaga_order::Orders { mode: jetsaga_events::SagaMode::Orchestrated }).await
}
