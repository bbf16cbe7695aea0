//! The engine holds a function to its declaration: an event or a schedule
//! its `emits` does not list is a handler bug, dead-lettered with a reason
//! that says what to declare, and nothing of the run is committed.

use jetsaga_core::testing::TestFunction;
use jetsaga_core::{Ctx, Function, FunctionSpec, HandlerError, async_trait};
use jetsaga_events::{Envelope, OrderCompleted, OrderCreated};

static SPEC: FunctionSpec = FunctionSpec {
    name: "tester",
    description: "emits what it is told to",
    subscribes: &["orders.evt.created"],
    accepts: &[],
    direct: &[],
    emits: &["orders.evt.completed"],
    queries: &[],
    key_field: None,
};

/// Emits a declared event, then what `extra` says.
#[derive(Clone, Copy, Debug)]
enum Tester {
    Declared,
    Undeclared,
    UndeclaredSchedule,
}

#[async_trait]
impl Function for Tester {
    fn spec(&self) -> &'static FunctionSpec {
        &SPEC
    }

    async fn handle(&self, ctx: &mut Ctx<'_>, _event: &Envelope) -> Result<(), HandlerError> {
        ctx.put("touched", &true);
        let completed = OrderCompleted { order_id: "o-1".into(), total_cents: 100 };
        match self {
            Self::Declared => ctx.emit(completed),
            Self::Undeclared => ctx.emit_raw("orders.evt.somewhere_else", None, &serde_json::json!({})),
            Self::UndeclaredSchedule => ctx.schedule("tester", "o-1", ctx.now(), completed),
        }
        Ok(())
    }
}

fn created() -> OrderCreated {
    OrderCreated { order_id: "o-1".into(), customer_id: "c-1".into(), items: Vec::new() }
}

#[tokio::test]
async fn what_a_function_declares_it_may_emit() {
    let tester = TestFunction::new(Tester::Declared);
    assert_eq!(tester.when(&created()).await.emitted_types(), ["orders.evt.completed"]);
}

#[tokio::test]
async fn an_undeclared_event_is_dead_lettered_and_nothing_is_committed() {
    let tester = TestFunction::new(Tester::Undeclared);
    let run = tester.when(&created()).await;
    assert_eq!(
        run.dead_letter_reason(),
        "tester emitted orders.evt.somewhere_else, which its declaration does not list in `emits`"
    );
    assert_eq!(tester.state::<bool>("touched").await, None);
}

#[tokio::test]
async fn an_undeclared_schedule_is_dead_lettered_with_what_to_declare() {
    let tester = TestFunction::new(Tester::UndeclaredSchedule);
    let run = tester.when(&created()).await;
    let reason = run.dead_letter_reason();
    assert!(reason.starts_with("tester scheduled on schedules.tester."), "{reason}");
    assert!(reason.ends_with("(add \"schedules.tester.>\")"), "{reason}");
    assert_eq!(tester.state::<bool>("touched").await, None);
}
