#!/usr/bin/env python3
"""Offline checks of the cluster files (k8s/, mesh/, kind-config.yaml, Dockerfile).

Renders every kustomization with `kubectl kustomize`, validates each object
strictly (unknown fields rejected) against the Kubernetes 1.35 schemas and the
Linkerd / Gateway API schemas in mesh/schemas/, then holds the files to the
system's own rules: policies point at real Servers and ports, the authorized
edges are exactly mesh/call-graph.yaml, only idempotent calls are retried,
every env var is a flag of its binary, every probe is one the binary answers
(each binary is started with its Deployment's environment and probed), every
image is one the Dockerfile builds, and nothing runs as root.

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
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
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
# Kinds validated against mesh/schemas/ rather than the Kubernetes schemas.
CRD_GROUPS = ("policy.linkerd.io", "gateway.networking.k8s.io")
WORKLOAD_KINDS = ("Deployment", "StatefulSet")


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
    """{name: objects} for every overlay and for mesh/."""
    rendered = {}
    for overlay in sorted((ROOT / "k8s" / "overlays").iterdir()):
        if (overlay / "kustomization.yaml").exists():
            rendered[f"k8s/overlays/{overlay.name}"] = kustomize(overlay)
    rendered["k8s/base"] = kustomize(ROOT / "k8s" / "base")
    rendered["mesh"] = kustomize(ROOT / "mesh")
    return rendered


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


def route_methods(route):
    """The gRPC methods a GRPCRoute matches, as `Service/Method` or `Service/*`;
    None for a rule without matches (every method)."""
    methods = set()
    for rule in route["spec"].get("rules", []):
        matches = rule.get("matches")
        if not matches:
            return None
        for m in matches:
            method = m.get("method", {})
            methods.add(f"{method.get('service', '*')}/{method.get('method', '*')}")
    return methods


# ---------------------------------------------------------------- the policy


def authorized_edges(k8s, mesh, problems):
    """(client, workload, port, methods, ) for every AuthorizationPolicy, and the
    same for network-authenticated (public) ones with client None."""
    edges = set()
    for policy in by_kind(mesh, "AuthorizationPolicy"):
        name = policy["metadata"]["name"]
        target = policy["spec"]["targetRef"]
        if target["kind"] == "Server":
            server = named(mesh, "Server", target["name"])
            methods = None
        elif target["kind"] == "GRPCRoute":
            route = named(mesh, "GRPCRoute", target["name"])
            if route is None:
                problems.add("policy", f"AuthorizationPolicy {name} targets a missing GRPCRoute {target['name']}")
                continue
            parents = [p for p in route["spec"]["parentRefs"] if p.get("kind") == "Server"]
            if len(parents) != 1:
                problems.add("policy", f"GRPCRoute {route['metadata']['name']} must have exactly one Server parent")
                continue
            server = named(mesh, "Server", parents[0]["name"])
            methods = route_methods(route)
            if server is None:
                problems.add("policy", f"GRPCRoute {target['name']} has a missing Server parent {parents[0]['name']}")
                continue
        else:
            problems.add("policy", f"AuthorizationPolicy {name} targets a {target['kind']}, not a Server or GRPCRoute")
            continue
        if server is None:
            problems.add("policy", f"AuthorizationPolicy {name} targets a missing Server {target['name']}")
            continue
        pods = selected(k8s, server["spec"]["podSelector"].get("matchLabels", {}))
        workload = app_name(pods[0]) if len(pods) == 1 else None
        if workload is None:
            problems.add("policy", f"Server {server['metadata']['name']} selects {len(pods)} workloads, not one")
            continue
        port = server["spec"]["port"]
        method_key = tuple(sorted(methods)) if methods is not None else None
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
                    edges.add((identity(ident), workload, port, method_key))
                for ident in authn["spec"].get("identities", []):
                    problems.add("policy", f"MeshTLSAuthentication {ref['name']}: raw identity {ident!r}; use identityRefs")
            elif ref["kind"] == "NetworkAuthentication":
                edges.add((None, workload, port, method_key))
            else:
                problems.add("policy", f"AuthorizationPolicy {name}: unexpected authentication kind {ref['kind']}")
    return edges


def declared_edges(graph):
    edges = set()
    for call in graph.get("calls", []):
        methods = call.get("methods")
        edges.add((call["from"], call["to"], call["port"], tuple(sorted(methods)) if methods else None))
    for entry in graph.get("public", []):
        methods = entry.get("methods")
        edges.add((None, entry["to"], entry["port"], tuple(sorted(methods)) if methods else None))
    return edges


def show(edge):
    client, workload, port, methods = edge
    who = client or "anyone"
    what = f" {', '.join(methods)}" if methods else ""
    return f"{who} -> {workload}:{port}{what}"


def check_policy(k8s, mesh, graph, problems):
    # Servers: a named port that exists on the pods they select, declared on a Service.
    services = by_kind(k8s, "Service")
    for server in by_kind(mesh, "Server"):
        name = server["metadata"]["name"]
        pods = selected(k8s, server["spec"]["podSelector"].get("matchLabels", {}))
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
    for route in by_kind(mesh, "GRPCRoute"):
        for parent in route["spec"]["parentRefs"]:
            if parent.get("kind") == "Server" and named(mesh, "Server", parent["name"]) is None:
                problems.add("policy", f"GRPCRoute {route['metadata']['name']}: no Server {parent['name']}")
            if parent.get("kind") == "Service":
                service = named(k8s, "Service", parent["name"])
                if service is None or parent.get("port") not in [p["port"] for p in service["spec"]["ports"]]:
                    problems.add("routes", f"GRPCRoute {route['metadata']['name']}: no Service port {parent['name']}:{parent.get('port')}")
    actual = authorized_edges(k8s, mesh, problems)
    declared = declared_edges(graph)
    for edge in sorted(actual - declared, key=show):
        problems.add("call-graph", f"authorized but not in mesh/call-graph.yaml: {show(edge)}")
    for edge in sorted(declared - actual, key=show):
        problems.add("call-graph", f"in mesh/call-graph.yaml but not authorized: {show(edge)}")


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


def check_namespace(k8s, problems):
    ns = named(k8s, "Namespace", NAMESPACE)
    if ns is None:
        problems.add("namespace", f"no Namespace {NAMESPACE}")
        return
    annotations = ns["metadata"].get("annotations", {})
    if annotations.get("linkerd.io/inject") != "enabled":
        problems.add("namespace", f"{NAMESPACE} is not annotated linkerd.io/inject: enabled")
    if annotations.get("config.linkerd.io/default-inbound-policy") != "deny":
        problems.add("namespace", f"{NAMESPACE}'s default inbound policy is not deny")
    for obj in k8s:
        if obj["kind"] != "Namespace" and obj["metadata"].get("namespace") != NAMESPACE:
            problems.add("namespace", f"{obj['kind']}/{obj['metadata']['name']} is not in {NAMESPACE}")


# ---------------------------------------------------------------- workloads


def effective(pod_sc, c_sc, key):
    return c_sc.get(key, pod_sc.get(key))


def check_security(k8s, problems):
    for w in workloads(k8s):
        spec = w["spec"]["template"]["spec"]
        pod_sc = spec.get("securityContext", {})
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
            resources = c.get("resources", {})
            if "memory" not in resources.get("requests", {}) or "memory" not in resources.get("limits", {}):
                problems.add("resources", f"{who} has no memory request and limit")


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
    for service in by_kind(k8s, "Service"):
        for p in service["spec"]["ports"]:
            if "nodePort" in p and p["nodePort"] not in mapped:
                problems.add("kind", f"node port {p['nodePort']} of {service['metadata']['name']} is not mapped to the host")


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


# ---------------------------------------------------------------- main


def run_checks(rendered, graph, versions, binaries, bindir, probes, only=None, schemas=True):
    problems = Problems()
    for name, objects in rendered.items():
        if schemas:
            check_schemas(objects, problems)
    mesh = rendered["mesh"]
    for name, k8s in rendered.items():
        if name == "mesh":
            continue
        local = Problems()
        check_namespace(k8s, local)
        check_services(k8s, local)
        check_security(k8s, local)
        check_images(k8s, binaries, local)
        check_policy(k8s, mesh, graph, local)
        if name.startswith("k8s/overlays/"):
            check_kind(k8s, versions, local)
        problems.extend(f"{name}: {p}" for p in local)
    k8s = rendered["k8s/overlays/kind"]
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
    yield "a Server on a port the pods do not have", "policy", broken(
        lambda r: find(r, "mesh", "Server", "app-event-admin")["spec"].__setitem__("port", "metrics"))
    yield "a policy on a missing Server", "policy", broken(
        lambda r: find(r, "mesh", "AuthorizationPolicy", "infra-redis")["spec"]["targetRef"].__setitem__("name", "infra-redis-typo"))
    yield "retries on a write", "routes", broken(
        lambda r: find(r, "mesh", "GRPCRoute", "app-storage-writes-outbound")["metadata"]["annotations"].__setitem__(
            "retry.linkerd.io/grpc", "unavailable"))
    yield "no catch-all route", "routes", broken(
        lambda r: r["mesh"].remove(find(r, "mesh", "GRPCRoute", "app-event-other-outbound")))
    yield "a container running as root", "security", broken(
        lambda r: deployment(r, "infra-redis")["securityContext"].__setitem__("runAsUser", 0))
    yield "a writable root filesystem", "security", broken(
        lambda r: deployment(r, "app-gateway")["containers"][0]["securityContext"].__setitem__("readOnlyRootFilesystem", False))
    yield "an env var the binary does not read", "env", broken(
        lambda r: deployment(r, "app-storage")["containers"][0]["env"].append({"name": "STORAGE_PORT", "value": "1"}))
    yield "an image the Dockerfile does not build", "images", broken(
        lambda r: deployment(r, "app-event")["containers"][0].__setitem__("image", "ticketmesh/app-events:dev"))
    yield "a probe on a path app-gateway does not serve", "probes", broken(
        lambda r: deployment(r, "app-gateway")["containers"][0]["livenessProbe"]["httpGet"].__setitem__("path", "/healthz"))
    yield "a gRPC probe for a service app-notifier does not serve", "probes", broken(
        lambda r: deployment(r, "app-notifier")["containers"][0]["readinessProbe"]["grpc"].__setitem__(
            "service", "ticketmesh.v1.StorageService"))
    yield "a node port kind does not map", "kind", broken(
        lambda r: find(r, kind, "Service", "app-gateway")["spec"]["ports"][0].__setitem__("nodePort", 30081))
    yield "a namespace without default-deny", "namespace", broken(
        lambda r: find(r, kind, "Namespace", "ticketmesh")["metadata"]["annotations"].pop(
            "config.linkerd.io/default-inbound-policy"))


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
    rendered = render()
    print(f"rendered {', '.join(f'{k} ({len(v)} objects)' for k, v in rendered.items())}")

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
    if problems or failed_self_test:
        sys.exit(1)


if __name__ == "__main__":
    main()
