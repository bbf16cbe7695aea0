//! Where functions keep their state: one SQLite file per function, or
//! one PostgreSQL schema per function.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jetsaga_core::{Engine, Function, Store};
use jetsaga_sql::{Durability, PostgresStore, SqliteStore};

/// Where functions keep their state.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// One SQLite file per function in this directory.
    Sqlite {
        /// Directory of the `<function>.db` files.
        dir: PathBuf,
        /// fsync policy.
        durability: Durability,
    },
    /// One schema per function (`<prefix><function>`) in this database.
    Postgres {
        /// Connection URL.
        url: String,
        /// Schema name prefix.
        schema_prefix: String,
    },
}

impl StoreConfig {
    /// SQLite files under `dir` with the default durability.
    pub fn sqlite(dir: impl AsRef<Path>) -> Self {
        Self::Sqlite { dir: dir.as_ref().to_path_buf(), durability: Durability::Normal }
    }

    /// A short description for the startup banner.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite { dir, durability } => {
                format!("SQLite files in {} (synchronous={durability:?})", dir.display())
            }
            Self::Postgres { schema_prefix, .. } => format!("PostgreSQL schemas {schema_prefix}<function>"),
        }
    }

    /// Opens each function's store and pairs the two.
    pub async fn engines(&self, functions: Vec<Arc<dyn Function>>) -> anyhow::Result<Vec<Engine>> {
        use anyhow::Context as _;
        let pool = match self {
            Self::Postgres { url, .. } => Some(
                jetsaga_sql::connect_postgres(url, 5 * functions.len() as u32)
                    .await
                    .context("cannot connect to PostgreSQL")?,
            ),
            Self::Sqlite { dir, .. } => {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
                None
            }
        };
        let mut engines = Vec::new();
        for function in functions {
            let name = function.spec().name;
            let store: Arc<dyn Store> = match (self, &pool) {
                (Self::Sqlite { dir, durability }, _) => {
                    let path = dir.join(format!("{name}.db"));
                    let store = SqliteStore::open(&path, *durability).await;
                    Arc::new(store.with_context(|| format!("cannot open {name}'s store {}", path.display()))?)
                }
                (Self::Postgres { schema_prefix, .. }, Some(pool)) => {
                    let schema = format!("{schema_prefix}{name}");
                    let store = PostgresStore::open(pool.clone(), &schema).await;
                    Arc::new(store.with_context(|| format!("cannot open {name}'s schema {schema}"))?)
                }
                (Self::Postgres { .. }, None) => unreachable!("the pool is opened above for PostgreSQL"),
            };
            engines.push(Engine::new(function, store));
        }
        Ok(engines)
    }
}
