//! Lambda bootstrap of the `inventory` function.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    jetsaga_lambda::serve(jetsaga_inventory::Inventory { mode: jetsaga_bootstraps::saga_mode() }).await
}
