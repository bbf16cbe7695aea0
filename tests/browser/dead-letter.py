#!/usr/bin/env python3
"""Writes a dead letter into the DLQ stream the way jetsaga's runtime does
(a function that gave up on a message): nats-url function subject reason payload."""
import asyncio
import sys
from datetime import datetime, timezone

import nats


async def main(url, function, subject, reason, payload):
    nc = await nats.connect(url)
    js = nc.jetstream()
    headers = {
        "Jetsaga-Dlq-Function": function,
        "Jetsaga-Dlq-Reason": reason,
        "Jetsaga-Dlq-Attempts": "5",
        "Jetsaga-Dlq-Subject": subject,
        # A command that came by request (nothing in a stream to check it against).
        "Jetsaga-Dlq-Origin": "request/" + datetime.now(timezone.utc).strftime("%H%M%S%f"),
        "Jetsaga-Dlq-At": datetime.now(timezone.utc).isoformat(),
    }
    await js.publish(f"dlq.{function}", payload.encode(), headers=headers)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
