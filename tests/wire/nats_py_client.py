"""Drives a running jetsaga with nats-py, an independent NATS client.

Proves the wire contract: plain JSON on `orders.cmd.create` (as `nats pub`
sends it), request/reply answers with an order id, queries, and the
published events, without any jetsaga code.

Usage: NATS_URL=nats://... python nats_py_client.py
Prints one JSON object describing what it saw; exits non-zero on failure.
"""

import asyncio
import json
import os
import sys

import nats


async def wait_terminal(nc, order_id, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reply = await nc.request("orders.query.get", json.dumps({"order_id": order_id}).encode(), timeout=5)
        body = json.loads(reply.data)
        if body.get("status") in ("completed", "failed", "canceled"):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"order {order_id} still {body.get('status')} after {timeout}s")
        await asyncio.sleep(0.05)


async def main():
    nc = await nats.connect(os.environ["NATS_URL"])
    events = []

    async def on_event(msg):
        events.append({"subject": msg.subject, "envelope": json.loads(msg.data), "headers": dict(msg.headers or {})})

    await nc.subscribe("orders.evt.>", cb=on_event)

    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "..", "events", "samples", "create-order.json")) as f:
        sample = f.read()

    # Like `nats pub orders.cmd.create "$(cat events/samples/create-order.json)"` with an id we choose.
    published = json.loads(sample)
    published["order_id"] = "py-pub-1"
    await nc.publish("orders.cmd.create", json.dumps(published).encode())

    # Like `nats req orders.cmd.create ...`: answered with the order id.
    reply = await nc.request("orders.cmd.create", sample.encode(), timeout=10)
    requested = json.loads(reply.data)

    # A validation error comes back as an error reply.
    bad = await nc.request("orders.cmd.create", json.dumps({"customer_id": "c-ada", "items": []}).encode(), timeout=10)

    first = await wait_terminal(nc, "py-pub-1")
    second = await wait_terminal(nc, requested["saga_key"])
    products = json.loads((await nc.request("inventory.query.products", b"{}", timeout=5)).data)
    await asyncio.sleep(0.2)
    await nc.drain()
    print(json.dumps({
        "published": first,
        "requested_reply": requested,
        "requested": second,
        "validation_error": {"headers": dict(bad.headers or {}), "body": json.loads(bad.data)},
        "products": products,
        "events": events,
    }))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - report anything to the Rust test
        print(f"nats-py client failed: {e!r}", file=sys.stderr)
        sys.exit(1)
