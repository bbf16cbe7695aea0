"""Runs the Kubernetes manifests as `scripts/deploy-k8s --render DIR`
renders them (the generated infra/kubernetes with the image set) and the
Secrets it made, with `podman kube play` on this machine, as closely as
podman allows, and drives the saga through them.

podman 4.3 runs Pods, Deployments, Secrets and env from them, args and
volumes; not StatefulSets, Services, Jobs, Ingress or KEDA objects (those
are validated offline by validate.py). So, from the rendered manifests:

- the NATS StatefulSet becomes three Pods of its template (one per node),
  with the generated nats.conf, each node on ports of its own because every
  pod shares the host's network (routes over TLS to the others);
- the provisioning Job becomes a Pod of its template that runs once;
- every function Deployment becomes its two copies as Pods of its
  template (each copy's health port its own, for the same reason);
- the gateway and ops Deployments become a Pod each;
- deploy-k8s's Secrets are created as podman secrets (passwords, the
  PostgreSQL URL, the JWT secret) and its certificates mounted.

Images: the one named to deploy-k8s, and NATS from the nats-server here
(no registry is reachable; the manifests name the official image).

Then it drives orders over NATS (TLS, as the admin user), kills one copy of
each function mid-way (SIGKILL to its process: the pod's restart policy
brings it back), and checks that every order ended exactly once.

    python scripts/k8s/play.py --rendered DIR --podman "$(scripts/podman --print)" [--orders N]
"""
import argparse
import asyncio
import base64
import copy
import json
import os
import pathlib
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
NATS_PORTS = [(14222 + i, 16222 + i, 18222 + i) for i in range(3)]  # client, route, monitor
FIRST_HEALTH_PORT = 19000
METRICS_OFFSET = 1000  # a function pod's metrics port: its health port + 1000
GATEWAY_PORT = 18480


def run(podman, *args, check=True, capture=False):
    result = subprocess.run(podman + list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        sys.exit(f"{' '.join(podman + list(args))} failed:\n{result.stdout}{result.stderr}")
    return result.stdout if capture else result


def host_network(pod_spec):
    pod_spec["hostNetwork"] = True
    pod_spec.pop("automountServiceAccountToken", None)
    for container in pod_spec["containers"]:
        # Probes: the rehearsal asks the endpoints itself (podman would run them in a shell the image lacks).
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            container.pop(probe, None)
        container.pop("ports", None)
    return pod_spec


def pod(name, template, restart="Always"):
    spec = host_network(copy.deepcopy(template["spec"]))
    spec["restartPolicy"] = restart
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": template["metadata"]["labels"]},
            "spec": spec}


def with_host_volumes(spec, mounts):
    """Replaces the named volumes with host paths (secret volumes need a cluster)."""
    for volume in spec.get("volumes", []):
        if volume["name"] in mounts:
            for key in ("secret", "emptyDir", "configMap"):
                volume.pop(key, None)
            volume["hostPath"] = {"path": str(mounts[volume["name"]]), "type": "Directory"}
    return spec


def set_env(container, name, value):
    container["env"] = [e for e in container.get("env", []) if e["name"] != name] + [{"name": name, "value": value}]


def replace_arg(args, flag, value):
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args.extend([flag, value])


def build(args, work):
    rendered = pathlib.Path(args.rendered)
    manifests = [d for d in yaml.safe_load_all((rendered / "manifests.yaml").read_text()) if d]
    # What deploy-k8s would create in the cluster: its secrets, as it made them.
    docs = [d for d in yaml.safe_load_all((rendered / "secrets.yaml").read_text()) if d]
    for doc in docs:
        doc["metadata"].pop("namespace", None)
        doc["metadata"].pop("creationTimestamp", None)
    secret_data = {d["metadata"]["name"]: {k: base64.b64decode(v) for k, v in d["data"].items()} for d in docs}
    passwords = {user: value.decode() for user, value in secret_data["jetsaga-nats-users"].items()}

    def one(kind, name=None):
        return next(d for d in manifests if d["kind"] == kind and (name is None or d["metadata"]["name"] == name))

    statefulset = one("StatefulSet")
    config_map = one("ConfigMap", "nats-config")
    certs = work / "tls"
    certs.mkdir()
    for key, value in secret_data["nats-tls"].items():
        (certs / key).write_bytes(value)
    ca_dir = work / "ca"
    ca_dir.mkdir()
    (ca_dir / "ca.crt").write_bytes(secret_data["nats-ca"]["ca.crt"])
    url = ",".join(f"tls://127.0.0.1:{client}" for client, _, _ in NATS_PORTS)

    # NATS: the StatefulSet's template, one pod per node.
    generated = config_map["data"]["nats.conf"]
    for i, (client, route, monitor) in enumerate(NATS_PORTS):
        node = work / f"nats-{i}"
        (node / "data").mkdir(parents=True)
        conf = generated.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
        conf = conf.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{monitor}")
        conf = conf.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{route}")
        for j, (_, other, _) in enumerate(NATS_PORTS):
            conf = conf.replace(f"nats-route://nats-{j}.nats-headless.jetsaga.svc.cluster.local:6222", f"nats-route://127.0.0.1:{other}")
        assert "svc.cluster.local" not in conf, "every route was replaced"
        (node / "nats.conf").write_text(conf)
        template = copy.deepcopy(statefulset["spec"]["template"])
        spec = template["spec"]
        container = spec["containers"][0]
        container["image"] = args.nats_image
        container["args"] = ["--config", "/etc/nats/nats.conf"]
        set_env(container, "POD_NAME", f"nats-{i}")
        container["volumeMounts"] = [
            {"name": "config", "mountPath": "/etc/nats"},
            {"name": "tls", "mountPath": "/etc/nats/tls", "readOnly": True},
            {"name": "data", "mountPath": "/data"},
        ]
        spec["volumes"] = [
            {"name": "config", "hostPath": {"path": str(node), "type": "Directory"}},
            {"name": "tls", "hostPath": {"path": str(certs), "type": "Directory"}},
            {"name": "data", "hostPath": {"path": str(node / "data"), "type": "Directory"}},
        ]
        spec.pop("securityContext", None)  # the host paths belong to this user
        docs.append(pod(f"nats-{i}", template))

    def jetsaga_pod(name, template, restart="Always", health_port=None):
        template = copy.deepcopy(template)
        spec = template["spec"]
        with_host_volumes(spec, {"nats-ca": ca_dir, "data": work / name / "data", "tmp": work / name / "tmp"})
        for sub in ("data", "tmp"):
            (work / name / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(work / name / sub, 0o777)
        container = spec["containers"][0]
        set_env(container, "NATS_URL", url)
        set_env(container, "RUST_LOG", "warn")
        if health_port is not None:
            replace_arg(container["args"], "--health-port", str(health_port))
        return pod(name, template, restart)

    provision = one("Job", "jetsaga-provision")
    docs.append(jetsaga_pod("jetsaga-provision", provision["spec"]["template"], restart="OnFailure"))
    health = {}
    metrics = {}
    port = FIRST_HEALTH_PORT
    schema_prefix = f"k8s_{secrets.token_hex(3)}_"
    functions = [d for d in manifests if d["kind"] == "Deployment" and d["metadata"]["name"] not in
                 ("jetsaga-gateway", "jetsaga-ops")]
    for deployment in functions:
        for copy_index in range(deployment["spec"]["replicas"]):
            name = f"{deployment['metadata']['name']}-{copy_index}"
            doc = jetsaga_pod(name, deployment["spec"]["template"], health_port=port)
            replace_arg(doc["spec"]["containers"][0]["args"], "--schema-prefix", schema_prefix)
            # Metrics, like health, on a port of its own (every pod shares the host's network).
            replace_arg(doc["spec"]["containers"][0]["args"], "--metrics-addr", f"127.0.0.1:{port + METRICS_OFFSET}")
            metrics[name] = f"http://127.0.0.1:{port + METRICS_OFFSET}/metrics"
            docs.append(doc)
            health[name] = f"http://127.0.0.1:{port}"
            port += 1
    ops = one("Deployment", "jetsaga-ops")
    docs.append(jetsaga_pod("jetsaga-ops-0", ops["spec"]["template"], health_port=port))
    health["jetsaga-ops-0"] = f"http://127.0.0.1:{port}"
    gateway = one("Deployment", "jetsaga-gateway")
    gateway_pod = jetsaga_pod("jetsaga-gateway-0", gateway["spec"]["template"])
    gateway_args = gateway_pod["spec"]["containers"][0]["args"]
    replace_arg(gateway_args, "--http-port", str(GATEWAY_PORT))
    gateway_args.remove("--secure-cookies")  # plain HTTP here: no TLS proxy in front
    docs.append(gateway_pod)
    health["jetsaga-gateway-0"] = f"http://127.0.0.1:{GATEWAY_PORT}"
    return docs, passwords, url, health, metrics, schema_prefix, ca_dir / "ca.crt"


def remove(podman, docs):
    """Removes the pods and secrets of `docs` (what `kube down` leaves behind too)."""
    pods = [d["metadata"]["name"] for d in docs if d["kind"] == "Pod"]
    secrets_ = [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    if pods:
        run(podman, "pod", "rm", "-f", "-t", "5", *pods, check=False)
    if secrets_:
        run(podman, "secret", "rm", *secrets_, check=False)


def wait_ready(health, seconds):
    deadline = time.monotonic() + seconds
    pending = dict(health)
    while pending and time.monotonic() < deadline:
        for name, base in list(pending.items()):
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        del pending[name]
            except Exception:
                pass
        time.sleep(1)
    return pending


async def drive(args, url, passwords, podman, health, ca):
    import ssl

    import nats

    context = ssl.create_default_context(cafile=str(ca))
    nc = await nats.connect(servers=url.split(","), user="admin", password=passwords["admin"], tls=context,
                            max_reconnect_attempts=-1)

    async def command(subject, body, msg_id, attempts=30):
        for _ in range(attempts):
            try:
                reply = await nc.request(subject, json.dumps(body).encode(), timeout=5, headers={"Nats-Msg-Id": msg_id})
                if reply.headers and reply.headers.get("Nats-Service-Error-Code"):
                    code = reply.headers["Nats-Service-Error-Code"]
                    if code.startswith("5"):
                        await asyncio.sleep(0.5)
                        continue
                    return code, reply.data
                return "200", reply.data
            except Exception:
                await asyncio.sleep(0.5)
        return "gave up", b""

    run_id = secrets.token_hex(3)
    product = f"p-{run_id}"
    code, data = await command("inventory.cmd.upsert_product",
                               {"product_id": product, "name": "P", "price_cents": 100, "stock": 100000}, f"p-{run_id}")
    assert code == "200", (code, data)
    # A customer per ten orders: the deployment keeps its per-customer caps (20 under way, 60 a minute).
    customers = [f"c-{run_id}-{i}" for i in range(max(1, args.orders // 10))]
    for customer in customers:
        code, data = await command("customers.cmd.create",
                                   {"customer_id": customer, "name": "C", "credit_limit_cents": 100_000_000}, customer)
        assert code == "200", (code, data)

    orders = [f"o-{run_id}-{i}" for i in range(args.orders)]
    killed = []

    async def kill_one_copy_of_each():
        await asyncio.sleep(args.kill_after)
        for name in sorted(health):
            if name.endswith("-0") and name.startswith("jetsaga-") and name not in ("jetsaga-gateway-0", "jetsaga-ops-0"):
                # The process dies as in a crash or an OOM kill (SIGKILL from
                # outside podman): `podman kill` would count as stopped by the
                # user, which a restart policy leaves stopped.
                pid = run(podman, "inspect", "--format", "{{.State.Pid}}", f"{name}-{name.split('-')[1]}",
                          capture=True).strip()
                os.kill(int(pid), signal.SIGKILL)
                killed.append(name)

    async def place(order_id, pace):
        await asyncio.sleep(pace)
        customer = customers[int(order_id.rsplit("-", 1)[1]) % len(customers)]
        body = {"order_id": order_id, "customer_id": customer, "items": [{"product_id": product, "quantity": 1}]}
        return order_id, await command("orders.cmd.create", body, f"create-{order_id}")

    killer = asyncio.create_task(kill_one_copy_of_each())
    answers = await asyncio.gather(*(place(o, i / args.rate) for i, o in enumerate(orders)))
    await killer
    refused = [(o, a[0], a[1].decode(errors="replace")) for o, a in answers if a[0] != "200"]

    # Every order ends: asked of the order function until none is pending.
    terminal = {"completed", "failed", "canceled"}
    deadline = time.monotonic() + 120
    statuses = {}
    while time.monotonic() < deadline:
        for order_id in orders:
            if statuses.get(order_id) in terminal:
                continue
            try:
                reply = await nc.request("orders.query.get", json.dumps({"order_id": order_id}).encode(), timeout=5)
                statuses[order_id] = json.loads(reply.data).get("status")
            except Exception:
                pass
        if all(statuses.get(o) in terminal for o in orders):
            break
        await asyncio.sleep(1)

    # Exactly one terminal event per order in the saga stream.
    js = nc.jetstream()
    ends = {}
    for subject in ("orders.evt.completed", "orders.evt.failed", "orders.evt.canceled"):
        sub = await js.subscribe(subject, ordered_consumer=True)
        try:
            while True:
                message = await sub.next_msg(timeout=2)
                envelope = json.loads(message.data)
                # `saga_key`; envelopes written before it was generic say `order_id`.
                order_id = envelope.get("saga_key") or envelope.get("order_id")
                if order_id in statuses:
                    ends[order_id] = ends.get(order_id, 0) + 1
        except Exception:
            pass
        await sub.unsubscribe()
    await nc.close()
    stuck = [o for o in orders if statuses.get(o) not in terminal]
    doubled = [o for o, n in ends.items() if n > 1]
    missing = [o for o in orders if ends.get(o, 0) == 0]
    by_status = {}
    for o in orders:
        by_status[statuses.get(o)] = by_status.get(statuses.get(o), 0) + 1
    return {"orders": len(orders), "refused": refused, "killed": killed, "statuses": by_status,
            "stuck": stuck, "doubled": doubled, "without_end_event": missing}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rendered", required=True, help="the directory `scripts/deploy-k8s --render` wrote")
    parser.add_argument("--nats-image", default="localhost/jetsaga-nats:rehearsal")
    parser.add_argument("--podman", required=True)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--kill-after", type=float, default=4)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    podman = shlex.split(args.podman)
    work = pathlib.Path(tempfile.mkdtemp(prefix="jetsaga-k8s-"))
    docs, passwords, url, health, metrics, schema_prefix, ca = build(args, work)
    play = work / "play.yaml"
    play.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    print(f"playing {sum(1 for d in docs if d['kind'] == 'Pod')} pods from infra/kubernetes ({play})", flush=True)
    remove(podman, docs)
    try:
        # podman 4.3 stores a played Secret as YAML and then cannot read it
        # back for `secretKeyRef`, which wants a podman secret holding a JSON
        # object of base64 values: the secrets go in first, that way.
        for doc in (d for d in docs if d["kind"] == "Secret"):
            path = work / f"{doc['metadata']['name']}.json"
            path.write_text(json.dumps(doc["data"]))
            run(podman, "secret", "create", doc["metadata"]["name"], str(path))
        play.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"], sort_keys=False))
        run(podman, "kube", "play", str(play))
        not_ready = wait_ready(health, 120)
        if not_ready:
            for name in not_ready:
                print(run(podman, "logs", "--tail", "20", f"{name}-{name.split('-')[1]}", check=False, capture=True))
            sys.exit(f"not ready after 120 s: {sorted(not_ready)}")
        print(f"ready: {len(health)} pods answer /readyz (NATS 3 nodes over TLS, provisioned by the Job's pod)", flush=True)
        started = time.monotonic()
        result = asyncio.run(drive(args, url, passwords, podman, health, ca))
        result["seconds"] = round(time.monotonic() - started, 1)
        # The killed copies came back by the pod's restart policy, and serve again.
        back = wait_ready({name: health[name] for name in result["killed"]}, 60)
        result["not_back"] = sorted(back)
        restarts = {name: int(run(podman, "inspect", "--format", "{{.RestartCount}}", f"{name}-{name.split('-')[1]}",
                                  capture=True).strip() or 0) for name in result["killed"]}
        result["not_restarted"] = sorted(name for name, count in restarts.items() if count < 1)
        # What Prometheus would scrape: the surviving copy of order counted its messages.
        with urllib.request.urlopen(metrics["jetsaga-order-1"], timeout=5) as response:
            page = response.read().decode()
        processed = [line for line in page.splitlines()
                     if line.startswith('jetsaga_messages_total{function="order",outcome="processed"}')]
        result["order_1_processed"] = float(processed[0].split()[-1]) if processed else 0
        print(json.dumps(result, indent=2))
        bad = (result["stuck"] or result["doubled"] or result["without_end_event"] or result["refused"]
               or result["not_back"] or result["not_restarted"] or not result["order_1_processed"])
        if bad:
            sys.exit("the rehearsal found lost, stuck, doubled or refused orders, pods that did not come back, "
                     "or no metrics")
        print(f"k8s rehearsal: {result['orders']} orders ended once each, {len(result['killed'])} pods killed and restarted, "
              f"metrics scraped (order's other copy: {result['order_1_processed']:.0f} messages processed)")
    finally:
        if not args.keep:
            run(podman, "kube", "down", str(play), check=False)
            remove(podman, docs)
            subprocess.run(["rm", "-rf", str(work)])


if __name__ == "__main__":
    main()
