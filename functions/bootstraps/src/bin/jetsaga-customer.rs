//! Lambda bootstrap of the `customer` function.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    jetsaga_lambda::serve(jetsaga_customer::CustomerCredit { mode: jetsaga_bootstraps::saga_mode() }).await
}
