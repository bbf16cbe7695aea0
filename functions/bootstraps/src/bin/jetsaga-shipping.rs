//! Lambda bootstrap of the `shipping` function.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    jetsaga_lambda::serve(jetsaga_shipping::Shipping {
        mode: jetsaga_bootstraps::saga_mode(),
        ..jetsaga_shipping::Shipping::with_failure_rate(jetsaga_bootstraps::shipping_failure_rate())
    })
    .await
}
