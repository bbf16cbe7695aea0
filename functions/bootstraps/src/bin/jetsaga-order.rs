//! Lambda bootstrap of the `order` function.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    jetsaga_lambda::serve(jetsaga_order::Orders { mode: jetsaga_events::SagaMode::Choreographed }).await
}
