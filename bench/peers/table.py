"""Prints the side-by-side table (Markdown) from the JSON files `run` wrote:
one row per system, durability and load, with sagas/s, latency, CPU per
saga (the system's every process: for jetsaga the runner and nats-server)
and whether the run's correctness checks held.

    python table.py bench/results/peers
"""

import json
import pathlib
import sys


def row(path):
    r = json.loads(path.read_text())
    name = path.stem
    if "runner_cpu_seconds" in r:  # jetsaga bench
        system = "jetsaga (strict)" if "strict" in name else "jetsaga"
        done = sum(r["outcomes"].values()) or 1
        cpu = (r["runner_cpu_seconds"] + r.get("nats_server_cpu_seconds", 0.0)) * 1000 / done
        rss = r["runner_peak_rss_mib"]
        load = f"paced at {r['rate']}/s" if r.get("rate") else "as fast as possible (window 256)"
    else:
        system = r["system"].capitalize()
        if r.get("customers", 1) > 1:
            system += f" ({r['customers']} customers)"
        cpu = r["cpu_ms_per_saga"]
        rss = r["rss_mib"]
        load = f"paced at {r['rate']:g}/s" if r.get("rate") else f"as fast as possible (window {r['window']})"
    l = r["latency"]
    return (
        load,
        str(r["orders"]),
        system,
        r["durability"],
        f"{r['sagas_per_sec']:.0f}",
        f"{l['p50_ms']:.1f} / {l['p99_ms']:.1f}",
        f"{cpu:.2f}",
        f"{rss:.0f}",
        "ok" if r["correct"] else "FAILED",
    )


def main():
    folder = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/peers")
    rows = sorted((row(p) for p in folder.glob("*.json")), key=lambda r: (r[0], r[2]))
    print("| load | orders | system | durability | sagas/s | p50 / p99 (ms) | CPU per saga (ms) | RSS (MiB) | correct |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
