//! The saga's functions (defined once, in `jetsaga-saga`) and their
//! stores: how each is paired with its storage backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jetsaga_core::{Engine, Store};
use jetsaga_sql::{Durability, PostgresStore, SqliteStore};

pub use jetsaga_saga::{Deadlines, OrderLimits, SagaOptions, all_names, human, mode_name, names};

/// The runtime's configuration for the saga: every process asks for the
/// same streams, whichever functions it hosts.
pub fn runtime_config(options: &SagaOptions) -> jetsaga_jetstream::Config {
    let functions = options.functions();
    let specs = || functions.iter().map(|f| f.spec());
    jetsaga_jetstream::Config {
        stream_subjects: jetsaga_jetstream::provision::stream_subjects(specs()).into_iter().collect(),
        command_subjects: jetsaga_jetstream::provision::command_subjects(specs()).into_iter().collect(),
        ..jetsaga_jetstream::Config::default()
    }
    .with_saga(specs())
}

/// Every function's declaration in every saga mode it runs in.
pub fn every_spec() -> Vec<&'static jetsaga_core::FunctionSpec> {
    jetsaga_saga::STEPS.iter().flat_map(|step| step.modes.iter().map(|mode| step.spec(*mode))).collect()
}

/// The commands the functions called `names` accept (what a process
/// hosting them can be sent).
pub fn accepted_commands(options: &SagaOptions, names: &[String]) -> Vec<&'static str> {
    names.iter().filter_map(|n| options.function(n).ok()).flat_map(|f| f.spec().accepts.iter().copied()).collect()
}

/// Whether the function called `name` consumes the saga stream (it
/// subscribes to something, in either mode).
pub fn subscribes(name: &str) -> bool {
    jetsaga_saga::step(name).is_some_and(|step| step.modes.iter().any(|mode| !step.spec(*mode).subscribes.is_empty()))
}

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

    /// Opens the stores of `names` and pairs each with its function.
    pub async fn engines(&self, names: &[String], options: &SagaOptions) -> Result<Vec<Engine>, String> {
        let pool = match self {
            Self::Postgres { url, .. } => {
                Some(jetsaga_sql::connect_postgres(url, 5 * names.len() as u32).await.map_err(|e| e.to_string())?)
            }
            Self::Sqlite { .. } => None,
        };
        let mut engines = Vec::new();
        for name in names {
            let function = options.function(name)?;
            let store: Arc<dyn Store> = match self {
                Self::Sqlite { dir, durability } => Arc::new(
                    SqliteStore::open(dir.join(format!("{name}.db")), *durability).await.map_err(|e| e.to_string())?,
                ),
                Self::Postgres { schema_prefix, .. } => {
                    let pool = pool.clone().expect("pool opened above");
                    Arc::new(
                        PostgresStore::open(pool, &format!("{schema_prefix}{name}"))
                            .await
                            .map_err(|e| e.to_string())?,
                    )
                }
            };
            engines.push(Engine::new(function, store));
        }
        Ok(engines)
    }
}
