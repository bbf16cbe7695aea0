//! The in-memory store passes the shared conformance suite.

use std::sync::Arc;

jetsaga_core::store_conformance_tests!(async { Arc::new(jetsaga_core::MemoryStore::new()) });
