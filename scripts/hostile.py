"""The hostile-load driver (run by scripts/hostile against a running gateway).

Phase 1: good customers place orders over HTTP, one after another, and
each order's time from the create to its terminal status is measured.
Phase 2: the same, while one signed-up attacker and anonymous clients run
every attack of issue 26 at once:

- 200 live views of the attacker's own order, replaying from the start;
- 30 loops of correct log-ins, and wrong passwords against a good customer;
- a flood of sign-ups from another address;
- the attacker's own order flood (past the per-customer cap);
- oversized bodies, cross-site and form posts;
- over NATS: malformed commands with `Nats-Expected-Stream: COMMANDS`, and a
  forged dead letter that an administrator then tries to redrive.

Then it checks: the good customers' p50 under attack is at most --factor
times the p50 without and their p99 at most --p99-factor times the p99
without, every good order ended, the jetsaga process stayed
under --memory-mib, every attack was refused (counted by status), the good
customer can still log in, and the DLQ grew by exactly the malformed
commands. Exits 1 with the broken bound named.
"""

import argparse
import asyncio
import errno
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import threading
import time
import urllib.parse

PASSWORD = "correct horse battery staple"


class Client:
    """HTTP/1.1 to the gateway from one source address, with a token."""

    def __init__(self, api, source="127.0.0.1", token=None):
        url = urllib.parse.urlparse(api)
        self.host, self.port, self.source, self.token = url.hostname, url.port, source, token

    def call(self, method, path, body=None, headers=None, timeout=30, raw=None):
        # Thousands of refused requests a second from one address use up its
        # ephemeral ports (TIME_WAIT): wait for one rather than die.
        for attempt in range(50):
            try:
                return self._call(method, path, body, headers, timeout, raw)
            except OSError as e:
                if e.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL) or attempt == 49:
                    raise
                time.sleep(0.2)

    def _call(self, method, path, body, headers, timeout, raw):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout, source_address=(self.source, 0))
        h = dict(headers or {})
        if self.token:
            h["authorization"] = f"Bearer {self.token}"
        payload = raw
        if body is not None:
            payload = json.dumps(body).encode()
            h.setdefault("content-type", "application/json")
        try:
            conn.request(method, path, body=payload, headers=h)
            response = conn.getresponse()
            data = response.read()
            try:
                return response.status, json.loads(data) if data else None
            except ValueError:
                return response.status, data
        finally:
            conn.close()


def sign_up_and_log_in(api, email, source="127.0.0.1"):
    anon = Client(api, source)
    status, body = anon.call("POST", "/api/users", {"email": email, "password": PASSWORD, "name": email.split("@")[0]})
    assert status == 201, (email, status, body)
    status, body = anon.call("POST", "/api/session", {"email": email, "password": PASSWORD})
    assert status == 200, (email, status, body)
    return Client(api, source, body["token"])


def place_and_follow(client, product):
    started = time.monotonic()
    status, body = client.call("POST", "/api/orders", {"items": [{"product_id": product, "quantity": 1}]})
    if status != 202:
        return None, status
    order = body["order_id"]
    while True:
        status, view = client.call("GET", f"/api/orders/{order}")
        if status == 200 and view["status"] in ("completed", "failed", "canceled"):
            return time.monotonic() - started, view["status"]
        time.sleep(0.05)


def good_customers(customers, product, seconds):
    """Each customer orders one after another, a start every 1.2 s at most (their per-minute limit is 60)."""
    latencies, outcomes, lock = [], [], threading.Lock()
    deadline = time.monotonic() + seconds

    def run(client):
        while time.monotonic() < deadline:
            started = time.monotonic()
            took, outcome = place_and_follow(client, product)
            with lock:
                outcomes.append(outcome)
                if took is not None:
                    latencies.append(took)
            time.sleep(max(0.0, 1.2 - (time.monotonic() - started)))

    threads = [threading.Thread(target=run, args=(c,)) for c in customers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, outcomes


def cpu_seconds(pid):
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Memory(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.most, self.running = pid, 0, True

    def run(self):
        while self.running:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.most = max(self.most, int(line.split()[1]) // 1024)
            time.sleep(0.25)


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


def attack(api, attacker, own_order, victim_email, seconds, refused):
    """Every attack at once, for `seconds`; counts refusals by kind into `refused`."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def count(kind, status):
        with lock:
            refused.setdefault(kind, {}).setdefault(status, 0)
            refused[kind][status] += 1

    # (Every loop pauses a little: the driver shares the machine's cores
    # with jetsaga, and its own CPU must not be what slows the good orders.)
    def views():
        # Opens views of its own order replaying from the start, each read to its end.
        while time.monotonic() < stop:
            path = f"/api/orders/{own_order}/events"
            status, _ = attacker.call("GET", path, headers={"Last-Event-ID": "1"}, timeout=seconds + 5)
            count("live view", status)
            time.sleep(0.2)

    def log_ins():
        anon = Client(api, "127.0.0.5")
        while time.monotonic() < stop:
            status, _ = anon.call("POST", "/api/session", {"email": "mallory@example.com", "password": PASSWORD})
            count("log-in", status)
            status, _ = anon.call("POST", "/api/session", {"email": victim_email, "password": "a wrong guess"})
            count("wrong password", status)
            time.sleep(0.05)

    def sign_ups(offset):
        anon = Client(api, "127.0.0.6")
        i = 0
        while time.monotonic() < stop:
            status, _ = anon.call("POST", "/api/users", {"email": f"bot{offset}-{i}@example.com", "password": PASSWORD, "name": "Bot"})
            count("sign-up", status)
            i += 1
            time.sleep(0.05)

    def order_flood():
        while time.monotonic() < stop:
            status, _ = attacker.call("POST", "/api/orders", {"items": [{"product_id": "p-cheap", "quantity": 1}]})
            count("attacker's orders", status)
            time.sleep(0.02)

    def bad_bodies():
        while time.monotonic() < stop:
            big = {"items": [{"product_id": "p" * 40_000, "quantity": 1}]}
            count("oversized body", attacker.call("POST", "/api/orders", big)[0])
            cross = attacker.call("POST", "/api/orders", {"items": []}, headers={"origin": "https://evil.example"})[0]
            count("cross-site post", cross)
            form = attacker.call("POST", f"/api/orders/{own_order}/cancel", raw=b"reason=x",
                                 headers={"content-type": "application/x-www-form-urlencoded"})[0]
            count("form post", form)
            time.sleep(0.05)

    threads = [threading.Thread(target=views) for _ in range(200)]
    threads += [threading.Thread(target=log_ins) for _ in range(30)]
    threads += [threading.Thread(target=sign_ups, args=(k,)) for k in range(20)]
    threads += [threading.Thread(target=order_flood) for _ in range(5)]
    threads += [threading.Thread(target=bad_bodies) for _ in range(2)]
    for t in threads:
        t.daemon = True
        t.start()
    for t in threads:
        t.join(timeout=seconds + 10)


def attacker_process(api, token, own_order, victim_email, seconds, results):
    """The attack in a process of its own, at the lowest priority: on a
    machine shared with jetsaga, the attacker's own CPU (a remote
    attacker's, really) must not stand in for what the attack costs jetsaga."""
    os.nice(19)
    refused = {}
    attack(api, Client(api, "127.0.0.4", token), own_order, victim_email, seconds, refused)
    results.put(refused)


async def over_nats(nats_url, poisoned):
    """Malformed commands that would not fit the DLQ stream with their headers, and a forged dead letter."""
    import nats

    nc = await nats.connect(nats_url)
    for _ in range(poisoned):
        await nc.publish("orders.cmd.create", b"{not json", headers={"Nats-Expected-Stream": "COMMANDS"})
    js = nc.jetstream()
    forged = json.dumps({"id": "0193b1a2-7c4e-7d10-9f3b-2a6c1d0e4f99", "type": "orders.evt.completed", "order_id": "o-x",
                         "correlation_id": "forged", "occurred_at": "2026-11-22T01:00:00Z", "version": 1,
                         "data": {"order_id": "o-x", "total_cents": 1}}).encode()
    ack = await js.publish("dlq.inventory", forged, headers={
        "Jetsaga-Dlq-Function": "inventory", "Jetsaga-Dlq-Subject": "orders.evt.completed",
        "Jetsaga-Dlq-Origin": "SAGA/1", "Jetsaga-Dlq-Reason": "forged", "Jetsaga-Dlq-Attempts": "1"})
    await nc.flush()
    await nc.close()
    return ack.seq


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--pid", type=int, required=True, help="the jetsaga process whose memory is watched")
    parser.add_argument("--jetsaga", required=True, help="the jetsaga binary (to grant an administrator)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--p99-factor", type=float, default=3.0)
    parser.add_argument("--memory-mib", type=int, default=300)
    args = parser.parse_args()

    admin = sign_up_and_log_in(args.api, "root@example.com")
    subprocess.run([args.jetsaga, "--nats-url", args.nats_url, "users", "grant-admin", "root@example.com"], check=True,
                   stdout=subprocess.DEVNULL)
    status, _ = admin.call("PUT", "/api/products/p-cheap", {"name": "Sticker", "price_cents": 100, "stock": 1_000_000})
    assert status == 200, status
    # Good customers, each from an address of their own (as on the internet).
    customers = [sign_up_and_log_in(args.api, f"good{i}@example.com", f"127.0.1.{i + 1}") for i in range(4)]
    attacker = sign_up_and_log_in(args.api, "mallory@example.com", "127.0.0.4")
    status, body = attacker.call("POST", "/api/orders", {"items": [{"product_id": "p-cheap", "quantity": 1}]})
    own_order = body["order_id"]
    dlq_before = len(admin.call("GET", "/api/dlq")[1]["dead_letters"])

    memory = Memory(args.pid)
    memory.start()
    print(f"phase 1: {len(customers)} good customers for {args.seconds:.0f} s, no attack", flush=True)
    cpu = (cpu_seconds(args.pid), os.times())
    calm, calm_outcomes = good_customers(customers, "p-cheap", args.seconds)
    calm_cpu = (cpu_seconds(args.pid) - cpu[0], sum(os.times()[:2]) - sum(cpu[1][:2]))
    calm_memory, memory.most = memory.most, 0

    print("phase 2: the same under attack", flush=True)
    poisoned = 50
    forged_sequence = asyncio.run(over_nats(args.nats_url, poisoned))
    cpu = (cpu_seconds(args.pid), os.times())
    results = multiprocessing.Queue()
    attacker_run = multiprocessing.Process(target=attacker_process, args=(
        args.api, attacker.token, own_order, "good0@example.com", args.seconds, results))
    attacker_run.start()
    attacked, attacked_outcomes = good_customers(customers, "p-cheap", args.seconds)
    attack_cpu = (cpu_seconds(args.pid) - cpu[0], sum(os.times()[:2]) - sum(cpu[1][:2]))
    attack_memory = memory.most
    refused = results.get(timeout=args.seconds + 60)
    attacker_run.join()
    memory.running = False

    redrive_status, redrive = admin.call("POST", f"/api/dlq/{forged_sequence}/redrive")
    time.sleep(2)
    dlq_after = len(admin.call("GET", "/api/dlq")[1]["dead_letters"])
    owner_status, _ = Client(args.api, "127.0.1.1").call("POST", "/api/session", {"email": "good0@example.com", "password": PASSWORD})

    p50 = (statistics.median(calm), statistics.median(attacked))
    p99 = (percentile(calm, 0.99), percentile(attacked, 0.99))
    for name, took, mem, (server, driver) in (("without attack", calm, calm_memory, calm_cpu),
                                              ("under attack:  ", attacked, attack_memory, attack_cpu)):
        print(f"good orders {name} {len(took)}, p50 {statistics.median(took) * 1000:.0f} ms, "
              f"p99 {percentile(took, 0.99) * 1000:.0f} ms; jetsaga {mem} MiB, {server / args.seconds:.2f} cores; "
              f"good customers' driver {driver / args.seconds:.2f} cores")
    print(f"p50 ratio {p50[1] / p50[0]:.2f} (bound {args.factor}), p99 ratio {p99[1] / p99[0]:.2f} (bound {args.p99_factor})")
    for kind, statuses in sorted(refused.items()):
        print(f"  {kind:<18} " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses.items())))
    print(f"forged dead letter redriven by an administrator: {redrive_status} {redrive.get('detail', '') if isinstance(redrive, dict) else ''}")
    print(f"DLQ: {dlq_before} -> {dlq_after} ({poisoned} malformed commands sent, 1 forged letter kept)")
    print(f"the good customer logs in from their own address after the guessing: {owner_status}")

    problems = []
    if p50[1] > args.factor * p50[0]:
        problems.append(f"good orders' p50 under attack is {p50[1] / p50[0]:.2f}x the p50 without (bound {args.factor}x)")
    if p99[1] > args.p99_factor * p99[0]:
        problems.append(f"good orders' p99 under attack is {p99[1] / p99[0]:.2f}x the p99 without (bound {args.p99_factor}x)")
    if max(calm_memory, attack_memory) > args.memory_mib:
        problems.append(f"jetsaga used {max(calm_memory, attack_memory)} MiB (bound {args.memory_mib})")
    if any(o not in ("completed",) for o in calm_outcomes + attacked_outcomes):
        problems.append(f"good orders did not all complete: {sorted(set(map(str, calm_outcomes + attacked_outcomes)))}")
    # (429 is always allowed: the per-address pace refuses anything first.)
    allowed = {"live view": {200, 503}, "log-in": {200, 503}, "wrong password": {401, 503}, "sign-up": {201, 503},
               "attacker's orders": {202}, "oversized body": {413}, "cross-site post": {403}, "form post": {415}}
    allowed = {kind: statuses | {429} for kind, statuses in allowed.items()}
    for kind, statuses in refused.items():
        if not set(statuses) <= allowed[kind]:
            problems.append(f"{kind}: statuses {sorted(statuses)} beyond {sorted(allowed[kind])}")
        if kind in ("live view", "sign-up", "attacker's orders", "log-in") and not any(s in (429, 503) for s in statuses):
            problems.append(f"{kind}: never refused")
    if redrive_status != 403:
        problems.append(f"the forged dead letter's redrive answered {redrive_status}, not 403")
    if dlq_after != dlq_before + poisoned + 1:
        problems.append(f"the DLQ holds {dlq_after - dlq_before} new letters, not {poisoned} + 1")
    if owner_status != 200:
        problems.append(f"the good customer could not log in after the guessing ({owner_status})")
    for problem in problems:
        print(f"FAILED: {problem}")
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
