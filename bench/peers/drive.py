"""Drives the benchmark's saga on a peer system the way `jetsaga bench`
drives jetsaga: a catalog of five products with ample stock and one
customer with ample credit, then N orders of two lines each (the same lines
as jetsaga's), either as fast as a window of W orders in flight allows or
paced at R orders per second. Latency is from an order sent to its saga's
end; throughput from the first order sent to the last end. CPU is what the
system's processes (server and service or worker, with their children)
used during the run. Correctness: every order ends exactly once, completed,
and stock is conserved (what is left, reserved and used up adds up to what
there was, and what was used up is what the completed orders took).

    python drive.py restate  --orders 3000 --window 256 --pids 123,456 --json out.json
    python drive.py temporal --orders 3000 --rate 100 --db state.db --pids 123,456
"""

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time

PRODUCTS = [(f"p-bench-{i}", 100 + i * 25) for i in range(1, 6)]
MAX_CREDIT = 10**15
# One customer, as in jetsaga's benchmark; --customers spreads the orders.
CUSTOMERS = ["c-bench"]


def order_of(i):
    """The i-th order, with the same lines as jetsaga's benchmark."""
    items = [
        {"product_id": PRODUCTS[i % 5][0], "quantity": 1 + i % 2},
        {"product_id": PRODUCTS[(i + 1) % 5][0], "quantity": 1},
    ]
    customer = CUSTOMERS[i % len(CUSTOMERS)]
    return {"order_id": f"b-{i}", "customer_id": customer, "items": items, "prices": dict(PRODUCTS)}


def usage(pids):
    """CPU seconds (user + system) and resident MiB of these processes and all their descendants."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    children, stats = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        stats[pid] = ((int(fields[11]) + int(fields[12])) / tick, int(fields[21]) * page / 2**20)
    cpu, rss, todo, seen = 0.0, 0.0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        pid_cpu, pid_rss = stats.get(pid, (0.0, 0.0))
        cpu, rss = cpu + pid_cpu, rss + pid_rss
        todo.extend(children.get(pid, []))
    return cpu, rss


class Restate:
    """Orders through Restate's HTTP ingress: POST /order/<id>/run waits for the workflow's result."""

    def __init__(self, args):
        self.url = args.ingress

    async def call(self, path, body):
        headers = {"content-type": "application/json"}
        async with self.http.post(f"{self.url}/{path}", data=json.dumps(body), headers=headers) as answer:
            text = await answer.text()
            if answer.status >= 300:
                raise RuntimeError(f"POST {path}: {answer.status} {text}")
            return json.loads(text) if text else None

    async def seed(self, orders):
        import aiohttp

        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        for product, _ in PRODUCTS:
            await self.call(f"inventory/{product}/set", orders * 3)
        for customer in CUSTOMERS:
            await self.call(f"customer/{customer}/create", MAX_CREDIT)

    async def order(self, order):
        return await self.call(f"order/{order['order_id']}/run", order)

    async def stock(self):
        return {p: await self.call(f"inventory/{p}/get", None) for p, _ in PRODUCTS}

    async def close(self):
        await self.http.close()


class Temporal:
    """Orders as Temporal workflow executions, each awaited to its result."""

    def __init__(self, args):
        self.address = args.address
        self.db = args.db

    async def seed(self, orders):
        from temporalio.client import Client

        self.client = await Client.connect(self.address)
        db = sqlite3.connect(self.db, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        for product, _ in PRODUCTS:
            db.execute("INSERT OR REPLACE INTO stock VALUES (?, ?, 0, 0)", (product, orders * 3))
        for customer in CUSTOMERS:
            db.execute("INSERT OR REPLACE INTO credit VALUES (?, ?, 0)", (customer, MAX_CREDIT))
        db.close()

    async def order(self, order):
        return await self.client.execute_workflow(
            "OrderSaga", order, id=order["order_id"], task_queue="jetsaga-peer"
        )

    async def stock(self):
        db = sqlite3.connect(self.db)
        rows = db.execute("SELECT product_id, stock, reserved, consumed FROM stock").fetchall()
        db.close()
        return {p: {"stock": s, "reserved": r, "consumed": c} for p, s, r, c in rows}

    async def close(self):
        pass


def percentile(samples, q):
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[round((len(ordered) - 1) * q)]


async def drive(system, args):
    await system.seed(args.orders)
    pids = [int(p) for p in args.pids.split(",") if p]
    cpu_before, _ = usage(pids)
    window = asyncio.Semaphore(args.window)
    ends, latencies, errors = {}, [], []

    async def one(i):
        order = order_of(i)
        sent = time.perf_counter()
        try:
            result = await system.order(order)
            end = time.perf_counter()
            if order["order_id"] in ends:
                errors.append(f"{order['order_id']} ended twice")
            ends[order["order_id"]] = (result.get("outcome"), end)
            latencies.append((end - sent) * 1000)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append(f"{order['order_id']}: {e}")
        finally:
            window.release()

    start = time.perf_counter()
    tasks = []
    for i in range(args.orders):
        if args.rate:
            due = start + i / args.rate
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
        await window.acquire()
        tasks.append(asyncio.create_task(one(i)))
        if i % 500 == 0:
            print(f"\r  {len(ends)} / {args.orders} orders finished", end="", file=sys.stderr)
    await asyncio.gather(*tasks)
    print(f"\r  {len(ends)} / {args.orders} orders finished", file=sys.stderr)
    last = max((at for _, at in ends.values()), default=time.perf_counter())
    seconds = last - start
    cpu, rss = usage(pids)
    cpu -= cpu_before

    # Correctness: one completed end per order, stock conserved.
    problems = list(errors[:20])
    outcomes = {}
    for outcome, _ in ends.values():
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    if len(ends) != args.orders:
        problems.append(f"{args.orders - len(ends)} orders did not end")
    taken = {p: 0 for p, _ in PRODUCTS}
    for i in range(args.orders):
        if ends.get(f"b-{i}", (None,))[0] == "completed":
            for line in order_of(i)["items"]:
                taken[line["product_id"]] += line["quantity"]
    for _ in range(50):  # one-way consumes may still be on their way
        stock = await system.stock()
        if all(stock[p]["reserved"] == 0 for p in taken):
            break
        await asyncio.sleep(0.2)
    for product, used in taken.items():
        s = stock[product]
        if s["stock"] + s["reserved"] + s["consumed"] != args.orders * 3:
            problems.append(f"{product}: stock not conserved {s}")
        if s["consumed"] != used:
            problems.append(f"{product}: {s['consumed']} used up, the completed orders took {used}")
    await system.close()
    return {
        "system": args.system,
        "orders": args.orders,
        "rate": args.rate,
        "window": args.window,
        "customers": args.customers,
        "durability": args.durability,
        "sagas_per_sec": len(ends) / max(seconds, 1e-9),
        "saga_seconds": seconds,
        "latency": {
            "p50_ms": percentile(latencies, 0.5),
            "p90_ms": percentile(latencies, 0.9),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": max(latencies, default=0.0),
        },
        "cpu_seconds": cpu,
        "cpu_ms_per_saga": cpu * 1000 / max(len(ends), 1),
        "rss_mib": rss,
        "outcomes": outcomes,
        "correct": not problems,
        "problems": problems,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("system", choices=["restate", "temporal"])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--window", type=int, default=256, help="orders in flight at most")
    parser.add_argument("--rate", type=float, help="orders per second (paced); without it, as fast as --window allows")
    parser.add_argument("--pids", default="", help="the system's processes, comma-separated, for CPU and memory")
    parser.add_argument("--ingress", default="http://127.0.0.1:8080", help="Restate's ingress")
    parser.add_argument("--address", default="127.0.0.1:7233", help="Temporal's frontend")
    parser.add_argument("--db", help="Temporal: the activities' SQLite file")
    parser.add_argument(
        "--customers", type=int, default=1, help="customers the orders are spread over (jetsaga's benchmark has one)"
    )
    parser.add_argument("--durability", default="", help="what the figures hold for, as stated in the report")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.orders < 1 or args.window < 1 or args.customers < 1:
        parser.error("--orders, --window and --customers must be at least 1")
    CUSTOMERS[:] = [f"c-bench-{i}" for i in range(args.customers)] if args.customers > 1 else ["c-bench"]
    if args.system == "temporal" and not args.db:
        parser.error("temporal needs --db, the worker's SQLite file")
    system = Restate(args) if args.system == "restate" else Temporal(args)
    report = asyncio.run(drive(system, args))
    l = report["latency"]
    print(
        f"{args.system}: {report['orders']} orders"
        + (f", paced at {args.rate:g}/s" if args.rate else f", window {args.window}")
        + f"\n  sagas/s:     {report['sagas_per_sec']:.0f}  ({report['saga_seconds']:.2f} s)"
        + f"\n  latency:     p50 {l['p50_ms']:.1f}  p90 {l['p90_ms']:.1f}  p99 {l['p99_ms']:.1f}  max {l['max_ms']:.1f} ms"
        + f"\n  cpu:         {report['cpu_seconds']:.1f} s ({report['cpu_ms_per_saga']:.2f} ms per saga), RSS {report['rss_mib']:.0f} MiB"
        + f"\n  outcomes:    {report['outcomes']}"
        + "\n  correctness: " + ("ok" if report["correct"] else "FAILED: " + "; ".join(report["problems"]))
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    sys.exit(0 if report["correct"] else 1)


if __name__ == "__main__":
    main()
