//! A real DynamoDB-compatible endpoint per test: `AWS_ENDPOINT_URL` if set
//! (LocalStack, DynamoDB Local), otherwise moto's server (`pip install
//! 'moto[server]'`, done by scripts/setup) on a random port, killed on drop.

use jetsaga_local::lambda_local::DynamoEndpoint;

/// A DynamoDB-compatible endpoint.
#[derive(Debug)]
pub struct Endpoint {
    inner: DynamoEndpoint,
}

impl Endpoint {
    /// `AWS_ENDPOINT_URL` if set, otherwise a fresh moto server.
    pub fn start() -> Self {
        Self { inner: DynamoEndpoint::start().unwrap_or_else(|e| panic!("{e}")) }
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// A DynamoDB client for this endpoint with dummy credentials.
    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.url())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"))
            .load()
            .await;
        aws_sdk_dynamodb::Client::new(&config)
    }
}
