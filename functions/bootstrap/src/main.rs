//! The Lambda `bootstrap` of every saga function and of the HTTP gateway:
//! `JETSAGA_FUNCTION` picks which one this Lambda runs (see the crate's library).

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let var = |name: &str| std::env::var(name).ok();
    if var(jetsaga_bootstrap::FUNCTION_VAR).as_deref() == Some(jetsaga_bootstrap::gateway::GATEWAY) {
        let settings = jetsaga_bootstrap::gateway::gateway_settings_from(var)?;
        return jetsaga_bootstrap::gateway::serve(settings).await;
    }
    let function = jetsaga_bootstrap::function_from(var)?;
    jetsaga_lambda::serve(function).await
}
