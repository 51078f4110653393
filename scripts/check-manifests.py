#!/usr/bin/env python3
"""Offline checks of the cluster files (k8s/, mesh/, kind-config.yaml, Dockerfile).

Renders every kustomization with `kubectl kustomize`, validates each object
strictly (unknown fields rejected) against the Kubernetes 1.35 schemas and the
Linkerd / Gateway API schemas in mesh/schemas/, then holds the files to the
system's own rules: policies point at real Servers and ports, the authorized
edges are exactly mesh/call-graph.yaml, no client in the cluster may call an
admin port's /faults, a Server with routes still lets its pods' probes in,
only idempotent calls are retried,
the gateway's public port (and no other) is rate-limited, within what Linkerd
accepts and above app-simulator's steady rate,
the four app services run two replicas or more and roll without losing a
request (a PodDisruptionBudget of their own, maxUnavailable 0, a soft spread
over nodes, a preStop sleep, a grace period above it plus the app's drain, the
proxy a native sidecar), failure-accrual annotations are ones Linkerd parses,
every env var is a flag of its binary, every probe is one the binary answers
(each binary is started with its Deployment's environment and probed), every
image is one the Dockerfile builds or a pinned release, nothing runs as root
or with more than it needs, every object is in its namespace, and the
observability stack's config files agree with the objects (every file is
generated into a ConfigMap and mounted, every host:port they name is a
Service port, Prometheus's jobs and rules, Grafana's dashboards path).

Usage: check-manifests.py [--self-test] [--skip-probes]
  --self-test    also break the rendered objects in known ways and make sure
                 each check notices (so a check that cannot fail is caught).
Needs: kubectl (KUBECTL), grpcurl (GRPCURL), the debug binaries in target/debug,
and Python packages pyyaml, jsonschema, kubernetes-validate.
"""

import argparse
import copy
import functools
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = os.environ.get("KUBECTL", "kubectl")
GRPCURL = os.environ.get("GRPCURL", "grpcurl")
K8S_VERSION = "1.35.0"
NAMESPACE = "ticketmesh"
# The observability stack: every object named mon-* lives here, nothing else.
MONITORING = "ticketmesh-monitoring"
# Objects outside any namespace these files may hold: the two namespaces, and
# the monitoring stack's read-only access to the Kubernetes API.
CLUSTER_KINDS = ("Namespace", "ClusterRole", "ClusterRoleBinding")
READ_VERBS = {"get", "list", "watch"}
# Kinds validated against mesh/schemas/ rather than the Kubernetes schemas.
CRD_GROUPS = ("policy.linkerd.io", "gateway.networking.k8s.io")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
# The Linkerd proxy of every meshed pod, as the call graph names it: its admin
# port is injected, so no manifest declares it.
PROXY = "linkerd-proxy"
PROXY_ADMIN_PORT = "linkerd-admin"
MESHED_PODS = {"matchExpressions": [{"key": "linkerd.io/control-plane-ns", "operator": "Exists"}]}
# The fault-injection rules, served (GET, PUT, DELETE) on the port each
# binary's ADMIN_ADDR binds: the services' admin router and the gateway's
# admin server both carry them. Only `kubectl port-forward` (over the pod's
# loopback, past the proxy) may reach them; no policy may let a client in.
FAULTS_PATH = "/faults"
FAULTS_PORT_VAR = "ADMIN_ADDR"
# What the kubelet's gRPC probe calls.
GRPC_PROBE_METHOD = "grpc.health.v1.Health/Check"
PROBE_KINDS = ("startupProbe", "livenessProbe", "readinessProbe")
# A release of a third-party image: x.y.z (optionally v-prefixed) or a digest.
RELEASE = re.compile(r":v?\d+\.\d+\.\d+$|@sha256:[0-9a-f]{64}$")
# `kubectl apply` (client-side) copies each object into an annotation that
# may hold at most 256 KiB.
LAST_APPLIED_LIMIT = 256 * 1024
# The cluster Prometheus's jobs; the local setup produces the same target labels.
PROMETHEUS_JOBS = {"ticketmesh-apps", "ticketmesh-canary", "blackbox-http", "blackbox-grpc", "linkerd-proxy"}
# host:port of a Service in a config file: a short name (the file's own
# namespace) or name.namespace[.svc[.cluster.local]].
SERVICE_ADDRESS = re.compile(r"\b((?:app|infra|mon)-[a-z0-9-]*[a-z0-9])(?:\.([a-z0-9-]+)(?:\.svc(?:\.cluster\.local)?)?)?:(\d+)\b")
LINKERD_VALUES = "mesh/linkerd/control-plane.yaml"
# The ports the mesh rate-limits (HTTPLocalRateLimitPolicy), as (workload,
# port name): the gateway's public HTTP port, the one door into the system.
RATE_LIMITED = {("app-gateway", "http")}
# In-cluster callers with a steady rate of their own, and the variable of
# their Deployment that sets it (per second): every limit that applies to
# their identity on a rate-limited port must let that rate through.
STEADY_CLIENTS = {"app-simulator": "RATE"}
# What Linkerd's policy controller hands a Server's rate limit to the proxy
# for: HTTP. A gRPC, opaque or TLS Server gets none (policy-controller/grpc).
RATE_LIMIT_PROTOCOLS = ("unknown", "HTTP/1", "HTTP/2")
# The app services that run replicated and roll without losing a request (not
# app-simulator, a load generator, nor infra-* and mon-*).
REPLICATED = ("app-gateway", "app-event", "app-storage", "app-notifier")
MIN_REPLICAS = 2
HOSTNAME_KEY = "kubernetes.io/hostname"
# The pod annotation that makes the Linkerd proxy a native sidecar: stopped by
# the kubelet only after the app containers have exited, so it outlives their
# drain (with the older sidecar it got SIGTERM with the app).
NATIVE_SIDECAR = "config.linkerd.io/proxy-enable-native-sidecar"
# How long each app may drain after SIGTERM, as the (workload, variable)
# pairs that bound it, each read from that workload's env or, unset, from its
# binary's --help default. The gateway waits for its in-flight requests up to
# its REQUEST_TIMEOUT; a service stops accepting and finishes its in-flight
# calls, which their callers end by their deadlines at the latest.
DRAIN_BOUNDS = {
    "app-gateway": [("app-gateway", "REQUEST_TIMEOUT")],
    "app-event": [("app-gateway", "GRPC_TIMEOUT")],
    "app-storage": [("app-gateway", "GRPC_TIMEOUT"), ("app-event", "STORAGE_TIMEOUT")],
    "app-notifier": [("app-gateway", "GRPC_TIMEOUT"), ("app-event", "NOTIFIER_TIMEOUT")],
}
# Linkerd's failure accrual (circuit breaking), read by its policy controller
# from a Service's annotations (policy-controller/k8s/index, outbound index:
# parse_accrual_config). Any value it cannot parse drops the whole policy,
# with only a log line; a key it does not know is ignored.
ACCRUAL_PREFIX = "balancer.linkerd.io/"
ACCRUAL_MODE = "balancer.linkerd.io/failure-accrual"
ACCRUAL_MAX_FAILURES = "balancer.linkerd.io/failure-accrual-consecutive-max-failures"
ACCRUAL_MIN_PENALTY = "balancer.linkerd.io/failure-accrual-consecutive-min-penalty"
ACCRUAL_MAX_PENALTY = "balancer.linkerd.io/failure-accrual-consecutive-max-penalty"
ACCRUAL_JITTER = "balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio"
ACCRUAL_KEYS = (ACCRUAL_MODE, ACCRUAL_MAX_FAILURES, ACCRUAL_MIN_PENALTY, ACCRUAL_MAX_PENALTY, ACCRUAL_JITTER)
# The Services whose callers must eject a failing pod (the mesh demo "a bad
# replica is ejected"): the one the gateway and app-event call, and app-event.
FAILURE_ACCRUAL = ("app-storage", "app-event")
# Linkerd's duration: a whole number and ms, s, m, h or d ("0" alone too).
LINKERD_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
LINKERD_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# The binaries' durations (humantime): one or more number-unit pairs, "1m 30s".
HUMAN_DURATION = re.compile(r"(\d+)\s*(ns|us|µs|ms|msec|seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d)\b")
HUMAN_UNIT_S = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}


class Problems(list):
    def add(self, check, message):
        self.append(f"[{check}] {message}")


# ---------------------------------------------------------------- rendering


def kustomize(path):
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"kubectl kustomize {path} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render():
    """{name: objects} for every overlay, the base, mesh/ and each demo's
    additions to it (mesh/demos/); plus the values
    `linkerd install` gets (where the proxies send their spans)."""
    rendered = {}
    for overlay in sorted((ROOT / "k8s" / "overlays").iterdir()):
        if (overlay / "kustomization.yaml").exists():
            rendered[f"k8s/overlays/{overlay.name}"] = kustomize(overlay)
    rendered["k8s/base"] = kustomize(ROOT / "k8s" / "base")
    rendered["mesh"] = kustomize(ROOT / "mesh")
    for demo in sorted((ROOT / "mesh" / "demos").iterdir()):
        if (demo / "kustomization.yaml").exists():
            rendered[f"mesh/demos/{demo.name}"] = kustomize(demo)
    rendered[LINKERD_VALUES] = yaml.safe_load((ROOT / LINKERD_VALUES).read_text())
    return rendered


# ---------------------------------------------------------------- generated files


def kustomization_tree():
    """(every kustomization under k8s/ and mesh/ by folder, every file there),
    as paths relative to the repository."""
    tree, files = {}, set()
    for top in ("k8s", "mesh"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file():
                rel = path.relative_to(ROOT).as_posix()
                files.add(rel)
                if path.name == "kustomization.yaml":
                    tree[path.parent.relative_to(ROOT).as_posix()] = yaml.safe_load(path.read_text()) or {}
    return tree, files


def check_generators(tree, files, problems):
    """Every file a generator names exists (kustomize's own error says less),
    and every file in a monitoring component's folder is a resource or is
    generated into a ConfigMap, so a new rule file or dashboard cannot be left
    out of the cluster. tests/ holds promtool's unit tests, which run locally."""
    for folder, kustomization in sorted(tree.items()):
        used = set(kustomization.get("resources", []))
        used |= {p.get("path") for p in kustomization.get("patches", [])}
        for generator in kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", []):
            for entry in generator.get("files", []):
                path = entry.split("=", 1)[-1]
                used.add(path)
                if f"{folder}/{path}" not in files:
                    problems.add("generators", f"{folder}/kustomization.yaml generates {generator['name']} from {path}, which does not exist")
        if folder.startswith("k8s/monitoring/"):
            for f in sorted(files):
                rel = f.removeprefix(f"{folder}/")
                if rel == f or rel == "kustomization.yaml" or rel.startswith("tests/"):
                    continue
                if rel not in used and not any(rel.startswith(f"{u}/") for u in used):
                    problems.add("generators", f"{f} is in no configMapGenerator of {folder}: the cluster would not see it")


# ---------------------------------------------------------------- schemas


def strict(node):
    """Kubernetes prunes unknown fields instead of rejecting them, so the CRD
    schemas do not forbid them: forbid them here so typos are caught."""
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for v in node.values():
            strict(v)
    elif isinstance(node, list):
        for v in node:
            strict(v)


@functools.cache
def crd_schema(api_version, kind):
    group, version = api_version.split("/")
    path = ROOT / "mesh" / "schemas" / f"{group}_{kind.lower()}_{version}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    strict(schema["properties"]["spec"])
    return schema


def check_vendored_schemas(problems):
    """mesh/schemas/ is a copy of Linkerd's CRD schemas; where the project's
    shared reference copy sits beside the repository, the two must agree."""
    reference = ROOT.parent / "shared" / "schemas" / "linkerd"
    if not reference.is_dir():
        return
    for ours in sorted((ROOT / "mesh" / "schemas").glob("*.json")):
        theirs = reference / ours.name
        if not theirs.exists() or json.loads(theirs.read_text()) != json.loads(ours.read_text()):
            problems.add("schema", f"mesh/schemas/{ours.name} differs from {theirs}")


def check_schemas(objects, problems):
    for obj in objects:
        ident = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        group = obj.get("apiVersion", "").split("/")[0]
        if group in CRD_GROUPS:
            schema = crd_schema(obj["apiVersion"], obj["kind"])
            if schema is None:
                problems.add("schema", f"{ident}: no schema in mesh/schemas for {obj['apiVersion']}")
                continue
            for error in jsonschema.Draft7Validator(schema).iter_errors(obj):
                where = "/".join(str(p) for p in error.absolute_path)
                problems.add("schema", f"{ident} at {where}: {error.message}")
        else:
            try:
                kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(p) for p in error.path)
                problems.add("schema", f"{ident} at {where}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError:
                problems.add("schema", f"{ident}: no Kubernetes {K8S_VERSION} schema for {obj.get('apiVersion')}")


# ---------------------------------------------------------------- helpers


def by_kind(objects, kind):
    return [o for o in objects if o.get("kind") == kind]


def named(objects, kind, name):
    return next((o for o in by_kind(objects, kind) if o["metadata"]["name"] == name), None)


def workloads(objects):
    return [o for o in objects if o.get("kind") in WORKLOAD_KINDS]


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def selected(objects, match_labels):
    return [w for w in workloads(objects) if all(pod_labels(w).get(k) == v for k, v in match_labels.items())]


def containers(workload):
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def container_ports(workload):
    return {p["name"]: p["containerPort"] for c in containers(workload) for p in c.get("ports", []) if "name" in p}


def app_name(workload):
    return pod_labels(workload).get("app.kubernetes.io/name", workload["metadata"]["name"])


def identity(ref, default_ns=NAMESPACE):
    ns = ref.get("namespace", default_ns)
    return ref["name"] if ns == NAMESPACE else f"{ns}/{ref['name']}"


def route_matches(route):
    """Every match of a route's rules; None when a rule has none (it takes everything)."""
    found = []
    for rule in route["spec"].get("rules", []):
        if not rule.get("matches"):
            return None
        found += rule["matches"]
    return found


def route_methods(route):
    """The gRPC methods a GRPCRoute matches, as `Service/Method` or `Service/*`;
    None for a rule without matches (every method)."""
    matches = route_matches(route)
    if matches is None:
        return None
    return {f"{m.get('method', {}).get('service', '*')}/{m.get('method', {}).get('method', '*')}" for m in matches}


def route_paths(route):
    """The paths an HTTPRoute matches: `/x` exactly, `/x*` as a prefix; None
    for a rule without matches (every path)."""
    matches = route_matches(route)
    if matches is None:
        return None
    paths = set()
    for m in matches:
        path = m.get("path", {})
        value = path.get("value", "/")
        paths.add(value if path.get("type", "PathPrefix") == "Exact" else f"{value}*")
    return paths


def proxy_admin(server):
    """Whether a Server is the Linkerd proxies' own admin port."""
    return server["spec"]["port"] == PROXY_ADMIN_PORT


def covers_path(routes, path):
    """Whether an edge's paths (None: all of them) take `path`."""
    if routes is None:
        return True
    return any(r == path or (r.endswith("*") and path.startswith(r[:-1])) for r in routes)


def covers_method(routes, method):
    """Whether an edge's gRPC methods (None: all of them) take `method`."""
    if routes is None:
        return True
    service = method.split("/", 1)[0]
    return method in routes or f"{service}/*" in routes or "*/*" in routes


# ---------------------------------------------------------------- the policy


def authorized_edges(k8s, mesh, problems):
    """(client, workload, port, methods or paths) for every AuthorizationPolicy,
    and the same for network-authenticated (public) ones with client None."""
    edges = set()
    for policy in by_kind(mesh, "AuthorizationPolicy"):
        name = policy["metadata"]["name"]
        target = policy["spec"]["targetRef"]
        if target["kind"] == "Server":
            server = named(mesh, "Server", target["name"])
            routes = None
        elif target["kind"] in ("GRPCRoute", "HTTPRoute"):
            route = named(mesh, target["kind"], target["name"])
            if route is None:
                problems.add("policy", f"AuthorizationPolicy {name} targets a missing {target['kind']} {target['name']}")
                continue
            parents = [p for p in route["spec"]["parentRefs"] if p.get("kind") == "Server"]
            if len(parents) != 1:
                problems.add("policy", f"{target['kind']} {route['metadata']['name']} must have exactly one Server parent")
                continue
            server = named(mesh, "Server", parents[0]["name"])
            routes = route_methods(route) if target["kind"] == "GRPCRoute" else route_paths(route)
            if server is None:
                problems.add("policy", f"{target['kind']} {target['name']} has a missing Server parent {parents[0]['name']}")
                continue
        else:
            problems.add("policy", f"AuthorizationPolicy {name} targets a {target['kind']}, not a Server, GRPCRoute or HTTPRoute")
            continue
        if server is None:
            problems.add("policy", f"AuthorizationPolicy {name} targets a missing Server {target['name']}")
            continue
        if proxy_admin(server):
            workload = PROXY
        else:
            pods = selected(k8s, server["spec"]["podSelector"].get("matchLabels", {}))
            workload = app_name(pods[0]) if len(pods) == 1 else None
        if workload is None:
            problems.add("policy", f"Server {server['metadata']['name']} selects {len(pods)} workloads, not one")
            continue
        port = server["spec"]["port"]
        route_key = tuple(sorted(routes)) if routes is not None else None
        for ref in policy["spec"]["requiredAuthenticationRefs"]:
            authn = named(mesh, ref["kind"], ref["name"])
            if authn is None:
                problems.add("policy", f"AuthorizationPolicy {name} requires a missing {ref['kind']} {ref['name']}")
                continue
            if ref["kind"] == "MeshTLSAuthentication":
                for ident in authn["spec"].get("identityRefs", []):
                    if ident.get("kind") != "ServiceAccount" or "name" not in ident:
                        problems.add("policy", f"MeshTLSAuthentication {ref['name']}: name service accounts, not {ident}")
                        continue
                    edges.add((identity(ident), workload, port, route_key))
                for ident in authn["spec"].get("identities", []):
                    problems.add("policy", f"MeshTLSAuthentication {ref['name']}: raw identity {ident!r}; use identityRefs")
            elif ref["kind"] == "NetworkAuthentication":
                edges.add((None, workload, port, route_key))
            else:
                problems.add("policy", f"AuthorizationPolicy {name}: unexpected authentication kind {ref['kind']}")
    return edges


def declared_edges(graph):
    edges = set()
    for entry in graph.get("calls", []) + graph.get("public", []):
        routes = entry.get("methods") or entry.get("paths")
        edges.add((entry.get("from"), entry["to"], entry["port"], tuple(sorted(routes)) if routes else None))
    return edges


def show(edge):
    client, workload, port, routes = edge
    who = client or "anyone"
    what = f" {', '.join(routes)}" if routes else ""
    return f"{who} -> {workload}:{port}{what}"


def check_policy(k8s, mesh, graph, problems):
    # Servers: a named port that exists on the pods they select, declared on a
    # Service; the proxies' admin port on every meshed pod.
    services = by_kind(k8s, "Service")
    for server in by_kind(mesh, "Server"):
        name = server["metadata"]["name"]
        selector = server["spec"]["podSelector"]
        if proxy_admin(server):
            if selector != MESHED_PODS:
                problems.add("policy", f"Server {name}: the proxies' admin port must select every meshed pod ({MESHED_PODS}), not {selector}")
            continue
        if set(selector) != {"matchLabels"}:
            problems.add("policy", f"Server {name}: select the pods by matchLabels only, not {selector}")
        pods = selected(k8s, selector.get("matchLabels", {}))
        if not pods:
            problems.add("policy", f"Server {name} selects no pods")
        port = server["spec"]["port"]
        if not isinstance(port, str):
            problems.add("policy", f"Server {name}: name the port ({port}), so it follows the container")
        for pod in pods:
            ports = container_ports(pod)
            if port not in ports:
                problems.add("policy", f"Server {name}: port {port!r} is not a named container port of {app_name(pod)}")
                continue
            declared = any(
                p.get("targetPort") in (port, ports[port])
                for s in services
                if all(pod_labels(pod).get(k) == v for k, v in s["spec"].get("selector", {}).items())
                for p in s["spec"]["ports"]
            )
            if not declared:
                problems.add("policy", f"Server {name}: port {port} of {app_name(pod)} is on no Service (Linkerd blocks undeclared ports)")
    # Inbound routes must hang off a Server; outbound ones off a Service port that exists.
    for route in by_kind(mesh, "GRPCRoute") + by_kind(mesh, "HTTPRoute"):
        for parent in route["spec"]["parentRefs"]:
            if parent.get("kind") == "Server" and named(mesh, "Server", parent["name"]) is None:
                problems.add("policy", f"{route['kind']} {route['metadata']['name']}: no Server {parent['name']}")
            if parent.get("kind") == "Service":
                service = named(k8s, "Service", parent["name"])
                if service is None or parent.get("port") not in [p["port"] for p in service["spec"]["ports"]]:
                    problems.add("routes", f"{route['kind']} {route['metadata']['name']}: no Service port {parent['name']}:{parent.get('port')}")
    actual = authorized_edges(k8s, mesh, problems)
    declared = declared_edges(graph)
    for edge in sorted(actual - declared, key=show):
        problems.add("call-graph", f"authorized but not in mesh/call-graph.yaml: {show(edge)}")
    for edge in sorted(declared - actual, key=show):
        problems.add("call-graph", f"in mesh/call-graph.yaml but not authorized: {show(edge)}")
    check_faults(k8s, actual, problems)
    check_probe_policy(k8s, mesh, actual, problems)
    check_rate_limits(k8s, mesh, problems)


def fault_ports(k8s):
    """(workload, port name) of every port that serves the fault rules: the
    named container port FAULTS_PORT_VAR binds."""
    found = set()
    for w, c in app_containers(k8s):
        addr = next((v.get("value") for v in c.get("env", []) if v["name"] == FAULTS_PORT_VAR), None)
        if addr is None:
            continue
        number = addr.rsplit(":", 1)[-1]
        for p in c.get("ports", []):
            if str(p["containerPort"]) == number and "name" in p:
                found.add((app_name(w), p["name"]))
    return found


def check_faults(k8s, edges, problems):
    """No authorization takes /faults on a port that serves it: a policy on
    the whole admin Server (no routes) would, and so would a route whose
    paths cover it. The fault rules are for `kubectl port-forward` only."""
    ports = fault_ports(k8s)
    for edge in sorted(edges, key=show):
        _, workload, port, routes = edge
        if (workload, port) in ports and covers_path(routes, FAULTS_PATH):
            how = "the policy takes the whole port" if routes is None else "a route's paths cover it"
            problems.add("faults", f"{show(edge)}: lets a client in the cluster call {FAULTS_PATH} ({how}); only kubectl port-forward may (route /metrics and the probe paths instead)")


def check_probe_policy(k8s, mesh, edges, problems):
    """Linkerd admits the kubelet's probes by itself only on a Server without
    routes: on a Server with routes, each probe's path (or gRPC health) must
    be opened to everyone (the kubelet calls from the node, outside the mesh)."""
    routed = {
        parent["name"]
        for route in by_kind(mesh, "GRPCRoute") + by_kind(mesh, "HTTPRoute")
        for parent in route["spec"]["parentRefs"]
        if parent.get("kind") == "Server"
    }
    for server in by_kind(mesh, "Server"):
        name = server["metadata"]["name"]
        if proxy_admin(server) or name not in routed:
            continue
        port = server["spec"]["port"]
        for pod in selected(k8s, server["spec"]["podSelector"].get("matchLabels", {})):
            ports = container_ports(pod)
            if port not in ports:
                continue  # reported above
            workload = app_name(pod)
            public = [routes for client, w, p, routes in edges if client is None and w == workload and p == port]
            for c in containers(pod):
                for kind in PROBE_KINDS:
                    probe = c.get(kind, {})
                    if "httpGet" in probe:
                        target = probe["httpGet"]["port"]
                        want = probe["httpGet"].get("path", "/").split("?", 1)[0]
                        covered = any(covers_path(r, want) for r in public)
                    elif "grpc" in probe:
                        target = probe["grpc"]["port"]
                        want = GRPC_PROBE_METHOD
                        covered = any(covers_method(r, want) for r in public)
                    else:
                        continue
                    if target in (port, ports[port]) and not covered:
                        problems.add("policy", f"{workload}/{c['name']} {kind} ({want} on {port}): Server {name} has routes, so Linkerd no longer lets the kubelet in by itself, and no route opens it to everyone")


def steady_rate(workload, var):
    """The number a workload's containers set `var` to (per second), or None."""
    for c in containers(workload):
        for v in c.get("env", []):
            if v["name"] == var and "value" in v:
                try:
                    return float(v["value"])
                except ValueError:
                    return None
    return None


def check_rate_limits(k8s, mesh, problems):
    """HTTPLocalRateLimitPolicy, held to what Linkerd does with it: it must
    target a policy.linkerd.io Server that exists (else its status says
    NoMatchingTarget and nothing is limited) and serves HTTP; one policy per
    Server (Linkerd accepts only the oldest); the rate-limited ports are
    exactly RATE_LIMITED; the limits pass Linkerd's admission (positive,
    identity and overrides within total) and overrides name service accounts
    that are here. And no limit that applies to a steady in-cluster caller
    (STEADY_CLIENTS) is below its rate: `total` counts every client, an
    override replaces `identity` for its accounts."""
    limited, by_server = set(), {}
    for policy in by_kind(mesh, "HTTPLocalRateLimitPolicy"):
        name = policy["metadata"]["name"]
        spec = policy["spec"]
        target = spec["targetRef"]
        if target.get("group") != "policy.linkerd.io" or target.get("kind") != "Server":
            problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name} targets {target.get('group') or 'core'}/{target.get('kind')} {target.get('name')}: Linkerd applies it only to a policy.linkerd.io Server")
            continue
        server = named(mesh, "Server", target["name"])
        if server is None:
            problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name} targets a missing Server {target['name']}: Linkerd would limit nothing")
            continue
        if target["name"] in by_server:
            problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name} and {by_server[target['name']]} both target Server {target['name']}: Linkerd accepts only the oldest")
        by_server[target["name"]] = name
        protocol = server["spec"].get("proxyProtocol", "unknown")
        if protocol not in RATE_LIMIT_PROTOCOLS:
            problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name}: Server {target['name']} is {protocol}, and Linkerd rate-limits only HTTP ({', '.join(RATE_LIMIT_PROTOCOLS)})")
        if proxy_admin(server):
            limited.add((PROXY, server["spec"]["port"]))
        else:
            pods = selected(k8s, server["spec"]["podSelector"].get("matchLabels", {}))
            for pod in pods:
                limited.add((app_name(pod), server["spec"]["port"]))
        total = spec.get("total", {}).get("requestsPerSecond")
        identity_rps = spec.get("identity", {}).get("requestsPerSecond")
        overrides = spec.get("overrides", [])
        if total is None and identity_rps is None and not overrides:
            problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name} sets no limit")
        for what, rps in [("total", total), ("identity", identity_rps)] + [(f"overrides[{i}]", o.get("requestsPerSecond")) for i, o in enumerate(overrides)]:
            if not isinstance(rps, int):
                continue  # unset, or a type the schema check reports
            if rps <= 0:
                problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name}: {what}.requestsPerSecond is {rps}; Linkerd's admission wants more than 0")
            elif total is not None and what != "total" and rps > total:
                problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name}: {what}.requestsPerSecond {rps} is above total {total}; Linkerd's admission refuses it")
        accounts = {(a["metadata"].get("namespace"), a["metadata"]["name"]) for a in by_kind(k8s, "ServiceAccount")}
        own_ns = policy["metadata"].get("namespace", NAMESPACE)
        override_of = {}
        for i, o in enumerate(overrides):
            for ref in o.get("clientRefs", []):
                key = (ref.get("namespace") or own_ns, ref.get("name"))
                if ref.get("group") or ref.get("kind") != "ServiceAccount":
                    problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name}: overrides[{i}] names a {ref.get('kind')}; Linkerd takes only ServiceAccounts")
                elif key not in accounts:
                    problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name}: overrides[{i}] names ServiceAccount {'/'.join(key)}, which is not here")
                override_of[key] = o.get("requestsPerSecond")
        for client, var in sorted(STEADY_CLIENTS.items()):
            workload = next((w for w in workloads(k8s) if app_name(w) == client), None)
            if workload is None:
                continue
            rate = steady_rate(workload, var)
            if rate is None:
                problems.add("rate-limit", f"{client}: no numeric {var}, the steady rate the rate limits are held to")
                continue
            account = (workload["metadata"].get("namespace", NAMESPACE), workload["spec"]["template"]["spec"].get("serviceAccountName", "default"))
            applies = [("total", total), ("override", override_of[account]) if account in override_of else ("identity", identity_rps)]
            for scope, rps in applies:
                if isinstance(rps, int) and rps < rate:
                    problems.add("rate-limit", f"HTTPLocalRateLimitPolicy {name}: its {scope} limit ({rps}/s) is below {client}'s steady {var}={rate:g}/s: it must never be rate-limited at that rate")
    for workload, port in sorted(limited - RATE_LIMITED):
        problems.add("rate-limit", f"{workload}:{port} is rate-limited, but only {', '.join(f'{w}:{p}' for w, p in sorted(RATE_LIMITED))} should be")
    for workload, port in sorted(RATE_LIMITED - limited):
        problems.add("rate-limit", f"{workload}:{port} has no HTTPLocalRateLimitPolicy: the mesh does not shed a flood there")


def check_routes(k8s, mesh, graph, problems):
    """Outbound routes: retries only where every matched method is idempotent,
    and a catch-all next to per-method routes so no call is left unrouted."""
    idempotent = set(graph.get("idempotent", []))
    by_service = {}
    for route in by_kind(mesh, "GRPCRoute"):
        parents = [p for p in route["spec"]["parentRefs"] if p.get("kind") == "Service"]
        if not parents:
            continue
        name = route["metadata"]["name"]
        methods = route_methods(route)
        annotations = route["metadata"].get("annotations", {})
        for parent in parents:
            by_service.setdefault((parent["name"], parent.get("port")), []).append(methods)
        if any(k.startswith("retry.linkerd.io/") for k in annotations):
            if methods is None:
                problems.add("routes", f"GRPCRoute {name} retries every method, writes included")
            else:
                for m in sorted(methods - idempotent):
                    problems.add("routes", f"GRPCRoute {name} retries {m}, which is not declared idempotent")
        for key, value in annotations.items():
            if key.startswith(("retry.linkerd.io/", "timeout.linkerd.io/")) and not isinstance(value, str):
                problems.add("routes", f"GRPCRoute {name}: annotation {key} must be a string")
    for (service, port), routes in sorted(by_service.items()):
        if None not in routes:
            problems.add("routes", f"Service {service}:{port} has per-method routes but no catch-all route")


def home_namespace(obj):
    """Where a namespaced object belongs: the monitoring stack (mon-*) in its
    own namespace, everything else in ticketmesh."""
    return MONITORING if obj["metadata"]["name"].startswith("mon-") else NAMESPACE


def check_namespace(k8s, problems):
    namespaces = {ns["metadata"]["name"]: ns for ns in by_kind(k8s, "Namespace")}
    monitored = any(o["metadata"]["name"].startswith("mon-") for o in k8s if o["kind"] not in CLUSTER_KINDS)
    # Both are meshed: the apps for mTLS and policy, the monitoring stack
    # because Linkerd sends spans only to a meshed collector and the apps'
    # admin ports admit only mon-prometheus's mTLS identity.
    for name in [NAMESPACE] + ([MONITORING] if monitored else []):
        ns = namespaces.get(name)
        if ns is None:
            problems.add("namespace", f"no Namespace {name}")
            continue
        if ns["metadata"].get("annotations", {}).get("linkerd.io/inject") != "enabled":
            problems.add("namespace", f"{name} is not annotated linkerd.io/inject: enabled")
    app_ns = namespaces.get(NAMESPACE, {"metadata": {}})
    if app_ns["metadata"].get("annotations", {}).get("config.linkerd.io/default-inbound-policy") != "deny":
        problems.add("namespace", f"{NAMESPACE}'s default inbound policy is not deny")
    for obj in k8s:
        kind, name = obj["kind"], obj["metadata"]["name"]
        ns = obj["metadata"].get("namespace")
        if kind == "Namespace":
            if name not in (NAMESPACE, MONITORING):
                problems.add("namespace", f"Namespace {name}: the system has only {NAMESPACE} and {MONITORING}")
        elif kind in CLUSTER_KINDS:
            if ns is not None:
                problems.add("namespace", f"{kind}/{name} is cluster-wide, yet names namespace {ns}")
            if not name.startswith("mon-"):
                problems.add("namespace", f"{kind}/{name}: only the monitoring stack (mon-*) reads the Kubernetes API")
        elif ns != home_namespace(obj):
            problems.add("namespace", f"{kind}/{name} is in {ns}, not {home_namespace(obj)}")


def check_rbac(k8s, problems):
    """The Kubernetes API: bindings name accounts and roles that exist here,
    roles only read, and a pod mounts an API token exactly when its account
    is bound to a role (Prometheus's discovery, Alloy's log tailing)."""
    accounts = {(a["metadata"].get("namespace"), a["metadata"]["name"]): a for a in by_kind(k8s, "ServiceAccount")}
    bound = set()
    for binding in by_kind(k8s, "ClusterRoleBinding") + by_kind(k8s, "RoleBinding"):
        name = f"{binding['kind']}/{binding['metadata']['name']}"
        ref = binding["roleRef"]
        if named(k8s, ref["kind"], ref["name"]) is None:
            problems.add("rbac", f"{name} grants {ref['kind']} {ref['name']}, which is not here")
        for subject in binding.get("subjects", []):
            key = (subject.get("namespace", binding["metadata"].get("namespace")), subject["name"])
            if subject["kind"] != "ServiceAccount" or key not in accounts:
                problems.add("rbac", f"{name} binds {subject['kind']} {'/'.join(filter(None, key))}, which is no ServiceAccount here")
            else:
                bound.add(key)
    for role in by_kind(k8s, "ClusterRole") + by_kind(k8s, "Role"):
        for rule in role.get("rules", []):
            writes = set(rule.get("verbs", [])) - READ_VERBS
            if writes:
                problems.add("rbac", f"{role['kind']}/{role['metadata']['name']} may {', '.join(sorted(writes))}: the system only reads the API")
    for w in workloads(k8s):
        spec = w["spec"]["template"]["spec"]
        key = (w["metadata"].get("namespace"), spec.get("serviceAccountName", "default"))
        account = accounts.get(key)
        if account is None:
            problems.add("rbac", f"{app_name(w)} runs as ServiceAccount {key[1]}, which is not here")
            continue
        mounted = spec.get("automountServiceAccountToken", account.get("automountServiceAccountToken", True))
        if key in bound and not mounted:
            problems.add("rbac", f"{app_name(w)} is granted API access but mounts no token")
        if key not in bound and mounted:
            problems.add("rbac", f"{app_name(w)} mounts an API token it has no use for (set automountServiceAccountToken: false)")


# ---------------------------------------------------------------- workloads


def effective(pod_sc, c_sc, key):
    return c_sc.get(key, pod_sc.get(key))


def check_security(k8s, problems):
    for w in workloads(k8s):
        spec = w["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
        for shared in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(shared):
                problems.add("security", f"{app_name(w)} shares the node's namespaces ({shared})")
        for volume in spec.get("volumes", []):
            if "hostPath" in volume:
                problems.add("security", f"{app_name(w)} mounts the node's filesystem (hostPath volume {volume['name']})")
        for c in containers(w):
            who = f"{app_name(w)}/{c['name']}"
            sc = c.get("securityContext", {})
            if effective(pod_sc, sc, "runAsNonRoot") is not True:
                problems.add("security", f"{who} does not set runAsNonRoot")
            user = effective(pod_sc, sc, "runAsUser")
            if user is None or user == 0:
                problems.add("security", f"{who} runs as root (runAsUser {user})")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.add("security", f"{who} has a writable root filesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.add("security", f"{who} allows privilege escalation")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.add("security", f"{who} keeps Linux capabilities")
            if sc.get("privileged"):
                problems.add("security", f"{who} is privileged")
            if (effective(pod_sc, sc, "seccompProfile") or {}).get("type") != "RuntimeDefault":
                problems.add("security", f"{who} has no RuntimeDefault seccomp profile")
            resources = c.get("resources", {})
            if "memory" not in resources.get("requests", {}) or "memory" not in resources.get("limits", {}):
                problems.add("resources", f"{who} has no memory request and limit")


def check_demo_secret(k8s, problems):
    """The base is what a real deployment starts from: it never lets the
    gateway take the short demo secret. Only a local overlay allows it."""
    for w in workloads(k8s):
        for c in containers(w):
            if any(e.get("name") == "ALLOW_DEMO_SECRET" for e in c.get("env", [])):
                problems.add("demo-secret", f"{app_name(w)}/{c['name']} allows the demo webhook secret outside a local overlay")


def app_env(k8s, app, var):
    """The literal value of `var` in Deployment `app`, or None."""
    workload = named(k8s, "Deployment", app)
    return None if workload is None else env_value(workload, var)


def origin(url):
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_sns_origins(k8s, problems):
    """The gateway fetches SNS signing certificates only from AWS's hosts and
    SNS_CERT_ORIGINS: the notifier's own SNS endpoint (LocalStack) must be one
    of them, or every delivery it sends to POST /sns is refused as forged."""
    endpoint = app_env(k8s, "app-notifier", "SNS_ENDPOINT_URL")
    if not endpoint:
        return
    origins = [origin(o.strip()) for o in (app_env(k8s, "app-gateway", "SNS_CERT_ORIGINS") or "").split(",") if o.strip()]
    if origin(endpoint) not in origins:
        problems.add("sns-origins", f"app-notifier publishes through {endpoint}, whose certificates app-gateway "
                                    f"does not fetch (SNS_CERT_ORIGINS: {origins or 'unset'})")


def dockerfile_binaries():
    text = (ROOT / "Dockerfile").read_text()
    return set(re.findall(r"--bin\s+(\S+)", text))


def workspace_binaries():
    out = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        capture_output=True, text=True, cwd=ROOT,
    )
    if out.returncode != 0:
        raise SystemExit(f"cargo metadata failed:\n{out.stderr}")
    meta = json.loads(out.stdout)
    return {t["name"] for p in meta["packages"] for t in p["targets"] if "bin" in t["kind"]}


def check_images(k8s, binaries, problems):
    for w in workloads(k8s):
        for c in containers(w):
            image = c["image"]
            who = f"{app_name(w)}/{c['name']}"
            if image.startswith("ticketmesh/"):
                name = image.split("/", 1)[1].split(":")[0]
                if name not in binaries:
                    problems.add("images", f"{who}: image {image} is not one the Dockerfile builds ({', '.join(sorted(binaries))})")
                if name != app_name(w):
                    problems.add("images", f"{who}: runs {name}, but the workload is {app_name(w)}")
            elif ":" not in image.split("/")[-1] or image.endswith(":latest"):
                problems.add("images", f"{who}: pin the image's version ({image})")
            elif app_name(w).startswith("mon-") and not RELEASE.search(image):
                problems.add("images", f"{who}: pin an exact release, x.y.z or a digest ({image})")


def help_env(binary):
    """Every environment variable `binary --help` documents."""
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
    names = set(re.findall(r"\[env: ([A-Z0-9_]+)[=\]]", out.stdout))
    names |= set(re.findall(r"^  ([A-Z][A-Z0-9_]+)\b", out.stdout, re.M))
    return names


def app_containers(k8s):
    for w in workloads(k8s):
        for c in containers(w):
            if c["image"].startswith("ticketmesh/"):
                yield w, c


def check_env(k8s, bindir, problems):
    for w, c in app_containers(k8s):
        name = app_name(w)
        binary = bindir / name
        if not binary.exists():
            problems.add("env", f"{binary} is not built (cargo build --bins)")
            continue
        known = help_env(binary)
        for var in c.get("env", []):
            if var["name"] not in known:
                problems.add("env", f"{name}: {var['name']} is not a flag or documented variable of `{name} --help`")


def secret_value(k8s, ref):
    secret = named(k8s, "Secret", ref["name"])
    if secret is None or ref["key"] not in secret.get("stringData", {}):
        return None
    return secret["stringData"][ref["key"]]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Unreachable(str):
    """A probe failure worth retrying: the server is not listening yet."""


def probe_once(probe, ports):
    """None if the probe reached something the binary serves, else why not."""
    if "httpGet" in probe:
        get = probe["httpGet"]
        port = ports.get(get["port"], ports.get(str(get["port"])))
        if port is None:
            return f"port {get['port']} is not a container port"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{get['path']}", timeout=5) as response:
                return None if response.status < 400 else f"GET {get['path']} answered {response.status}"
        except urllib.error.HTTPError as e:
            # 503 is a real answer (not ready yet); 404 means the path is not served.
            return None if e.code == 503 else f"GET {get['path']} answered {e.code}"
        except OSError as e:
            return Unreachable(f"GET {get['path']}: {e}")
    if "grpc" in probe:
        grpc = probe["grpc"]
        port = ports.get(str(grpc["port"]))
        if port is None:
            return f"gRPC probe port {grpc['port']} is not a container port"
        request = json.dumps({"service": grpc.get("service", "")})
        out = subprocess.run(
            [GRPCURL, "-plaintext", "-max-time", "5", "-d", request, f"127.0.0.1:{port}", "grpc.health.v1.Health/Check"],
            capture_output=True, text=True,
        )
        if out.returncode == 0 and '"status"' in out.stdout:
            return None  # SERVING or NOT_SERVING: the service is known
        why = f"gRPC health of {grpc.get('service')!r}: {(out.stdout + out.stderr).strip()}"
        return Unreachable(why) if "Unavailable" in out.stderr else why
    if "exec" in probe or "tcpSocket" in probe:
        return "exec and TCP probes are not used on the services"
    return "unknown probe"


def check_probes(k8s, bindir, problems, only=None):
    """Start each binary with its Deployment's environment (listening on free
    local ports instead) and run its probes against it."""
    for w, c in app_containers(k8s):
        name = app_name(w)
        if only is not None and name != only:
            continue
        if not c.get("ports"):
            # A client that serves nothing (the simulator) has nothing to probe.
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                if kind in c:
                    problems.add("probes", f"{name} serves no port, yet has a {kind}")
            continue
        binary = bindir / name
        if not binary.exists():
            problems.add("probes", f"{binary} is not built")
            continue
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
        for var in c.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in var.get("valueFrom", {}):
                value = secret_value(k8s, var["valueFrom"]["secretKeyRef"])
                if value is None:
                    problems.add("probes", f"{name}: {var['name']} refers to a missing secret key")
                    value = ""
                env[var["name"]] = value
        # Map each container port to a free local port through the *_ADDR flag that binds it.
        ports = {}
        for p in c.get("ports", []):
            bound = [k for k, v in env.items() if k.endswith("_ADDR") and v.rsplit(":", 1)[-1] == str(p["containerPort"])]
            if len(bound) != 1:
                problems.add("probes", f"{name}: container port {p['name']} ({p['containerPort']}) is bound by no *_ADDR variable")
                continue
            local = free_port()
            env[bound[0]] = f"127.0.0.1:{local}"
            ports[p["name"]] = ports[str(p["containerPort"])] = local
        env["LOG_FORMAT"] = "json"
        proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = c.get(kind)
                if probe is None:
                    problems.add("probes", f"{name} serves ports but has no {kind}")
                    continue
                deadline = time.monotonic() + 20
                why = probe_once(probe, ports)
                while isinstance(why, Unreachable) and time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.2)
                    why = probe_once(probe, ports)
                if why is not None:
                    problems.add("probes", f"{name} {kind}: {why}")
            if proc.poll() is not None:
                problems.add("probes", f"{name} exited ({proc.returncode}) with its Deployment's environment")
        finally:
            proc.terminate()
            try:
                output, _ = proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            if proc.returncode not in (0, -15):
                problems.add("probes", f"{name} stopped with {proc.returncode}:\n{output[-2000:]}")


# ---------------------------------------------------------------- cluster files


def read_env_file(path):
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def check_kind(k8s, versions, problems):
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    if config.get("kind") != "Cluster" or config.get("apiVersion") != "kind.x-k8s.io/v1alpha4":
        problems.add("kind", "kind-config.yaml is not a kind.x-k8s.io/v1alpha4 Cluster")
    nodes = config.get("nodes", [])
    images = {n.get("image") for n in nodes}
    if images != {versions.get("KIND_NODE_IMAGE")}:
        problems.add("kind", f"node images {images} differ from mesh/versions.env {versions.get('KIND_NODE_IMAGE')}")
    if not re.search(r"kindest/node:v1\.3[1-5]\.\d+@sha256:[0-9a-f]{64}$", versions.get("KIND_NODE_IMAGE", "")):
        problems.add("kind", "the node image must be a digest-pinned Kubernetes 1.31-1.35 (Linkerd 2.20's range)")
    mapped = {m["containerPort"] for n in nodes for m in n.get("extraPortMappings", [])}
    node_ports = set()
    for service in by_kind(k8s, "Service"):
        for p in service["spec"]["ports"]:
            if "nodePort" in p:
                node_ports.add(p["nodePort"])
                if p["nodePort"] not in mapped:
                    problems.add("kind", f"node port {p['nodePort']} of {service['metadata']['name']} is not mapped to the host")
    for port in sorted(mapped - node_ports):
        problems.add("kind", f"kind-config.yaml maps port {port}, which no Service's node port uses")


def check_services(k8s, problems):
    for service in by_kind(k8s, "Service"):
        for p in service["spec"]["ports"]:
            who = f"Service {service['metadata']['name']} port {p.get('port')}"
            if "name" not in p:
                problems.add("services", f"{who} has no name")
            if "appProtocol" not in p:
                problems.add("services", f"{who} has no appProtocol")
        pods = selected(k8s, service["spec"].get("selector", {}))
        if len(pods) != 1:
            problems.add("services", f"Service {service['metadata']['name']} selects {len(pods)} workloads")
        for pod in pods:
            for p in service["spec"]["ports"]:
                if p.get("targetPort") not in container_ports(pod):
                    problems.add("services", f"Service {service['metadata']['name']}: targetPort {p.get('targetPort')} is not a named port of {app_name(pod)}")
    # Linkerd (2.19+) refuses connections to a port no Service declares, probes
    # and scrapes included.
    for w in workloads(k8s):
        declared = {
            p.get("targetPort")
            for service in by_kind(k8s, "Service")
            if service["spec"].get("selector") and all(pod_labels(w).get(k) == v for k, v in service["spec"]["selector"].items())
            for p in service["spec"]["ports"]
        }
        for c in containers(w):
            for p in c.get("ports", []):
                if "name" not in p:
                    problems.add("services", f"{app_name(w)}/{c['name']}: container port {p['containerPort']} has no name")
                elif p["name"] not in declared:
                    problems.add("services", f"{app_name(w)}/{c['name']}: port {p['name']} is on no Service (Linkerd blocks undeclared ports)")


# ---------------------------------------------------------------- replicas, rollouts and failure accrual


def selector_matches(selector, labels):
    """Whether a label selector (matchLabels, matchExpressions) selects a pod
    with `labels`. None selects nothing; {} everything (as in a
    PodDisruptionBudget of policy/v1)."""
    if not isinstance(selector, dict):
        return False
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e.get("key"), e.get("operator"), e.get("values", [])
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and key in labels and labels[key] in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def scaled(value, replicas, round_up):
    """An int-or-percent field as a number of pods, rounded as Kubernetes
    rounds that field; None if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d+%", value):
        exact = int(value[:-1]) * replicas / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return None


def human_seconds(text):
    """Seconds in one of the binaries' durations (humantime: "30s", "250ms",
    "1m 30s"), or None."""
    text = str(text).strip()
    pairs = HUMAN_DURATION.findall(text)
    if not pairs or HUMAN_DURATION.sub("", text).strip():
        return None
    return sum(int(n) * HUMAN_UNIT_S[unit] for n, unit in pairs)


@functools.cache
def help_defaults(binary):
    """{variable: default} as `binary --help` documents them (clap's
    `[env: X=] [default: …]`), run with a bare environment so that a variable
    set here does not show; None if the binary is not built."""
    if not binary.exists():
        return None
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30, env=env)
    return dict(re.findall(r"\[env: ([A-Z0-9_]+)=[^\]]*\] \[default: ([^\]]*)\]", out.stdout))


def env_value(workload, var):
    """The literal value the workload's app containers give `var`, or None."""
    for c in containers(workload):
        if c["image"].startswith("ticketmesh/"):
            for v in c.get("env", []):
                if v["name"] == var and "value" in v:
                    return v["value"]
    return None


def drain_bound(k8s, app, bindir, problems):
    """(seconds, what bounds it) for the longest an app may drain after
    SIGTERM (DRAIN_BOUNDS), or None when it cannot be known."""
    bounds = []
    for owner, var in DRAIN_BOUNDS[app]:
        workload = next((w for w in workloads(k8s) if app_name(w) == owner), None)
        value = env_value(workload, var) if workload is not None else None
        source = f"{owner}'s {var}"
        if value is None:
            defaults = help_defaults(bindir / owner)
            if defaults is None:
                problems.add("rollout", f"{app}: its drain is bounded by {source}, whose default needs {bindir / owner} (cargo build --bins)")
                return None
            if var not in defaults:
                problems.add("rollout", f"{app}: its drain is bounded by {source}, which `{owner} --help` gives no default")
                return None
            value = defaults[var]
            source += " (default)"
        seconds = human_seconds(value)
        if seconds is None:
            problems.add("rollout", f"{app}: {source} is {value!r}, not a duration")
            return None
        bounds.append((seconds, f"{source} {value}"))
    return max(bounds)


def check_rollout(k8s, bindir, problems):
    """Each REPLICATED app runs at least MIN_REPLICAS pods and rolls without
    losing a request: one PodDisruptionBudget that selects its pods (and no
    other workload's) keeps at least one and lets at least one go; a rollout
    never stops a pod before its replacement is ready (maxUnavailable 0,
    maxSurge >= 1); its pods are spread over nodes (soft: kind has one); a
    preStop sleep (the images have no shell) keeps it serving while its
    callers learn it is leaving; the grace period covers that sleep and the
    app's own drain; and the Linkerd proxy is a native sidecar, which the
    kubelet stops only after the app has exited."""
    budgets = by_kind(k8s, "PodDisruptionBudget")
    for app in REPLICATED:
        workload = next((w for w in by_kind(k8s, "Deployment") if app_name(w) == app), None)
        if workload is None:
            problems.add("rollout", f"no Deployment {app}")
            continue
        spec = workload["spec"]
        pod = spec["template"]["spec"]
        labels = pod_labels(workload)
        ns = workload["metadata"].get("namespace")
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < MIN_REPLICAS:
            problems.add("rollout", f"{app} runs {replicas} replica(s), not at least {MIN_REPLICAS}")
            replicas = replicas if isinstance(replicas, int) else 1

        def others(selector):
            return sorted(
                app_name(o) for o in workloads(k8s)
                if o is not workload and o["metadata"].get("namespace") == ns and selector_matches(selector, pod_labels(o))
            )

        mine = [b for b in budgets if b["metadata"].get("namespace") == ns and selector_matches(b["spec"].get("selector"), labels)]
        if not mine:
            problems.add("rollout", f"{app}: no PodDisruptionBudget selects its pods, so a node drain may evict them all at once")
        elif len(mine) > 1:
            problems.add("rollout", f"{app}: its pods are selected by {len(mine)} PodDisruptionBudgets ({', '.join(b['metadata']['name'] for b in mine)}); the eviction API refuses to evict a pod under more than one")
        for budget in mine:
            name, bspec = budget["metadata"]["name"], budget["spec"]
            shared = others(bspec.get("selector"))
            if shared:
                problems.add("rollout", f"PodDisruptionBudget {name} selects {app}'s pods and those of {', '.join(shared)}: one budget for several workloads")
            if "minAvailable" in bspec:
                kept = scaled(bspec["minAvailable"], replicas, True)
                if kept is None or not 1 <= kept < replicas:
                    problems.add("rollout", f"PodDisruptionBudget {name}: minAvailable {bspec['minAvailable']} of {replicas} pods must keep at least 1 and let at least 1 go (1 <= minAvailable < replicas)")
            elif "maxUnavailable" in bspec:
                gone = scaled(bspec["maxUnavailable"], replicas, True)
                if gone is None or not 1 <= gone < replicas:
                    problems.add("rollout", f"PodDisruptionBudget {name}: maxUnavailable {bspec['maxUnavailable']} of {replicas} pods must let at least 1 go and keep at least 1")
            else:
                problems.add("rollout", f"PodDisruptionBudget {name} sets neither minAvailable nor maxUnavailable")
        strategy = spec.get("strategy", {})
        rolling = strategy.get("rollingUpdate", {})
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            problems.add("rollout", f"{app}: strategy {strategy.get('type')} stops every pod before starting new ones")
        elif "maxUnavailable" not in rolling:
            problems.add("rollout", f"{app}: set strategy.rollingUpdate.maxUnavailable to 0 (the default, 25 %, stops a pod before its replacement is ready from 4 replicas on)")
        else:
            # A Deployment rounds maxUnavailable down and maxSurge up.
            down = scaled(rolling["maxUnavailable"], replicas, False)
            surge = scaled(rolling.get("maxSurge", "25%"), replicas, True)
            if down != 0:
                problems.add("rollout", f"{app}: rollingUpdate.maxUnavailable {rolling['maxUnavailable']} may stop a pod before its replacement is ready; it must be 0")
            if surge is None or surge < 1:
                problems.add("rollout", f"{app}: rollingUpdate.maxSurge {rolling.get('maxSurge')} must start at least one new pod (with maxUnavailable 0 the rollout could not move)")
        spreads = [c for c in pod.get("topologySpreadConstraints", []) if c.get("topologyKey") == HOSTNAME_KEY]
        own = [c for c in spreads if selector_matches(c.get("labelSelector"), labels) and not others(c.get("labelSelector"))]
        if not own:
            problems.add("rollout", f"{app}: no topologySpreadConstraint on {HOSTNAME_KEY} whose labelSelector selects its own pods (and no other workload's)")
        for c in own:
            if c.get("whenUnsatisfiable") != "ScheduleAnyway":
                problems.add("rollout", f"{app}: the spread on {HOSTNAME_KEY} is {c.get('whenUnsatisfiable')}, not ScheduleAnyway (kind has one node; a hard spread can leave a pod pending)")
        main = next((c for c in pod["containers"] if c["name"] == app), pod["containers"][0])
        pre_stop = main.get("lifecycle", {}).get("preStop", {})
        if "sleep" not in pre_stop:
            problems.add("rollout", f"{app}/{main['name']}: no preStop sleep action (SIGTERM would come while callers still send to it; an exec sleep needs a shell the distroless image lacks)")
        sleep = pre_stop.get("sleep", {}).get("seconds", 0)
        if "sleep" in pre_stop and (not isinstance(sleep, int) or sleep < 1):
            problems.add("rollout", f"{app}/{main['name']}: preStop sleeps {sleep} s")
            sleep = 0
        grace = pod.get("terminationGracePeriodSeconds", 30)
        bound = drain_bound(k8s, app, bindir, problems)
        if bound is not None:
            drain, source = bound
            if grace <= sleep + drain:
                problems.add("rollout", f"{app}: terminationGracePeriodSeconds {grace} is not above preStop {sleep} s + its drain {drain:g} s ({source}): the kubelet would kill it mid-drain")
        native = spec["template"]["metadata"].get("annotations", {}).get(NATIVE_SIDECAR)
        if native != "true":
            problems.add("rollout", f"{app}: {NATIVE_SIDECAR} is {native!r}, not \"true\": the proxy must be a native sidecar, stopped after the app has drained")


def linkerd_duration_ms(text):
    """Milliseconds in a Linkerd annotation duration (a whole number and ms, s,
    m, h or d; "0" alone), as its policy controller parses it; None if it
    would refuse it."""
    m = LINKERD_DURATION.fullmatch(text.strip())
    if m is None:
        return None
    magnitude, unit = int(m.group(1)), m.group(2)
    if unit is None:
        return 0 if magnitude == 0 else None
    return magnitude * LINKERD_UNIT_MS[unit]


def check_failure_accrual(k8s, problems):
    """Failure accrual annotations on a Service, held to what Linkerd's policy
    controller accepts: known keys (it ignores others), the only mode
    `consecutive`, max-failures a whole number >= 1, penalties Linkerd
    durations with 0 < min-penalty <= max-penalty (unset: 1s and 1m), the
    jitter ratio a number from 0 to 100, and string values. Parameters without
    the mode do nothing, and accrual on a Service with a single pod only
    ejects that pod. The FAILURE_ACCRUAL Services must have it."""
    for service in by_kind(k8s, "Service"):
        name = service["metadata"]["name"]
        annotations = service["metadata"].get("annotations") or {}
        keys = sorted(k for k in annotations if k.startswith(ACCRUAL_PREFIX))
        for key in keys:
            if key not in ACCRUAL_KEYS:
                problems.add("accrual", f"Service {name}: {key} is not a failure-accrual annotation Linkerd knows ({', '.join(ACCRUAL_KEYS)}); it would be ignored")
            elif not isinstance(annotations[key], str):
                problems.add("accrual", f"Service {name}: {key} must be a string, not {annotations[key]!r}")
        mode = annotations.get(ACCRUAL_MODE)
        params = [k for k in keys if k in ACCRUAL_KEYS and k != ACCRUAL_MODE]
        if mode is None:
            if name in FAILURE_ACCRUAL:
                problems.add("accrual", f"Service {name} has no {ACCRUAL_MODE}: its callers would keep sending to a failing pod")
            if params:
                problems.add("accrual", f"Service {name} sets {', '.join(params)} without {ACCRUAL_MODE}: consecutive; Linkerd ignores them")
            continue
        if mode != "consecutive":
            problems.add("accrual", f"Service {name}: {ACCRUAL_MODE} is {mode!r}; the only mode Linkerd has is consecutive")
            continue
        text = {k: annotations[k] for k in params if isinstance(annotations[k], str)}
        failures = text.get(ACCRUAL_MAX_FAILURES, "7")
        if not re.fullmatch(r"\d+", failures) or not 1 <= int(failures) < 2**32:
            problems.add("accrual", f"Service {name}: {ACCRUAL_MAX_FAILURES} {failures!r} is not a whole number of failures from 1")
        penalties = {}
        for key, default in ((ACCRUAL_MIN_PENALTY, "1s"), (ACCRUAL_MAX_PENALTY, "1m")):
            ms = linkerd_duration_ms(text.get(key, default))
            if ms is None:
                problems.add("accrual", f"Service {name}: {key} {text.get(key)!r} is not a Linkerd duration (a whole number and ms, s, m, h or d): Linkerd would drop the whole policy")
            elif ms == 0:
                problems.add("accrual", f"Service {name}: {key} is zero; Linkerd wants a penalty above 0")
            else:
                penalties[key] = ms
        if len(penalties) == 2 and penalties[ACCRUAL_MIN_PENALTY] > penalties[ACCRUAL_MAX_PENALTY]:
            problems.add("accrual", f"Service {name}: min-penalty {text.get(ACCRUAL_MIN_PENALTY, '1s')} is above max-penalty {text.get(ACCRUAL_MAX_PENALTY, '1m')}: Linkerd would drop the whole policy")
        jitter = text.get(ACCRUAL_JITTER, "0.5")
        if not re.fullmatch(r"\d+(\.\d+)?", jitter) or not 0 <= float(jitter) <= 100:
            problems.add("accrual", f"Service {name}: {ACCRUAL_JITTER} {jitter!r} is not a number from 0 to 100")
        pods = selected(k8s, service["spec"].get("selector", {}))
        if pods and max(w["spec"].get("replicas", 1) for w in pods) < MIN_REPLICAS:
            problems.add("accrual", f"Service {name} has failure accrual but one pod: ejecting it would fail every call fast")


# ---------------------------------------------------------------- the observability stack's configuration


def config_maps(k8s, key):
    """The ConfigMaps that carry a file named `key`."""
    return [cm for cm in by_kind(k8s, "ConfigMap") if key in cm.get("data", {})]


def mounted_files(workload, config_map):
    """{path in the container: key} for every file of `config_map` the workload mounts."""
    spec = workload["spec"]["template"]["spec"]
    files = {}
    for volume in spec.get("volumes", []):
        if volume.get("configMap", {}).get("name") != config_map["metadata"]["name"]:
            continue
        items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in config_map.get("data", {})]
        for c in containers(workload):
            for mount in c.get("volumeMounts", []):
                if mount["name"] == volume["name"]:
                    for item in items:
                        files[f"{mount['mountPath'].rstrip('/')}/{item['path']}"] = item["key"]
    return files


def mounters(k8s, config_map):
    ns = config_map["metadata"].get("namespace")
    return [w for w in workloads(k8s) if w["metadata"].get("namespace") == ns and mounted_files(w, config_map)]


def check_probe_shapes(k8s, problems):
    """Images that cannot run here (the backing and monitoring services) are
    held to the shape of their probes: a readiness and a liveness check, each
    on a port the container declares. The services' own probes are run."""
    for w in workloads(k8s):
        for c in containers(w):
            if c["image"].startswith("ticketmesh/"):
                continue
            who = f"{app_name(w)}/{c['name']}"
            ports = {p.get("name") for p in c.get("ports", [])} | {p["containerPort"] for p in c.get("ports", [])}
            for kind in ("readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if probe is None:
                    problems.add("probe-shape", f"{who} has no {kind}")
                    continue
                for handler in ("httpGet", "tcpSocket", "grpc"):
                    if handler in probe and probe[handler]["port"] not in ports:
                        problems.add("probe-shape", f"{who} {kind}: port {probe[handler]['port']} is not a port of the container")
                if "httpGet" in probe and not probe["httpGet"].get("path", "").startswith("/"):
                    problems.add("probe-shape", f"{who} {kind}: path {probe['httpGet'].get('path')!r} is not absolute")


def check_mounts(k8s, problems):
    """Every volume is mounted and every mount has a volume; every ConfigMap,
    Secret and Secret key a pod uses is here (else the pod never starts); a
    ConfigMap mounted with `items` mounts all its keys, so a file added to
    its generator is not silently left out."""
    for w in workloads(k8s):
        ns = w["metadata"].get("namespace")
        spec = w["spec"]["template"]["spec"]
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounted = {m["name"] for c in containers(w) for m in c.get("volumeMounts", [])}
        for name in sorted(mounted - set(volumes) - claims):
            problems.add("mounts", f"{app_name(w)} mounts {name}, which is no volume of the pod")
        for name in sorted(set(volumes) - mounted):
            problems.add("mounts", f"{app_name(w)}: volume {name} is mounted nowhere")
        for name, volume in volumes.items():
            for kind, field in (("ConfigMap", "configMap"), ("Secret", "secret")):
                if field not in volume:
                    continue
                ref = volume[field].get("name") or volume[field].get("secretName")
                obj = next((o for o in by_kind(k8s, kind) if o["metadata"]["name"] == ref and o["metadata"].get("namespace") == ns), None)
                if obj is None:
                    problems.add("mounts", f"{app_name(w)}: volume {name} is {kind} {ref}, which is not in {ns}")
                    continue
                keys = set(obj.get("data", {})) | set(obj.get("binaryData", {})) | set(obj.get("stringData", {}))
                items = volume[field].get("items")
                if items:
                    listed = {i["key"] for i in items}
                    for key in sorted(keys - listed):
                        problems.add("mounts", f"{app_name(w)}: {kind} {ref} has {key}, which volume {name} does not mount")
                    for key in sorted(listed - keys):
                        problems.add("mounts", f"{app_name(w)}: volume {name} mounts {key}, which {kind} {ref} lacks")
        for c in containers(w):
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                secret = next((o for o in by_kind(k8s, "Secret") if o["metadata"]["name"] == ref["name"] and o["metadata"].get("namespace") == ns), None)
                if secret is None or ref["key"] not in {**secret.get("data", {}), **secret.get("stringData", {})}:
                    problems.add("mounts", f"{app_name(w)}/{c['name']}: {var['name']} reads {ref['name']}/{ref['key']}, which is not in {ns}")


def check_sizes(k8s, problems):
    for obj in by_kind(k8s, "ConfigMap") + by_kind(k8s, "Secret"):
        size = len(json.dumps(obj, separators=(",", ":")))
        if size > LAST_APPLIED_LIMIT:
            problems.add("sizes", f"{obj['kind']} {obj['metadata']['name']} is {size} bytes: `kubectl apply` cannot record more than {LAST_APPLIED_LIMIT}; split its generator")


def service_ports(k8s):
    return {
        (s["metadata"].get("namespace"), s["metadata"]["name"]): {p["port"] for p in s["spec"]["ports"]}
        for s in by_kind(k8s, "Service")
    }


def check_references(k8s, values, problems):
    """Every Service a config file names by host:port (Prometheus's targets and
    Alertmanager, the collector's exporter, Alloy's Loki, Grafana's data
    sources) has that port, and Linkerd sends the proxies' spans to a Service
    port of the collector, under the collector's own identity."""
    ports = service_ports(k8s)
    for cm in by_kind(k8s, "ConfigMap"):
        ns = cm["metadata"].get("namespace")
        for key, text in sorted(cm.get("data", {}).items()):
            for host, host_ns, port in SERVICE_ADDRESS.findall(text):
                if int(port) not in ports.get((host_ns or ns, host), set()):
                    problems.add("references", f"ConfigMap {cm['metadata']['name']} ({key}) names {host}{'.' + host_ns if host_ns else ''}:{port}, which is no Service port in {host_ns or ns}")
    collector = values.get("proxy", {}).get("tracing", {}).get("collector", {})
    endpoint = collector.get("endpoint", "")
    found = SERVICE_ADDRESS.findall(endpoint)
    if not found:
        problems.add("references", f"{LINKERD_VALUES}: the trace collector endpoint {endpoint!r} names no Service here")
        return
    host, host_ns, port = found[0]
    if int(port) not in ports.get((host_ns, host), set()):
        problems.add("references", f"{LINKERD_VALUES}: the trace collector {endpoint} is no Service port here")
    identity = collector.get("meshIdentity", {})
    service = next((s for s in by_kind(k8s, "Service") if s["metadata"]["name"] == host and s["metadata"].get("namespace") == host_ns), None)
    runs_as = {
        (w["metadata"].get("namespace"), w["spec"]["template"]["spec"].get("serviceAccountName"))
        for w in (selected(k8s, service["spec"]["selector"]) if service else [])
    }
    if (identity.get("namespace"), identity.get("serviceAccountName")) not in runs_as:
        problems.add("references", f"{LINKERD_VALUES}: meshIdentity {identity} is not the account the collector runs as ({runs_as or 'none'}): the proxies would refuse it")


def check_prometheus(k8s, problems):
    """The cluster Prometheus has exactly the jobs the rules and dashboards
    expect, discovers only namespaces that exist, and finds its rule files
    where the pod mounts them."""
    namespaces = {ns["metadata"]["name"] for ns in by_kind(k8s, "Namespace")}
    for cm in config_maps(k8s, "prometheus.yml"):
        config = yaml.safe_load(cm["data"]["prometheus.yml"])
        jobs = {job["job_name"] for job in config.get("scrape_configs", [])}
        for job in sorted(jobs - PROMETHEUS_JOBS):
            problems.add("prometheus", f"prometheus.yml has job {job}, which the rules and dashboards do not know ({', '.join(sorted(PROMETHEUS_JOBS))})")
        for job in sorted(PROMETHEUS_JOBS - jobs):
            problems.add("prometheus", f"prometheus.yml has no job {job}")
        for job in config.get("scrape_configs", []):
            for sd in job.get("kubernetes_sd_configs", []):
                for ns in sd.get("namespaces", {}).get("names", []):
                    if ns not in namespaces:
                        problems.add("prometheus", f"job {job['job_name']} discovers namespace {ns}, which is not here")
        for w in mounters(k8s, cm):
            files = mounted_files(w, cm)
            config_path = next((p for p, key in files.items() if key == "prometheus.yml"), None)
            for rule_file in config.get("rule_files", []):
                path = rule_file if rule_file.startswith("/") else f"{config_path.rsplit('/', 1)[0]}/{rule_file}"
                if path not in files:
                    problems.add("prometheus", f"{app_name(w)}: rule file {rule_file} is not mounted ({path})")


def check_grafana(k8s, problems):
    """Grafana's dashboard provider reads the folder the dashboards are
    mounted in, and its home dashboard is one of them."""
    for cm in config_maps(k8s, "dashboards.yaml"):
        providers = yaml.safe_load(cm["data"]["dashboards.yaml"]).get("providers", [])
        for w in mounters(k8s, cm):
            dashboards = {
                path: key
                for other in by_kind(k8s, "ConfigMap")
                for path, key in mounted_files(w, other).items()
                if key.endswith(".json")
            }
            folders = {path.rsplit("/", 1)[0] for path in dashboards}
            for provider in providers:
                folder = provider.get("options", {}).get("path", "").rstrip("/")
                if folder not in folders:
                    problems.add("grafana", f"{app_name(w)}: provider {provider.get('name')} reads {folder}, where no dashboard is mounted ({', '.join(sorted(folders)) or 'none'})")
            for c in containers(w):
                for var in c.get("env", []):
                    if var["name"] == "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH" and var.get("value") not in dashboards:
                        problems.add("grafana", f"{app_name(w)}: the home dashboard {var.get('value')} is not a mounted dashboard")


# ---------------------------------------------------------------- main


# ---------------------------------------------------------------- the L4 demo

# `make l4-demo`: the gateway's outbound gRPC past its proxy, so that each of
# its HTTP/2 connections lands on one pod (k8s/overlays/kind-l4-balancing),
# and the plaintext calls let in by address (mesh/demos/l4-balancing).
L4_OVERLAY = "k8s/overlays/kind-l4-balancing"
L4_POLICY = "mesh/demos/l4-balancing"
SKIP_OUTBOUND = "config.linkerd.io/skip-outbound-ports"
KIND_POD_SUBNET = "10.244.0.0/16"  # kind's default podSubnet


def kind_pod_subnet():
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    return (config.get("networking") or {}).get("podSubnet", KIND_POD_SUBNET)


def check_l4_demo(rendered, graph, problems):
    """The demo changes the kind overlay in one place only, the gateway's
    pods skipping their proxy for exactly the Service ports of its gRPC
    edges; and its policy lets in, from kind's pod network, exactly those
    edges of mesh/call-graph.yaml (the same methods), nothing else."""
    demo, policy, kind = rendered.get(L4_OVERLAY), rendered.get(L4_POLICY), rendered["k8s/overlays/kind"]
    if demo is None or policy is None:
        problems.add("l4-demo", f"{L4_OVERLAY} and {L4_POLICY} go together; one is missing")
        return
    gateway_edges = [c for c in graph.get("calls", []) if c.get("from") == "app-gateway" and c["port"] == "grpc"]
    ports = set()
    for edge in gateway_edges:
        service = named(kind, "Service", edge["to"])
        ports |= {p["port"] for p in (service or {}).get("spec", {}).get("ports", []) if p.get("name") == "grpc"}
    gateway = named(demo, "Deployment", "app-gateway")
    annotations = ((gateway or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}))
    skipped = {int(p) for p in str(annotations.get(SKIP_OUTBOUND, "")).split(",") if p.strip().isdigit()}
    if skipped != ports:
        problems.add("l4-demo", f"{L4_OVERLAY}: app-gateway skips its proxy for ports {sorted(skipped)}, "
                                f"not the gRPC ports of the services it calls {sorted(ports)}")
    stripped = copy.deepcopy(demo)
    if gateway is not None:
        named(stripped, "Deployment", "app-gateway")["spec"]["template"]["metadata"].get("annotations", {}).pop(SKIP_OUTBOUND, None)
    if stripped != kind:
        problems.add("l4-demo", f"{L4_OVERLAY} differs from k8s/overlays/kind in more than {SKIP_OUTBOUND} of app-gateway")
    for obj in policy:
        if obj["kind"] not in ("NetworkAuthentication", "AuthorizationPolicy"):
            problems.add("l4-demo", f"{L4_POLICY}: a {obj['kind']}; the demo only authorizes")
    subnet = kind_pod_subnet()
    for authn in by_kind(policy, "NetworkAuthentication"):
        cidrs = [n.get("cidr") for n in authn["spec"]["networks"]]
        if cidrs != [subnet] or any(n.get("except") for n in authn["spec"]["networks"]):
            problems.add("l4-demo", f"NetworkAuthentication {authn['metadata']['name']}: {cidrs}, not kind's pod network [{subnet}]")
    before = authorized_edges(kind, rendered["mesh"], problems)
    after = authorized_edges(kind, rendered["mesh"] + policy, problems)
    wanted = {(None, e["to"], e["port"], tuple(sorted(e["methods"]))) for e in gateway_edges}
    for edge in sorted((after - before) - wanted, key=show):
        problems.add("l4-demo", f"{L4_POLICY} opens more than the gateway's gRPC edges: {show(edge)}")
    for edge in sorted(wanted - after, key=show):
        problems.add("l4-demo", f"{L4_POLICY} leaves a gateway gRPC edge closed to plaintext calls: {show(edge)}")


def run_checks(rendered, graph, versions, binaries, bindir, probes, only=None, schemas=True):
    problems = Problems()
    manifests = {name: objects for name, objects in rendered.items() if name != LINKERD_VALUES}
    if schemas:
        for objects in manifests.values():
            check_schemas(objects, problems)
    mesh = rendered["mesh"]
    for name, k8s in manifests.items():
        if name == "mesh" or name.startswith("mesh/"):
            continue
        local = Problems()
        check_namespace(k8s, local)
        check_rbac(k8s, local)
        check_services(k8s, local)
        check_security(k8s, local)
        check_images(k8s, binaries, local)
        check_probe_shapes(k8s, local)
        check_mounts(k8s, local)
        check_sizes(k8s, local)
        check_prometheus(k8s, local)
        check_grafana(k8s, local)
        check_policy(k8s, mesh, graph, local)
        check_rollout(k8s, bindir, local)
        check_failure_accrual(k8s, local)
        check_sns_origins(k8s, local)
        if name.startswith("k8s/overlays/"):
            check_kind(k8s, versions, local)
            check_references(k8s, rendered[LINKERD_VALUES], local)
        else:
            check_demo_secret(k8s, local)
        problems.extend(f"{name}: {p}" for p in local)
    k8s = rendered["k8s/overlays/kind"]
    check_l4_demo(rendered, graph, problems)
    check_routes(k8s, mesh, graph, problems)
    check_env(k8s, bindir, problems)
    if probes:
        check_probes(k8s, bindir, problems, only)
    return problems


def mutations(rendered):
    """(what it breaks, the check that must notice, a broken copy) for --self-test."""

    def broken(change):
        copy_ = copy.deepcopy(rendered)
        change(copy_)
        return copy_

    def find(r, where, kind, name):
        return named(r[where], kind, name)

    kind = "k8s/overlays/kind"

    def deployment(r, name):
        return find(r, kind, "Deployment", name)["spec"]["template"]["spec"]

    def workload(r, name):
        return find(r, kind, "Deployment", name)

    def edit_file(r, key, old, new):
        data = config_maps(r[kind], key)[0]["data"]
        if old not in data[key]:
            raise SystemExit(f"self-test: {old!r} is no longer in {key}; update the mutation")
        data[key] = data[key].replace(old, new)

    def mount(r, workload, volume):
        return next(m for c in deployment(r, workload)["containers"] for m in c["volumeMounts"] if m["name"] == volume)

    def unmap(service):
        service["spec"]["type"] = "ClusterIP"
        service["spec"]["ports"][0].pop("nodePort")

    yield "the L4 demo's policy opening storage's writes", "l4-demo", broken(
        lambda r: find(r, L4_POLICY, "AuthorizationPolicy", "l4-demo-app-storage-reads")["spec"]["targetRef"].__setitem__(
            "name", "app-storage-writes"))
    yield "the L4 demo's policy missing the notifier", "l4-demo", broken(
        lambda r: r[L4_POLICY].remove(find(r, L4_POLICY, "AuthorizationPolicy", "l4-demo-app-notifier-gateway")))
    yield "the L4 demo's network wider than the pods'", "l4-demo", broken(
        lambda r: find(r, L4_POLICY, "NetworkAuthentication", "l4-demo-pod-network")["spec"].__setitem__(
            "networks", [{"cidr": "0.0.0.0/0"}]))
    yield "the L4 demo's gateway skipping another port", "l4-demo", broken(
        lambda r: find(r, L4_OVERLAY, "Deployment", "app-gateway")["spec"]["template"]["metadata"]["annotations"].__setitem__(
            SKIP_OUTBOUND, "50051,5432"))
    yield "the L4 demo's overlay changing something else", "l4-demo", broken(
        lambda r: find(r, L4_OVERLAY, "Deployment", "app-gateway")["spec"].__setitem__("replicas", 1))
    yield "the notifier's SNS endpoint moved, not the gateway's certificate origin", "sns-origins", broken(
        lambda r: next(e for e in find(r, kind, "Deployment", "app-notifier")["spec"]["template"]["spec"]["containers"][0]
                       ["env"] if e["name"] == "SNS_ENDPOINT_URL").__setitem__("value", "http://infra-localstack:4567"))
    yield "the base allowing the demo webhook secret", "demo-secret", broken(
        lambda r: find(r, "k8s/base", "Deployment", "app-gateway")["spec"]["template"]["spec"]["containers"][0]
        .setdefault("env", []).append({"name": "ALLOW_DEMO_SECRET", "value": "true"}))
    yield "an unknown field in a Deployment", "schema", broken(
        lambda r: deployment(r, "app-event")["containers"][0].__setitem__("livenesProbe", {}))
    yield "an unknown field in a Server", "schema", broken(
        lambda r: find(r, "mesh", "Server", "app-event-grpc")["spec"].__setitem__("proxyProtocl", "gRPC"))
    yield "a policy removed", "call-graph", broken(
        lambda r: r["mesh"].remove(find(r, "mesh", "AuthorizationPolicy", "app-storage-writes")))
    yield "an identity added to an authentication", "call-graph", broken(
        lambda r: find(r, "mesh", "MeshTLSAuthentication", "app-gateway")["spec"]["identityRefs"].append(
            {"kind": "ServiceAccount", "name": "app-notifier"}))
    yield "a method added to an inbound route", "call-graph", broken(
        lambda r: find(r, "mesh", "GRPCRoute", "app-storage-reads")["spec"]["rules"][0]["matches"].append(
            {"method": {"service": "ticketmesh.v1.StorageService", "method": "SaveEvent"}}))
    yield "the proxies' metrics opened to another identity", "call-graph", broken(
        lambda r: find(r, "mesh", "MeshTLSAuthentication", "prometheus-servers")["spec"]["identityRefs"].append(
            {"kind": "ServiceAccount", "name": "app-gateway"}))
    yield "a path added to the proxies' probe route", "call-graph", broken(
        lambda r: find(r, "mesh", "HTTPRoute", "linkerd-proxy-probes")["spec"]["rules"][0]["matches"].append(
            {"path": {"type": "Exact", "value": "/metrics"}}))
    yield "the canary's scrape policy removed", "call-graph", broken(
        lambda r: r["mesh"].remove(find(r, "mesh", "AuthorizationPolicy", "app-simulator-admin")))
    yield "the gateway's admin port opened whole, fault rules included", "faults", broken(
        lambda r: find(r, "mesh", "AuthorizationPolicy", "app-gateway-admin-metrics")["spec"].__setitem__(
            "targetRef", {"group": "policy.linkerd.io", "kind": "Server", "name": "app-gateway-admin"}))
    yield "/faults added to an admin port's public probe route", "faults", broken(
        lambda r: find(r, "mesh", "HTTPRoute", "app-storage-admin-probes")["spec"]["rules"][0]["matches"].append(
            {"path": {"type": "Exact", "value": FAULTS_PATH}}))
    yield "a probe on a path its routed admin Server does not open", "policy", broken(
        lambda r: deployment(r, "app-event")["containers"][0]["livenessProbe"]["httpGet"].__setitem__("path", "/ready"))
    yield "a gRPC probe on a Server whose health route is gone", "policy", broken(
        lambda r: r["mesh"].remove(find(r, "mesh", "AuthorizationPolicy", "app-notifier-health")))
    yield "a Server on a port the pods do not have", "policy", broken(
        lambda r: find(r, "mesh", "Server", "app-event-admin")["spec"].__setitem__("port", "metrics"))
    yield "an unknown field in the gateway's rate limit", "schema", broken(
        lambda r: find(r, "mesh", "HTTPLocalRateLimitPolicy", "app-gateway-http")["spec"].__setitem__(
            "totl", {"requestsPerSecond": 3000}))
    yield "a rate limit on a missing Server", "rate-limit", broken(
        lambda r: find(r, "mesh", "HTTPLocalRateLimitPolicy", "app-gateway-http")["spec"]["targetRef"].__setitem__(
            "name", "app-gateway-htp"))
    yield "the gateway's rate limit moved to its admin port", "rate-limit", broken(
        lambda r: find(r, "mesh", "HTTPLocalRateLimitPolicy", "app-gateway-http")["spec"]["targetRef"].__setitem__(
            "name", "app-gateway-admin"))
    yield "a rate limit app-simulator's steady rate would hit", "rate-limit", broken(
        lambda r: find(r, "mesh", "HTTPLocalRateLimitPolicy", "app-gateway-http")["spec"]["identity"].__setitem__(
            "requestsPerSecond", 1))
    yield "a policy on a missing Server", "policy", broken(
        lambda r: find(r, "mesh", "AuthorizationPolicy", "infra-redis")["spec"]["targetRef"].__setitem__("name", "infra-redis-typo"))
    yield "the proxies' admin Server on some pods only", "policy", broken(
        lambda r: find(r, "mesh", "Server", "linkerd-proxy-admin")["spec"].__setitem__(
            "podSelector", {"matchLabels": {"app.kubernetes.io/name": "app-event"}}))
    yield "retries on a write", "routes", broken(
        lambda r: find(r, "mesh", "GRPCRoute", "app-storage-writes-outbound")["metadata"]["annotations"].__setitem__(
            "retry.linkerd.io/grpc", "unavailable"))
    yield "no catch-all route", "routes", broken(
        lambda r: r["mesh"].remove(find(r, "mesh", "GRPCRoute", "app-event-other-outbound")))
    yield "a container running as root", "security", broken(
        lambda r: deployment(r, "infra-redis")["securityContext"].__setitem__("runAsUser", 0))
    yield "a monitoring container running as root", "security", broken(
        lambda r: deployment(r, "mon-loki")["securityContext"].__setitem__("runAsUser", 0))
    yield "a writable root filesystem", "security", broken(
        lambda r: deployment(r, "app-gateway")["containers"][0]["securityContext"].__setitem__("readOnlyRootFilesystem", False))
    yield "a pod without a seccomp profile", "security", broken(
        lambda r: deployment(r, "mon-alloy")["securityContext"].pop("seccompProfile"))
    yield "a log shipper reading the node's files", "security", broken(
        lambda r: deployment(r, "mon-alloy")["volumes"].append({"name": "varlog", "hostPath": {"path": "/var/log"}}))
    yield "a monitoring image on a floating tag", "images", broken(
        lambda r: deployment(r, "mon-grafana")["containers"][0].__setitem__("image", "grafana/grafana:12"))
    yield "an env var the binary does not read", "env", broken(
        lambda r: deployment(r, "app-storage")["containers"][0]["env"].append({"name": "STORAGE_PORT", "value": "1"}))
    yield "an image the Dockerfile does not build", "images", broken(
        lambda r: deployment(r, "app-event")["containers"][0].__setitem__("image", "ticketmesh/app-events:dev"))
    yield "a probe on a path app-gateway does not serve", "probes", broken(
        lambda r: deployment(r, "app-gateway")["containers"][0]["livenessProbe"]["httpGet"].__setitem__("path", "/healthz"))
    yield "a gRPC probe for a service app-notifier does not serve", "probes", broken(
        lambda r: deployment(r, "app-notifier")["containers"][0]["readinessProbe"]["grpc"].__setitem__(
            "service", "ticketmesh.v1.StorageService"))
    yield "a monitoring probe on a port the container lacks", "probe-shape", broken(
        lambda r: deployment(r, "mon-grafana")["containers"][0]["readinessProbe"]["httpGet"].__setitem__("port", "web"))
    yield "app-event back to one replica", "rollout", broken(
        lambda r: workload(r, "app-event")["spec"].__setitem__("replicas", 1))
    yield "app-notifier's PodDisruptionBudget removed", "rollout", broken(
        lambda r: r[kind].remove(find(r, kind, "PodDisruptionBudget", "app-notifier")))
    yield "a PodDisruptionBudget that lets both app-storage pods go", "rollout", broken(
        lambda r: find(r, kind, "PodDisruptionBudget", "app-storage")["spec"].__setitem__("minAvailable", 0))
    yield "a PodDisruptionBudget that never lets an app-gateway pod go", "rollout", broken(
        lambda r: find(r, kind, "PodDisruptionBudget", "app-gateway")["spec"].__setitem__("minAvailable", "100%"))
    yield "app-event's PodDisruptionBudget selecting every ticketmesh pod", "rollout", broken(
        lambda r: find(r, kind, "PodDisruptionBudget", "app-event")["spec"].__setitem__(
            "selector", {"matchLabels": {"app.kubernetes.io/part-of": "ticketmesh"}}))
    yield "a rollout that may stop an app-storage pod before its replacement is ready", "rollout", broken(
        lambda r: workload(r, "app-storage")["spec"]["strategy"]["rollingUpdate"].__setitem__("maxUnavailable", 1))
    yield "app-event's hostname spread counting app-storage's pods", "rollout", broken(
        lambda r: deployment(r, "app-event")["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"].__setitem__(
            "app.kubernetes.io/name", "app-storage"))
    yield "a hard hostname spread for app-notifier", "rollout", broken(
        lambda r: deployment(r, "app-notifier")["topologySpreadConstraints"][0].__setitem__("whenUnsatisfiable", "DoNotSchedule"))
    yield "app-storage's preStop sleep removed", "rollout", broken(
        lambda r: deployment(r, "app-storage")["containers"][0].pop("lifecycle"))
    yield "a grace period shorter than preStop + the gateway's REQUEST_TIMEOUT", "rollout", broken(
        lambda r: deployment(r, "app-gateway").__setitem__("terminationGracePeriodSeconds", 30))
    yield "the gateway's REQUEST_TIMEOUT raised past its grace period", "rollout", broken(
        lambda r: deployment(r, "app-gateway")["containers"][0]["env"].append({"name": "REQUEST_TIMEOUT", "value": "60s"}))
    yield "the gateway's GRPC_TIMEOUT raised past the services' grace period", "rollout", broken(
        lambda r: deployment(r, "app-gateway")["containers"][0]["env"].append({"name": "GRPC_TIMEOUT", "value": "30s"}))
    yield "app-event's proxy back to the old sidecar", "rollout", broken(
        lambda r: workload(r, "app-event")["spec"]["template"]["metadata"]["annotations"].__setitem__(NATIVE_SIDECAR, "false"))
    yield "failure accrual removed from app-storage's Service", "accrual", broken(
        lambda r: find(r, kind, "Service", "app-storage")["metadata"]["annotations"].pop(ACCRUAL_MODE))
    yield "a failure-accrual key Linkerd does not know", "accrual", broken(
        lambda r: find(r, kind, "Service", "app-storage")["metadata"]["annotations"].__setitem__(
            "balancer.linkerd.io/failure-accrual-consecutive-jitter-percent", "50"))
    yield "a failure-accrual penalty Linkerd cannot parse", "accrual", broken(
        lambda r: find(r, kind, "Service", "app-storage")["metadata"]["annotations"].__setitem__(ACCRUAL_MAX_PENALTY, "1m30s"))
    yield "a failure-accrual min-penalty above its max-penalty", "accrual", broken(
        lambda r: find(r, kind, "Service", "app-event")["metadata"]["annotations"].__setitem__(ACCRUAL_MIN_PENALTY, "2m"))
    yield "a failure-accrual max-failures that is not a count", "accrual", broken(
        lambda r: find(r, kind, "Service", "app-storage")["metadata"]["annotations"].__setitem__(ACCRUAL_MAX_FAILURES, "five"))
    yield "failure accrual on a Service with one pod", "accrual", broken(
        lambda r: find(r, kind, "Service", "infra-redis")["metadata"].__setitem__(
            "annotations", {ACCRUAL_MODE: "consecutive"}))
    yield "a node port kind does not map", "kind", broken(
        lambda r: find(r, kind, "Service", "app-gateway")["spec"]["ports"][0].__setitem__("nodePort", 30081))
    yield "a host port mapped to no node port", "kind", broken(
        lambda r: unmap(find(r, kind, "Service", "mon-alertmanager")))
    yield "a container port no Service declares", "services", broken(
        lambda r: find(r, kind, "Service", "mon-otel-collector")["spec"]["ports"].pop())
    yield "a namespace without default-deny", "namespace", broken(
        lambda r: find(r, kind, "Namespace", "ticketmesh")["metadata"]["annotations"].pop(
            "config.linkerd.io/default-inbound-policy"))
    yield "an unmeshed monitoring namespace", "namespace", broken(
        lambda r: find(r, kind, "Namespace", MONITORING)["metadata"]["annotations"].pop("linkerd.io/inject"))
    yield "a monitoring object in the app namespace", "namespace", broken(
        lambda r: find(r, kind, "Service", "mon-grafana")["metadata"].__setitem__("namespace", NAMESPACE))
    yield "a ClusterRole that writes", "rbac", broken(
        lambda r: find(r, kind, "ClusterRole", "mon-prometheus")["rules"][0]["verbs"].append("delete"))
    yield "an API token mounted without a use", "rbac", broken(
        lambda r: deployment(r, "mon-grafana").__setitem__("automountServiceAccountToken", True))
    yield "a binding to an account that is not there", "rbac", broken(
        lambda r: find(r, kind, "ClusterRoleBinding", "mon-alloy")["subjects"][0].__setitem__("namespace", NAMESPACE))
    yield "a rule file left out of Prometheus's mount", "mounts", broken(
        lambda r: deployment(r, "mon-prometheus")["volumes"][0]["configMap"]["items"].pop())
    yield "a mount of a ConfigMap that is not there", "mounts", broken(
        lambda r: deployment(r, "mon-loki")["volumes"][0]["configMap"].__setitem__("name", "mon-loki-typo"))
    yield "a ConfigMap too big for kubectl apply", "sizes", broken(
        lambda r: config_maps(r[kind], "mesh.json")[0]["data"].__setitem__("mesh.json", " " * LAST_APPLIED_LIMIT))
    yield "Alertmanager named on a port it does not serve", "references", broken(
        lambda r: edit_file(r, "prometheus.yml", "mon-alertmanager:9093", "mon-alertmanager:9094"))
    yield "a trace collector identity the proxies would refuse", "references", broken(
        lambda r: r[LINKERD_VALUES]["proxy"]["tracing"]["collector"]["meshIdentity"].__setitem__("serviceAccountName", "otel-collector"))
    yield "a Prometheus job renamed", "prometheus", broken(
        lambda r: edit_file(r, "prometheus.yml", "job_name: linkerd-proxy", "job_name: linkerd-proxies"))
    yield "dashboards mounted where the provider does not look", "grafana", broken(
        lambda r: mount(r, "mon-grafana", "dashboards").__setitem__("mountPath", "/etc/grafana/dashboards"))


def tree_mutations(tree, files):
    """(what it breaks, a broken copy of the kustomizations and the file list)."""

    def broken(change):
        tree_, files_ = copy.deepcopy(tree), set(files)
        change(tree_, files_)
        return tree_, files_

    yield "a generator naming a file that does not exist", broken(
        lambda t, f: t["k8s/monitoring/mon-loki"]["configMapGenerator"][0]["files"].append("limits.yaml"))
    yield "a dashboard in no generator", broken(
        lambda t, f: f.add("k8s/monitoring/mon-grafana/dashboards/capacity.json"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self-test", action="store_true")
    parser.add_argument("--skip-probes", action="store_true")
    args = parser.parse_args()

    bindir = ROOT / "target" / "debug"
    graph = yaml.safe_load((ROOT / "mesh" / "call-graph.yaml").read_text())
    versions = read_env_file(ROOT / "mesh" / "versions.env")
    binaries = dockerfile_binaries()
    missing = workspace_binaries() - binaries
    tree, files = kustomization_tree()
    generated = Problems()
    check_generators(tree, files, generated)
    if generated:
        # kustomize would fail, or render a cluster without some of the files.
        for p in generated:
            print(f"FAIL {p}")
        sys.exit(1)
    rendered = render()
    print(f"rendered {', '.join(f'{k} ({len(v)} objects)' for k, v in rendered.items() if k != LINKERD_VALUES)}")

    problems = run_checks(rendered, graph, versions, binaries, bindir, not args.skip_probes)
    check_vendored_schemas(problems)
    for b in sorted(missing):
        problems.add("images", f"the Dockerfile does not build the workspace binary {b}")
    for p in problems:
        print(f"FAIL {p}")
    edges = declared_edges(graph)
    if not problems:
        print(f"ok: {len(edges)} edges in the call graph, all authorized and nothing else")

    failed_self_test = []
    if args.self_test:
        for what, check, copy_ in mutations(rendered):
            # A probe mutation restarts only the binary it breaks.
            only = re.search(r"app-\w+", what).group(0) if check == "probes" else None
            found = run_checks(copy_, graph, versions, binaries, bindir, check == "probes", only, check == "schema")
            caught = [p for p in found if f"[{check}]" in p and p not in problems]
            if caught:
                print(f"self-test ok: {what} -> {caught[0]}")
            else:
                failed_self_test.append(what)
                print(f"self-test FAIL: {what} went unnoticed by the {check} check")
        for what, (tree_, files_) in tree_mutations(tree, files):
            found = Problems()
            check_generators(tree_, files_, found)
            if found:
                print(f"self-test ok: {what} -> {found[0]}")
            else:
                failed_self_test.append(what)
                print(f"self-test FAIL: {what} went unnoticed by the generators check")
    if problems or failed_self_test:
        sys.exit(1)


if __name__ == "__main__":
    main()
