"""The jetsaga benchmark's saga on Temporal (Python SDK): a workflow with
four activities (reserve stock, reserve credit, execute payment, schedule
shipping) and, when one refuses, the compensations of the steps before it
in reverse. The activities keep the business state in one SQLite file (WAL,
synchronous=NORMAL, as jetsaga's default), each step in one transaction
that also records the step as done for the order, so a retried activity
does not do it twice (jetsaga's functions have their inbox for that).

Run as a worker:  python saga.py worker --db state.db
"""

import argparse
import asyncio
import sqlite3
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

TASK_QUEUE = "jetsaga-peer"
SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (product_id TEXT PRIMARY KEY, stock INTEGER, reserved INTEGER, consumed INTEGER);
CREATE TABLE IF NOT EXISTS credit (customer_id TEXT PRIMARY KEY, credit_limit INTEGER, used INTEGER);
CREATE TABLE IF NOT EXISTS payment (order_id TEXT PRIMARY KEY, charged INTEGER, refunded INTEGER);
CREATE TABLE IF NOT EXISTS shipment (order_id TEXT PRIMARY KEY, lines TEXT);
CREATE TABLE IF NOT EXISTS done (step TEXT, order_id TEXT, PRIMARY KEY (step, order_id));
"""


def open_db(path):
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class Steps:
    """The four steps and their compensations, over one SQLite file."""

    def __init__(self, db):
        self.db = db

    def once(self, step, order_id, work):
        """Runs `work` in one transaction unless `step` was done for the order."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("INSERT OR IGNORE INTO done VALUES (?, ?)", (step, order_id)).rowcount == 0:
                db.execute("COMMIT")
                return None
            result = work(db)
            db.execute("COMMIT")
            return result
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @activity.defn
    async def reserve_stock(self, order: dict) -> int:
        def work(db):
            total = 0
            for line in order["items"]:
                (stock,) = db.execute("SELECT stock FROM stock WHERE product_id = ?", (line["product_id"],)).fetchone()
                if stock < line["quantity"]:
                    raise ApplicationError(f"only {stock} of {line['product_id']} left", non_retryable=True)
                db.execute(
                    "UPDATE stock SET stock = stock - ?, reserved = reserved + ? WHERE product_id = ?",
                    (line["quantity"], line["quantity"], line["product_id"]),
                )
                total += order["prices"][line["product_id"]] * line["quantity"]
            return total

        self.once("reserve_stock", order["order_id"], work)
        return sum(order["prices"][l["product_id"]] * l["quantity"] for l in order["items"])

    @activity.defn
    async def release_stock(self, order: dict) -> None:
        def work(db):
            for line in order["items"]:
                db.execute(
                    "UPDATE stock SET stock = stock + ?, reserved = reserved - ? WHERE product_id = ?",
                    (line["quantity"], line["quantity"], line["product_id"]),
                )

        self.once("release_stock", order["order_id"], work)

    @activity.defn
    async def consume_stock(self, order: dict) -> None:
        def work(db):
            for line in order["items"]:
                db.execute(
                    "UPDATE stock SET reserved = reserved - ?, consumed = consumed + ? WHERE product_id = ?",
                    (line["quantity"], line["quantity"], line["product_id"]),
                )

        self.once("consume_stock", order["order_id"], work)

    @activity.defn
    async def reserve_credit(self, args: list) -> None:
        order, total = args

        def work(db):
            limit, used = db.execute(
                "SELECT credit_limit, used FROM credit WHERE customer_id = ?", (order["customer_id"],)
            ).fetchone()
            if used + total > limit:
                raise ApplicationError(f"credit limit of {order['customer_id']} reached", non_retryable=True)
            db.execute("UPDATE credit SET used = used + ? WHERE customer_id = ?", (total, order["customer_id"]))

        self.once("reserve_credit", order["order_id"], work)

    @activity.defn
    async def release_credit(self, args: list) -> None:
        order, total = args
        self.once(
            "release_credit",
            order["order_id"],
            lambda db: db.execute("UPDATE credit SET used = used - ? WHERE customer_id = ?", (total, order["customer_id"])),
        )

    @activity.defn
    async def execute_payment(self, args: list) -> None:
        order, total = args
        if total % 100 == 99:  # jetsaga's payment rule
            raise ApplicationError("declined", non_retryable=True)
        self.once(
            "execute_payment",
            order["order_id"],
            lambda db: db.execute("INSERT INTO payment VALUES (?, ?, 0)", (order["order_id"], total)),
        )

    @activity.defn
    async def refund_payment(self, order: dict) -> None:
        self.once(
            "refund_payment",
            order["order_id"],
            lambda db: db.execute("UPDATE payment SET refunded = charged WHERE order_id = ?", (order["order_id"],)),
        )

    @activity.defn
    async def schedule_shipping(self, order: dict) -> None:
        self.once(
            "schedule_shipping",
            order["order_id"],
            lambda db: db.execute("INSERT INTO shipment VALUES (?, ?)", (order["order_id"], repr(order["items"]))),
        )


STEP = dict(start_to_close_timeout=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=0))


@workflow.defn
class OrderSaga:
    @workflow.run
    async def run(self, order: dict) -> dict:
        undo = []
        try:
            total = await workflow.execute_activity("reserve_stock", order, **STEP)
            undo.append(("release_stock", order))
            await workflow.execute_activity("reserve_credit", [order, total], **STEP)
            undo.append(("release_credit", [order, total]))
            await workflow.execute_activity("execute_payment", [order, total], **STEP)
            undo.append(("refund_payment", order))
            await workflow.execute_activity("schedule_shipping", order, **STEP)
        except ActivityError as e:
            for name, arg in reversed(undo):
                await workflow.execute_activity(name, arg, **STEP)
            return {"outcome": "failed", "reason": str(e.cause or e)}
        await workflow.execute_activity("consume_stock", order, **STEP)
        return {"outcome": "completed", "total_cents": total}


async def serve(address, db_path):
    client = await Client.connect(address)
    steps = Steps(open_db(db_path))
    activities = [
        steps.reserve_stock,
        steps.release_stock,
        steps.consume_stock,
        steps.reserve_credit,
        steps.release_credit,
        steps.execute_payment,
        steps.refund_payment,
        steps.schedule_shipping,
    ]
    # Unsandboxed: the sandbox re-imports modules per workflow run, which
    # would measure the Python sandbox rather than Temporal.
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[OrderSaga],
        activities=activities,
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=256,
        max_concurrent_workflow_tasks=256,
    )
    await worker.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["worker"])
    parser.add_argument("--address", default="127.0.0.1:7233")
    parser.add_argument("--db", required=True, help="the SQLite file of the business state")
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.db))
