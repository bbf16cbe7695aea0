//! `ledger`: a minimal function for testing the runtime, not the saga.
//!
//! `ledger.cmd.deposit {"account", "amount", "fail_first"?}` adds to a
//! balance and emits `ledger.evt.deposited`. `fail_first: n` makes the
//! first n attempts of that event fail as retryable (counted in memory).
//! `ledger.cmd.open {"account"}` (request/reply) opens an account once.
//! `ledger.query.balance {"account"}` answers the balance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, QueryCtx, QueryError, async_trait};
use jetsaga_events::Envelope;
use serde::{Deserialize, Serialize};

/// The deposit command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deposit {
    /// Account id.
    pub account: String,
    /// Amount to add.
    pub amount: u64,
    /// Fail this many attempts first.
    #[serde(default)]
    pub fail_first: u32,
    /// The store "is down" for this many attempts first.
    #[serde(default)]
    pub unavailable_first: u32,
    /// Panic in the handler (a bug) instead of depositing.
    #[serde(default)]
    pub panic: bool,
}

/// The deposited event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deposited {
    /// Account id.
    pub account: String,
    /// Amount added.
    pub amount: u64,
    /// Balance after the deposit.
    pub balance: u64,
}

/// The ledger function; clones share the attempt counter.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    attempts: Arc<Mutex<HashMap<String, u32>>>,
}

/// Its declaration.
pub static SPEC: FunctionSpec = FunctionSpec {
    name: "ledger",
    description: "test ledger: deposits and balances",
    subscribes: &["ledger.cmd.deposit"],
    accepts: &["ledger.cmd.open"],
    direct: &[],
    emits: &["ledger.evt.deposited", "ledger.evt.opened"],
    queries: &["ledger.query.balance"],
    key_field: None,
};

#[async_trait]
impl Function for Ledger {
    fn spec(&self) -> &'static FunctionSpec {
        &SPEC
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        if event.event_type == "ledger.cmd.open" {
            #[derive(Deserialize)]
            struct Open {
                account: String,
            }
            let open: Open = jetsaga_events::envelope::decode_value("ledger.cmd.open", event.data.clone())?;
            let key = format!("balance/{}", open.account);
            if ctx.get::<u64>(&key).await?.is_some() {
                return Err(HandlerError::Rejected {
                    reason: format!("account {:?} is already open", open.account),
                    events: vec![],
                });
            }
            ctx.put(&key, &0u64);
            ctx.emit_raw("ledger.evt.opened", None, &serde_json::json!({"account": open.account}));
            return Ok(());
        }
        let deposit: Deposit = jetsaga_events::envelope::decode_value("ledger.cmd.deposit", event.data.clone())?;
        if deposit.panic {
            panic!("simulated bug in the ledger handler");
        }
        if deposit.unavailable_first > 0 {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(event.id.clone()).or_default();
            *n += 1;
            if *n <= deposit.unavailable_first {
                return Err(HandlerError::Unavailable(format!("simulated store outage, attempt {n}")));
            }
        }
        if deposit.fail_first > 0 {
            let mut attempts = self.attempts.lock().unwrap();
            let n = attempts.entry(event.id.clone()).or_default();
            *n += 1;
            if *n <= deposit.fail_first {
                return Err(HandlerError::retryable(format!("simulated outage, attempt {n}")));
            }
        }
        let key = format!("balance/{}", deposit.account);
        let balance = ctx.get::<u64>(&key).await?.unwrap_or(0) + deposit.amount;
        ctx.put(&key, &balance);
        ctx.emit_raw(
            "ledger.evt.deposited",
            None,
            &Deposited { account: deposit.account, amount: deposit.amount, balance },
        );
        Ok(())
    }

    async fn query(&self, ctx: &QueryCtx<'_>, _subject: &str, request: &[u8]) -> Result<serde_json::Value, QueryError> {
        #[derive(Deserialize)]
        struct Request {
            account: String,
        }
        let request: Request = jetsaga_events::envelope::decode_json("ledger.query.balance", request)?;
        match ctx.get::<u64>(&format!("balance/{}", request.account)).await? {
            Some(balance) => Ok(serde_json::json!({"account": request.account, "balance": balance})),
            None => Err(QueryError::NotFound(format!("no account {:?}", request.account))),
        }
    }
}
