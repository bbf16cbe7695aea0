"""Validates the generated Kubernetes manifests offline: every built-in kind
against the Kubernetes schemas (kubernetes-validate, --strict: unknown fields
fail), KEDA's ScaledObjects against the schema beside this file, and the
cross-references a cluster would only find at run time: every Deployment's
ScaledObject, PodDisruptionBudget and Service selectors match pods, every
Secret key a pod reads is one `scripts/deploy-k8s` creates. The optional
`monitoring/` beside them (Prometheus operator): its ConfigMap by schema,
every PodMonitor selects pods that have the port it scrapes, the dashboard
is JSON and the PrometheusRule has the shape of a rule file.

    python scripts/k8s/validate.py infra/kubernetes [--kubernetes 1.31]
"""
import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import jsonschema
import yaml

# What scripts/deploy-k8s creates (and the README lists).
SECRETS = {
    "jetsaga-nats-users": None,  # one key per NATS user: checked against the users the config names
    "nats-tls": {"tls.crt", "tls.key", "ca.crt"},
    "nats-ca": {"ca.crt"},
    "jetsaga-postgres": {"url"},
    "jetsaga-jwt": {"secret"},
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--kubernetes", default="1.31")
    args = parser.parse_args()
    directory = pathlib.Path(args.directory)
    here = pathlib.Path(__file__).parent
    schema = json.loads((here / "keda-scaledobject.schema.json").read_text())
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((directory / name).read_text()):
            if doc:
                docs.append((name, doc))
    problems = []
    builtin = [name for name in kustomization["resources"] if name != "keda.yaml"]
    validate = pathlib.Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(validate), "-k", args.kubernetes, "--strict", "--quiet",
                             *[str(directory / n) for n in builtin]], capture_output=True, text=True)
    if result.returncode != 0:
        problems.append("kubernetes-validate:\n" + result.stdout + result.stderr)
    pods = {}  # component -> pod labels
    for name, doc in docs:
        kind = doc["kind"]
        if kind == "ScaledObject":
            for error in jsonschema.Draft202012Validator(schema).iter_errors(doc):
                problems.append(f"{name}: {doc['metadata']['name']}: {error.message} at {list(error.path)}")
        if kind in ("Deployment", "StatefulSet", "Job"):
            template = doc["spec"]["template"]
            pods[doc["metadata"]["name"]] = template["metadata"]["labels"]
            for container in template["spec"]["containers"]:
                for env in container.get("env", []):
                    ref = env.get("valueFrom", {}).get("secretKeyRef")
                    if ref and ref["name"] not in SECRETS:
                        problems.append(f"{name}: {doc['metadata']['name']} reads secret {ref['name']}, which nothing creates")
                    elif ref and SECRETS[ref["name"]] is not None and ref["key"] not in SECRETS[ref["name"]]:
                        problems.append(f"{name}: {doc['metadata']['name']} reads key {ref['key']} of {ref['name']}")
            for volume in template["spec"].get("volumes", []):
                secret = volume.get("secret", {}).get("secretName")
                if secret and secret not in SECRETS:
                    problems.append(f"{name}: {doc['metadata']['name']} mounts secret {secret}, which nothing creates")
    deployments = {doc["metadata"]["name"] for _, doc in docs if doc["kind"] == "Deployment"}
    for name, doc in docs:
        kind = doc["kind"]
        selector = None
        if kind in ("PodDisruptionBudget",):
            selector = doc["spec"]["selector"]["matchLabels"]
        if kind == "Service":
            selector = doc["spec"]["selector"]
        if selector is not None and not any(selector.items() <= labels.items() for labels in pods.values()):
            problems.append(f"{name}: {kind} {doc['metadata']['name']} selects no pod ({selector})")
        if kind == "ScaledObject" and doc["spec"]["scaleTargetRef"]["name"] not in deployments:
            problems.append(f"{name}: ScaledObject {doc['metadata']['name']} targets no Deployment")
    functions = [d for d in deployments if d not in ("jetsaga-gateway", "jetsaga-ops")]
    scaled = {doc["spec"]["scaleTargetRef"]["name"] for _, doc in docs if doc["kind"] == "ScaledObject"}
    for missing in sorted(set(functions) - scaled):
        problems.append(f"Deployment {missing} has no ScaledObject")
    ports = {}  # pod name -> its containers' port names
    for _, doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            ports[doc["metadata"]["name"]] = {p["name"] for c in doc["spec"]["template"]["spec"]["containers"]
                                              for p in c.get("ports", [])}
    monitoring = directory / "monitoring"
    if monitoring.is_dir():
        for doc in yaml.safe_load_all((monitoring / "monitoring.yaml").read_text()):
            if not doc:
                continue
            kind, name = doc["kind"], doc["metadata"]["name"]
            docs.append(("monitoring/monitoring.yaml", doc))
            if kind == "PodMonitor":
                selector = doc["spec"]["selector"]["matchLabels"]
                wanted = {e["port"] for e in doc["spec"]["podMetricsEndpoints"]}
                scraped = [pod for pod, labels in pods.items() if selector.items() <= labels.items() and wanted & ports.get(pod, set())]
                if not scraped:
                    problems.append(f"monitoring: PodMonitor {name} scrapes no pod (selector {selector}, ports {wanted})")
            elif kind == "PrometheusRule":
                for group in doc["spec"]["groups"]:
                    for rule in group["rules"]:
                        if not {"alert", "expr", "for", "labels", "annotations"} <= rule.keys():
                            problems.append(f"monitoring: rule {rule.get('alert')} lacks a field")
            elif kind == "ConfigMap":
                for key, text in doc["data"].items():
                    if key.endswith(".json"):
                        json.loads(text)
        # The built-in kinds by schema (the operator's kinds have none here).
        configmaps = [d for _, d in docs if d["kind"] == "ConfigMap"]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump_all(configmaps, f)
            f.flush()
            result = subprocess.run([str(validate), "-k", args.kubernetes, "--strict", "--quiet", f.name],
                                    capture_output=True, text=True)
        if result.returncode != 0:
            problems.append("kubernetes-validate (monitoring):\n" + result.stdout + result.stderr)
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    kinds = sorted({doc["kind"] for _, doc in docs})
    print(f"{len(docs)} manifests valid (Kubernetes {args.kubernetes}, strict; KEDA ScaledObjects by schema): {', '.join(kinds)}")


if __name__ == "__main__":
    main()
