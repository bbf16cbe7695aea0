//! The Lambda `bootstrap` of every saga function: `JETSAGA_FUNCTION`
//! picks which one this Lambda runs (see the crate's library).

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let function = jetsaga_bootstrap::function_from(|name| std::env::var(name).ok())?;
    jetsaga_lambda::serve(function).await
}
