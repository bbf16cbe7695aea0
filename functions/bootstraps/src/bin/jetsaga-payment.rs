//! Lambda bootstrap of the `payment` function.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    jetsaga_lambda::serve(jetsaga_payment::Payments { mode: jetsaga_bootstraps::saga_mode() }).await
}
