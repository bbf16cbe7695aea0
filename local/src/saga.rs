//! The order saga's functions and their stores: which functions exist,
//! and how one is built for a given storage backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jetsaga_core::{Engine, Function, Store};
use jetsaga_events::SagaMode;
use jetsaga_sql::{Durability, PostgresStore, SqliteStore};

/// Every function of the choreographed saga, in flow order.
pub const FUNCTIONS: [&str; 5] = ["order", "inventory", "customer", "payment", "shipping"];

/// Every function of the orchestrated saga: the orchestrator takes the order function's place.
pub const ORCHESTRATED_FUNCTIONS: [&str; 5] = ["orchestrator", "inventory", "customer", "payment", "shipping"];

/// Knobs of the demo saga.
#[derive(Clone, Debug, Default)]
pub struct SagaOptions {
    /// Share of shipments that fail (0.0–1.0).
    pub shipping_failure_rate: f64,
    /// Choreographed (events) or orchestrated (commands from one orchestrator).
    pub mode: SagaMode,
}

impl SagaOptions {
    /// The functions of the saga in this mode.
    pub fn functions(&self) -> [&'static str; 5] {
        match self.mode {
            SagaMode::Choreographed => FUNCTIONS,
            SagaMode::Orchestrated => ORCHESTRATED_FUNCTIONS,
        }
    }
}

impl SagaOptions {
    fn all_functions(&self) -> Vec<Arc<dyn Function>> {
        self.functions().iter().map(|name| function(name, self).expect("the saga's own functions exist")).collect()
    }

    /// Every subject the saga stream captures for the whole saga in this
    /// mode, whichever of its functions a process hosts (see
    /// `jetsaga_jetstream::Config::stream_subjects`).
    pub fn stream_subjects(&self) -> Vec<String> {
        let functions = self.all_functions();
        jetsaga_jetstream::provision::stream_subjects(functions.iter().map(|f| f.spec())).into_iter().collect()
    }

    /// Every command subject of the whole saga in this mode (see
    /// `jetsaga_jetstream::Config::command_subjects`).
    pub fn command_subjects(&self) -> Vec<String> {
        let functions = self.all_functions();
        jetsaga_jetstream::provision::command_subjects(functions.iter().map(|f| f.spec())).into_iter().collect()
    }

    /// The runtime's default configuration for this saga: every process
    /// asks for the same streams, whichever functions it hosts.
    pub fn runtime_config(&self) -> jetsaga_jetstream::Config {
        jetsaga_jetstream::Config {
            stream_subjects: self.stream_subjects(),
            command_subjects: self.command_subjects(),
            ..jetsaga_jetstream::Config::default()
        }
    }
}

/// Builds the function called `name`.
pub fn function(name: &str, options: &SagaOptions) -> Result<Arc<dyn Function>, String> {
    let mode = options.mode;
    Ok(match (name, mode) {
        ("order", SagaMode::Choreographed) | ("orchestrator", SagaMode::Orchestrated) => {
            Arc::new(jetsaga_order::Orders { mode })
        }
        ("inventory", _) => Arc::new(jetsaga_inventory::Inventory { mode }),
        ("customer", _) => Arc::new(jetsaga_customer::CustomerCredit { mode }),
        ("payment", _) => Arc::new(jetsaga_payment::Payments { mode }),
        ("shipping", _) => Arc::new(jetsaga_shipping::Shipping {
            mode,
            ..jetsaga_shipping::Shipping::with_failure_rate(options.shipping_failure_rate)
        }),
        (other, mode) => {
            return Err(format!(
                "no function {other:?} in the {mode:?} saga: choose from {}",
                options.functions().join(", ")
            ));
        }
    })
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
            let function = function(name, options)?;
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
