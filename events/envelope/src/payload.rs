//! The trait every message body implements.

use schemars::JsonSchema;
use serde::Serialize;

/// A message body with a fixed subject.
pub trait Payload:
    Serialize + serde::de::DeserializeOwned + JsonSchema + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The subject this payload is published on.
    const SUBJECT: &'static str;

    /// The saga this payload belongs to, if it names one: the envelope's
    /// `saga_key` when it is emitted.
    fn saga_key(&self) -> Option<&str> {
        None
    }
}
