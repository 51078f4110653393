#!/usr/bin/env python3
"""make break / make heal: switch a failure scenario on (fault rules through
each service's admin port, `PUT /faults`), drive traffic at it while printing
what the callers see, and say where to look; `heal` clears every rule.

    scripts/breakit.py list
    scripts/breakit.py break SCENARIO [--seconds 60] [--cluster]
    scripts/breakit.py heal [--cluster]

Locally it talks to `make run` (its ports are in topology.txt). With
--cluster it reaches the admin port of every pod of each service through
`kubectl port-forward` (the images have no shell), and the gateway on
127.0.0.1:30080. A scenario's rules go to every pod of a service, or with
"pods": "one" to one pod only (a bad replica among good ones).
The scenarios, their rules and what each moves are in break-scenarios.json.
"""

import argparse
import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import topology

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = json.loads((ROOT / "scripts" / "break-scenarios.json").read_text())
SERVICES = list(topology.PORTS)
LOCAL_GATEWAY = f"http://127.0.0.1:{topology.PORTS['app-gateway']['http']}"
LOCAL_ADMIN = {service: f"http://127.0.0.1:{ports['admin']}" for service, ports in topology.PORTS.items()}
CLUSTER_GATEWAY = "http://127.0.0.1:30080"
NAMESPACE = "ticketmesh"
# Only the project's kind cluster is touched, as in cluster.sh.
CONTEXT = "kind-ticketmesh"


def call(method, url, body=None, timeout=5):
    """(status, parsed JSON or text); status None when nothing answered."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    except OSError as e:
        return None, str(e)
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def urls_of(admins, service):
    """The admin URLs of a service's pods: `admins` maps a service to one URL
    (make run) or to a list of them (the cluster, one per pod)."""
    urls = admins[service]
    return [urls] if isinstance(urls, str) else list(urls)


def apply(admins, name):
    """Sets the scenario's rules on each service it names (replacing theirs):
    on every pod, or on the first only when the scenario says "pods": "one"."""
    scenario = SCENARIOS[name]
    for service, rules in scenario["faults"].items():
        urls = urls_of(admins, service)
        if scenario.get("pods") == "one":
            if len(urls) < 2:
                raise SystemExit(f"{name} breaks one of several pods of {service}, and there is {len(urls)}: "
                                 "run it on the cluster (CLUSTER=1), where each service has two")
            urls = urls[:1]
        for url in urls:
            status, body = call("PUT", f"{url}/faults", {"rules": rules})
            if status != 200:
                raise SystemExit(f"{service} refused the rules of {name}: {status} {body}")
            where = f" ({url})" if len(urls_of(admins, service)) > 1 else ""
            print(f"  {service}{where}: {'; '.join(r['rule'] for r in body['rules'])}", flush=True)


def heal(admins):
    """Clears every pod's rules; says which could not be reached."""
    unreachable = []
    for service in SERVICES:
        for url in urls_of(admins, service):
            status, body = call("DELETE", f"{url}/faults")
            if status == 200:
                print(f"  {service}: no fault rules", flush=True)
            else:
                unreachable.append(f"{service} ({status or body})")
    if unreachable:
        raise SystemExit(f"could not clear: {', '.join(unreachable)}")


def simulator_binary():
    for profile in ("release", "debug"):
        path = ROOT / "target" / profile / "app-simulator"
        if path.exists():
            return path
    raise SystemExit("app-simulator is not built: cargo build --bin app-simulator")


def drive(gateway, name, seconds, progress=True):
    """The scenario's traffic for `seconds`: signed webhooks from app-simulator
    and reads of /api/stats from here. Returns (read statuses, webhook report)."""
    traffic = SCENARIOS[name]["traffic"]
    reads = collections.Counter()
    stop = threading.Event()

    def reader():
        pause = 1 / traffic["reads_per_s"]
        while not stop.is_set():
            status, body = call("GET", f"{gateway}/api/stats", timeout=5)
            code = body.get("error", {}).get("code") if isinstance(body, dict) else None
            reads[f"{status} {code}" if code else str(status)] += 1
            time.sleep(pause)

    threads = [threading.Thread(target=reader, daemon=True) for _ in range(2 if traffic["reads_per_s"] else 0)]
    for t in threads:
        t.start()
    load = None
    if traffic["webhooks_per_s"]:
        load = subprocess.Popen(
            [str(simulator_binary()), "--url", gateway, "--rate", str(traffic["webhooks_per_s"]), "--duration",
             f"{seconds}s", "--concurrency", "8", "--bad-signature-ratio", str(traffic.get("bad_signature_ratio", 0)),
             "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        time.sleep(1)
        if progress:
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(reads.items())) or "none"
            print(f"\r  {time.monotonic() - started:4.0f} s  reads of /api/stats by answer: {shown}   ",
                  end="", flush=True)
    stop.set()
    for t in threads:
        t.join()
    report = {}
    if load:
        out, _ = load.communicate(timeout=60)
        lines = out.strip().splitlines()
        report = json.loads(lines[-1]) if lines else {}
    if progress:
        print()
        if report:
            print(f"  webhooks: sent {report['sent']}, accepted {report['accepted']}, "
                  f"rejected {report['rejected']}", flush=True)
    return reads, report


@contextlib.contextmanager
def port_forwards(namespace=NAMESPACE):
    """The admin port (9090) of every running pod of each service on a local
    port, through kubectl: service → [URL, …], pods in name order."""
    kubectl = os.environ.get("KUBECTL", "kubectl")
    procs, admins = [], {}
    try:
        for service in SERVICES:
            listed = subprocess.run([kubectl, "--context", CONTEXT, "-n", namespace, "get", "pods",
                                     "-l", f"app.kubernetes.io/name={service}", "--field-selector=status.phase=Running",
                                     "-o", "jsonpath={.items[*].metadata.name}"],
                                    capture_output=True, text=True, timeout=30)
            pods = sorted(listed.stdout.split())
            if listed.returncode != 0 or not pods:
                raise SystemExit(f"no running pod of {service}: {listed.stderr.strip() or 'none listed'}")
            admins[service] = []
            for pod in pods:
                proc = subprocess.Popen([kubectl, "--context", CONTEXT, "-n", namespace, "port-forward", f"pod/{pod}", ":9090"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                procs.append(proc)
                line = proc.stdout.readline()
                match = re.search(r"127\.0\.0\.1:(\d+)", line)
                if not match:
                    raise SystemExit(f"kubectl port-forward to {pod}: {line.strip() or 'no answer'}")
                admins[service].append(f"http://127.0.0.1:{match.group(1)}")
        yield admins
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["list", "break", "heal"])
    parser.add_argument("scenario", nargs="?")
    parser.add_argument("--seconds", type=int, default=60, help="how long to drive traffic (default 60)")
    parser.add_argument("--cluster", action="store_true", help="the kind cluster (kubectl port-forward)")
    args = parser.parse_args()
    if args.action == "list":
        for name, scenario in SCENARIOS.items():
            print(f"{name:16} {scenario['summary']}")
        return 0
    if args.action == "break" and args.scenario not in SCENARIOS:
        raise SystemExit(f"scenario must be one of: {', '.join(SCENARIOS)} (got {args.scenario!r})")
    if args.seconds < 1:
        raise SystemExit("--seconds must be at least 1")
    forwards = port_forwards() if args.cluster else contextlib.nullcontext(LOCAL_ADMIN)
    gateway = CLUSTER_GATEWAY if args.cluster else LOCAL_GATEWAY
    where = "the cluster" if args.cluster else "make run"
    with forwards as admins:
        if args.action == "heal":
            print(f"healing ({where}):", flush=True)
            heal(admins)
            return 0
        scenario = SCENARIOS[args.scenario]
        print(f"{args.scenario} ({where}): {scenario['summary']}", flush=True)
        apply(admins, args.scenario)
        print(f"driving traffic for {args.seconds} s at {gateway}…", flush=True)
        drive(gateway, args.scenario, args.seconds)
    print("\nwhere to look:")
    for line in scenario["look"]:
        print(f"  - {line}")
    if scenario["faults"]:
        print("\nthe rules stay until: make heal" + (" CLUSTER=1" if args.cluster else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
