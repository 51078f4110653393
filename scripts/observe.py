#!/usr/bin/env python3
"""The monitoring half of ticketmesh, locally, with the files the cluster uses.

  observe.py run     (make observe) Prometheus, Alertmanager and the blackbox
                     exporter, plus the signed webhook canary, against the
                     stack `make run` started; prints their URLs; Ctrl-C stops.
  observe.py check   (make observability, part of make test) every file
                     checked for real:
    1. promtool check config/rules, promtool test rules (and that each alert
       has a case where it fires and one where it stays quiet), amtool
       check-config and routing, the blackbox modules, the dashboards' static
       checks, every runbook link;
    2. live: the four services on PostgreSQL, Redis, RabbitMQ and SNS
       (LocalStack), the canary, a real Prometheus, Alertmanager and blackbox
       exporter with the project's rules; signed traffic; then every PromQL
       expression of the rules and dashboards against that Prometheus: each
       must parse, each over app metrics must return data (those over
       Linkerd's proxy metrics exist only in the cluster: parse only);
    3. an induced failure: the notifier killed under traffic must make the
       real Prometheus fire ServiceDown and OutboxBacklogGrowing (with the
       alert rules regenerated with short `for:`), and Alertmanager receive
       them; inhibition checked in Alertmanager.

Needs prometheus, promtool, prometheus-alertmanager, amtool and
prometheus-blackbox-exporter (apt-get install -y prometheus
prometheus-alertmanager prometheus-blackbox-exporter), pyyaml, and for the
check the built debug binaries and PostgreSQL/Redis/RabbitMQ/LocalStack.
"""

import argparse
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the stack starter `make bench` uses)
import breakit  # noqa: E402  (the scenarios `make break` switches on)
import dashboards  # noqa: E402
import topology  # noqa: E402  (make run's ports)

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "k8s" / "monitoring"
RULES = [MON / "mon-prometheus" / "rules" / "recording.yml", MON / "mon-prometheus" / "rules" / "alerts.yml"]
ALERTS = RULES[1]
RULE_TESTS = sorted((MON / "mon-prometheus" / "tests").glob("*.yml"))
ALERTMANAGER = MON / "mon-alertmanager" / "alertmanager.yml"
BLACKBOX = MON / "mon-blackbox" / "blackbox.yml"
CLUSTER_PROMETHEUS = MON / "mon-prometheus" / "prometheus.yml"
RUNBOOKS = MON / "RUNBOOKS.md"
TOOLS = {
    "prometheus": "prometheus", "promtool": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager", "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
}
# Metric families only Linkerd's proxies export: their queries can run in the
# cluster only, and are checked here for parse errors.
LINKERD_ONLY = re.compile(r"\b(response_total|request_total|response_latency_ms\w*|route_\w+|outbound_\w+|inbound_\w+|"
                          r"tcp_\w+|identity_\w+|control_\w+)\b|job=\"linkerd-proxy\"")


def need_tools():
    missing = sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        raise SystemExit(f"missing: apt-get install -y {' '.join(missing)}")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def http(url, data=None, timeout=5):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


# ---------------------------------------------------------------- configs


def local_prometheus(apps, grpc, canary, blackbox, alertmanager, rule_files, interval="5s"):
    """The local counterpart of the cluster's scrape config: the same jobs and
    target labels, static targets. `apps` maps each service to the host:port
    of its /metrics, `grpc` each gRPC service to its gRPC port."""
    probe_relabel = [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": blackbox},
    ]
    gateway = apps["app-gateway"]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(f) for f in rule_files],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [
            {"job_name": "ticketmesh-apps",
             "static_configs": [{"targets": [addr], "labels": {"service": name}} for name, addr in apps.items()]},
            {"job_name": "ticketmesh-canary",
             "static_configs": [{"targets": [canary], "labels": {"service": "app-simulator"}}]},
            {"job_name": "blackbox-http", "metrics_path": "/probe", "params": {"module": ["http_2xx"]},
             "static_configs": [{"targets": [f"http://{gateway}/health", f"http://{gateway}/"],
                                 "labels": {"service": "app-gateway"}}],
             "relabel_configs": probe_relabel},
            {"job_name": "blackbox-grpc", "metrics_path": "/probe",
             "static_configs": [{"targets": [addr], "labels": {"service": name,
                                                              "__param_module": f"grpc_{name.removeprefix('app-')}"}}
                                for name, addr in grpc.items()],
             "relabel_configs": probe_relabel},
        ],
    }


def short_for_rules(directory, for_="3s"):
    """alerts.yml with every `for:` shortened, written to `directory`: the
    induced-failure test must not wait 5 minutes. Generated from the real
    file, so the expressions, labels and annotations are the shipped ones."""
    doc = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    path = Path(directory) / "alerts.short-for.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Daemon:
    """A background process whose output goes to a file, stopped with SIGTERM."""

    def __init__(self, name, cmd, logdir):
        self.name = name
        self.log = open(Path(logdir) / f"{name}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def start_monitoring(workdir, apps, grpc, canary, rule_files, interval, ports=None):
    """Prometheus, Alertmanager and the blackbox exporter on `ports` (free
    ones by default); returns (daemons, urls)."""
    ports = ports or {k: bench.free_port() for k in ("prometheus", "alertmanager", "alertmanager_cluster", "blackbox")}
    urls = {k: f"http://127.0.0.1:{ports[k]}" for k in ("prometheus", "alertmanager", "blackbox")}
    config = local_prometheus(apps, grpc, canary, f"127.0.0.1:{ports['blackbox']}",
                              f"127.0.0.1:{ports['alertmanager']}", rule_files, interval)
    config_path = Path(workdir) / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    checked = run(["promtool", "check", "config", str(config_path)])
    if checked.returncode != 0:
        raise SystemExit(f"the local Prometheus config is invalid:\n{checked.stdout}{checked.stderr}")
    daemons = [
        Daemon("blackbox", ["prometheus-blackbox-exporter", f"--config.file={BLACKBOX}",
                            f"--web.listen-address=127.0.0.1:{ports['blackbox']}"], workdir),
        Daemon("alertmanager", ["prometheus-alertmanager", f"--config.file={ALERTMANAGER}",
                                f"--storage.path={workdir}/alertmanager",
                                f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
                                f"--cluster.listen-address=127.0.0.1:{ports['alertmanager_cluster']}"], workdir),
        Daemon("prometheus", ["prometheus", f"--config.file={config_path}", f"--storage.tsdb.path={workdir}/tsdb",
                              f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], workdir),
    ]
    deadline = time.monotonic() + 30
    for name, path in (("prometheus", "/-/ready"), ("alertmanager", "/-/ready"), ("blackbox", "/-/healthy")):
        while http(urls[name] + path)[0] != 200:
            if time.monotonic() > deadline or any(d.proc.poll() is not None for d in daemons):
                for d in daemons:
                    d.stop()
                raise SystemExit(f"{name} did not start; its log is in {workdir}/{name}.log")
            time.sleep(0.2)
    return daemons, urls


def query(prometheus, expr):
    """(ok, result list or error text) of an instant query."""
    status, body = http(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}), timeout=30)
    if status != 200:
        try:
            return False, json.loads(body).get("error", body)
        except ValueError:
            return False, body
    return True, json.loads(body)["data"]["result"]


# ---------------------------------------------------------------- static


def static_checks():
    """Problems found without running anything but the Prometheus tools."""
    problems = []

    def tool(cmd, what):
        out = run(cmd)
        if out.returncode != 0:
            problems.append(f"{what}:\n{out.stdout}{out.stderr}")
        return out

    for f in RULES:
        tool(["promtool", "check", "rules", str(f)], f"promtool check rules {f.name}")
    for f in RULE_TESTS:
        tool(["promtool", "test", "rules", str(f)], f"promtool test rules {f.name}")
    if CLUSTER_PROMETHEUS.exists():
        # The cluster config names its rule files by their mounted path: check
        # it with those names pointing here. Debian's Prometheus is built
        # without Kubernetes service discovery, so each kubernetes_sd_configs
        # becomes a static target; everything else (relabelling, jobs,
        # alerting) is checked as it is.
        with tempfile.TemporaryDirectory() as d:
            config = yaml.safe_load(CLUSTER_PROMETHEUS.read_text())
            config["rule_files"] = [str(f) for f in RULES]
            for job in config.get("scrape_configs", []):
                if job.pop("kubernetes_sd_configs", None) is not None:
                    job["static_configs"] = [{"targets": ["kubernetes-sd.invalid:9090"]}]
            path = Path(d) / "prometheus.yml"
            path.write_text(yaml.safe_dump(config))
            tool(["promtool", "check", "config", str(path)], "promtool check config (the cluster's prometheus.yml)")
    else:
        problems.append(f"{CLUSTER_PROMETHEUS.relative_to(ROOT)} is missing")
    tool(["amtool", "check-config", str(ALERTMANAGER)], "amtool check-config")
    tool(["prometheus-blackbox-exporter", f"--config.file={BLACKBOX}", "--config.check"], "blackbox modules")

    # Routing: severity picks the receiver.
    for labels, receiver in ((["severity=critical", "alertname=ServiceDown"], "page"),
                             (["severity=warning", "alertname=HighLatencyP99"], "ticket"),
                             (["alertname=Unlabelled"], "ticket")):
        out = run(["amtool", "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels])
        if out.stdout.strip() != receiver:
            problems.append(f"alertmanager routes {labels} to {out.stdout.strip()!r}, not {receiver!r}")

    # Every alert: severity, summary, a runbook section that exists.
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^## (.+)$", RUNBOOKS.read_text(), re.M)}
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
                problems.append(f"{name}: severity must be critical or warning")
            notes = rule.get("annotations", {})
            for key in ("summary", "description", "runbook"):
                if not notes.get(key):
                    problems.append(f"{name}: no {key} annotation")
            runbook = notes.get("runbook", "")
            if runbook.split("#")[0] != str(RUNBOOKS.relative_to(ROOT)) or runbook.split("#")[-1] not in anchors:
                problems.append(f"{name}: runbook {runbook!r} is not a section of {RUNBOOKS.relative_to(ROOT)}")

    problems += alert_test_coverage()
    found = dashboards.problems(ROOT)
    problems += found or dashboards.self_test(ROOT)
    return problems


def alert_test_coverage():
    """Each alert has a test where it fires (removing the alert fails the
    tests) and one where it must stay quiet (an alert that always fires fails
    them too)."""
    problems = []
    doc = yaml.safe_load(ALERTS.read_text())
    names = [(g, i) for g, group in enumerate(doc["groups"]) for i in range(len(group["rules"]))]
    with tempfile.TemporaryDirectory() as d:
        rules_dir, tests_dir = Path(d) / "rules", Path(d) / "tests"
        rules_dir.mkdir()
        tests_dir.mkdir()
        shutil.copy(RULES[0], rules_dir / RULES[0].name)
        for t in RULE_TESTS:
            shutil.copy(t, tests_dir / t.name)
        for g, i in names:
            rule = doc["groups"][g]["rules"][i]
            for mutation, change in (("removed", None), ("always firing", "always")):
                broken = copy.deepcopy(doc)
                if change is None:
                    del broken["groups"][g]["rules"][i]
                else:
                    target = broken["groups"][g]["rules"][i]
                    target["expr"] = f"({rule['expr']}) or on() vector(1)"
                    target.pop("for", None)
                (rules_dir / ALERTS.name).write_text(yaml.safe_dump(broken, sort_keys=False))
                failed = any(run(["promtool", "test", "rules", str(tests_dir / t.name)]).returncode != 0
                             for t in RULE_TESTS)
                if not failed:
                    problems.append(f"{rule['alert']}: the rule tests still pass with the alert {mutation}")
    return problems


# ---------------------------------------------------------------- live


def expressions():
    """Every PromQL expression shipped: (where, expr)."""
    found = []
    for f in RULES:
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                found.append((f"{f.name}: {rule.get('record') or rule.get('alert')}", rule["expr"]))
    for q in dashboards.queries(ROOT):
        if q["datasource_type"] == "prometheus":
            found.append((f"{q['dashboard']}: {q['panel']}", q["expr"]))
    return found


def selectors(expr):
    """The series selectors of an expression (name{matchers}, and recorded
    series names), for checking that an alert's inputs exist."""
    found = [m.group(0) for m in re.finditer(r"\b[a-zA-Z_:][\w:]*\{[^}]*\}", expr)]
    bare = re.sub(r"\{[^}]*\}|\"[^\"]*\"|\[[^\]]*\]", " ", expr)
    found += sorted(set(re.findall(r"\b[a-z_]+:[\w:]+\b", bare)))
    return found


def check_live(prometheus, problems):
    checked = {"data": 0, "parse only": 0}
    for where, expr in expressions():
        ok, result = query(prometheus, expr)
        if not ok:
            problems.append(f"{where}: does not parse or run: {result}")
            continue
        if LINKERD_ONLY.search(expr):
            checked["parse only"] += 1
            continue
        checked["data"] += 1
        if where.startswith("alerts.yml"):
            # An alert's expression is empty while it should not fire; its
            # inputs must exist all the same.
            for selector in selectors(expr):
                ok, series = query(prometheus, f"count({selector})")
                if not ok or not series:
                    problems.append(f"{where}: no series for {selector}")
        elif not result:
            problems.append(f"{where}: no data for {expr}")
    return checked


def wait_for(what, predicate, timeout, every=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(what)


def alert_state(prometheus, name, **labels):
    status, body = http(f"{prometheus}/api/v1/alerts")
    if status != 200:
        return None
    for alert in json.loads(body)["data"]["alerts"]:
        if alert["labels"].get("alertname") == name and all(alert["labels"].get(k) == v for k, v in labels.items()):
            return alert["state"]
    return None


def simulator(base, *args):
    return subprocess.Popen([str(ROOT / "target" / "debug" / "app-simulator"), "--url", base, "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def drive_traffic(stack, seconds):
    """Signed webhooks (a tenth forged, some replays), hello calls, reads and
    an SSE client, for about `seconds`."""
    load = simulator(stack.base, "--rate", "40", "--duration", f"{seconds}s", "--concurrency", "16",
                     "--bad-signature-ratio", "0.1", "--replay-ratio", "0.05")
    try:
        with urllib.request.urlopen(stack.base + "/events", timeout=3) as events:
            events.readline()
    except OSError:
        pass
    for _ in range(10):
        for path in ("/", "/api/stats", "/api/tickets?page_size=5", "/health", "/ready"):
            http(stack.base + path)
        time.sleep(seconds / 10)
    out, _ = load.communicate(timeout=seconds + 60)
    return json.loads(out)


def inhibition(alertmanager, problems):
    """ServiceDown inhibits the same service's latency alert, not another's."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    alerts = [
        {"labels": {"alertname": "ServiceDown", "service": "app-storage", "severity": "critical"}, "startsAt": now},
        {"labels": {"alertname": "HighLatencyP99", "service": "app-storage", "severity": "warning"}, "startsAt": now},
        {"labels": {"alertname": "HighLatencyP99", "service": "app-event", "severity": "warning"}, "startsAt": now},
    ]
    status, body = http(f"{alertmanager}/api/v2/alerts", json.dumps(alerts).encode())
    if status != 200:
        problems.append(f"Alertmanager refused test alerts: {status} {body}")
        return

    def states():
        status, body = http(f"{alertmanager}/api/v2/alerts?filter=alertname%3D%22HighLatencyP99%22")
        got = {a["labels"]["service"]: bool(a["status"]["inhibitedBy"]) for a in json.loads(body)} if status == 200 else {}
        return got if len(got) == 2 and got["app-storage"] else None

    try:
        got = wait_for("inhibition", states, 15, 0.5)
    except TimeoutError:
        problems.append("ServiceDown{service=app-storage} did not inhibit HighLatencyP99{service=app-storage}")
        return
    if got["app-event"]:
        problems.append("ServiceDown{service=app-storage} inhibited app-event's latency alert too")


def break_scenarios(stack, prometheus, problems):
    """`make break` against the real Prometheus with the short-`for` rules:
    forged-webhooks fires WebhookSignatureFailuresSpike, broker-down fires
    OutboxBacklogGrowing; after the heal the backlog drains."""
    def scenario(name, alert, seconds=20):
        if alert_state(prometheus, alert) is not None:
            problems.append(f"{alert} was already {alert_state(prometheus, alert)} before {name}")
            return
        print(f"break it: {name}…", flush=True)
        breakit.apply(stack.fault_admin, name)
        load = threading.Thread(target=breakit.drive, args=(stack.base, name, seconds, False))
        load.start()
        try:
            state = wait_for(alert, lambda: alert_state(prometheus, alert) in ("pending", "firing")
                             and alert_state(prometheus, alert), seconds + 10, 0.5)
            print(f"  {alert} {state} in the real Prometheus", flush=True)
        except TimeoutError:
            problems.append(f"{name}: {alert} neither pending nor firing (state: {alert_state(prometheus, alert)})")
        load.join()
        breakit.heal(stack.fault_admin)

    # A few scrapes of every target first: the rules' rates need a baseline.
    def scraped():
        ok, result = query(prometheus, "min(count_over_time(up[10s]))")
        return ok and result and float(result[0]["value"][1]) >= 3

    wait_for("the fresh Prometheus scraping", scraped, 30)
    scenario("forged-webhooks", "WebhookSignatureFailuresSpike", 15)
    scenario("broker-down", "OutboxBacklogGrowing")
    drained = stack.drain_outbox(timeout=120)
    print(f"  healed: the outbox drained {drained:.1f} s later", flush=True)


def live_check(problems):
    for name in bench.SERVICES + ["app-simulator"]:
        if not (ROOT / "target" / "debug" / name).exists():
            raise SystemExit(f"target/debug/{name} is missing: cargo build --bins")
    sns = os.environ.get("TEST_SNS_ENDPOINT", "http://127.0.0.1:4566")
    if http(f"{sns}/_localstack/health")[0] != 200:
        raise SystemExit(f"no SNS emulator at {sns}: make localstack")
    stamp = f"{time.strftime('%Y%m%d%H%M%S')}{os.getpid()}"
    database = f"tm_observe_{stamp}"
    bench.psql(f"CREATE DATABASE {database}")
    workdir = tempfile.mkdtemp(prefix="tm-observe-")
    stack, daemons, canary = None, [], None
    try:
        pg_base = bench.PG_ADMIN.rsplit("/", 1)[0]
        print("starting the four services on PostgreSQL, Redis, RabbitMQ and SNS…", flush=True)
        stack = bench.Stack("observe", {
            "DATABASE_URL": f"{pg_base}/{database}", "REDIS_URL": bench.REDIS, "CACHE_PREFIX": f"obs{stamp}",
            "AMQP_URL": bench.AMQP, "AMQP_EXCHANGE": f"observe.{stamp}", "SNS_ENDPOINT_URL": sns,
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
            "RUST_LOG": "info",
        }, bindir=ROOT / "target" / "debug")
        canary_addr = f"127.0.0.1:{bench.free_port()}"
        canary = subprocess.Popen([str(ROOT / "target" / "debug" / "app-simulator"), "--url", stack.base, "--canary",
                                   "--interval", "1s", "--metrics-addr", canary_addr],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        apps = {name: url.removeprefix("http://") for name, url in stack.admin.items()}
        grpc = stack.grpc
        rules = [RULES[0], short_for_rules(workdir)]
        daemons, urls = start_monitoring(workdir, apps, grpc, canary_addr, rules, "1s")
        print(f"Prometheus {urls['prometheus']}, Alertmanager {urls['alertmanager']}; driving traffic for 20 s…",
              flush=True)
        report = drive_traffic(stack, 20)
        print(f"  sent {report['sent']}: {report['accepted']} accepted, {report['duplicates']} duplicates, "
              f"rejected {report['rejected']}", flush=True)

        def all_up():
            ok, result = query(urls["prometheus"], "up")
            return ok and len(result) >= 8 and all(r["value"][1] == "1" for r in result)

        try:
            wait_for("every target up", all_up, 30)
        except TimeoutError:
            problems.append(f"not every target is up: {query(urls['prometheus'], 'up == 0')[1]}")
        # Rules and rate() windows need a few evaluations and scrapes over the
        # traffic: asked again (up to 30 s) while some expression has no data.
        deadline = time.monotonic() + 30
        while True:
            found = []
            checked = check_live(urls["prometheus"], found)
            if not found or time.monotonic() > deadline:
                break
            time.sleep(2)
        problems.extend(found)
        print(f"  {checked['data']} expressions returned data; {checked['parse only']} over Linkerd metrics parsed",
              flush=True)

        print("induced failure: the notifier killed under traffic…", flush=True)
        load = simulator(stack.base, "--rate", "80", "--duration", "40s", "--concurrency", "32")
        time.sleep(2)
        stack.kill("app-notifier")
        for name, labels in (("ServiceDown", {"service": "app-notifier"}), ("OutboxBacklogGrowing", {})):
            try:
                state = wait_for(name, lambda: alert_state(urls["prometheus"], name, **labels) == "firing" and "firing",
                                 40, 0.5)
                print(f"  {name} {state} in the real Prometheus", flush=True)
            except TimeoutError:
                problems.append(f"{name} did not fire with the notifier down "
                                f"(state: {alert_state(urls['prometheus'], name, **labels)})")

        def in_alertmanager():
            status, body = http(f"{urls['alertmanager']}/api/v2/alerts?filter=alertname%3D%22OutboxBacklogGrowing%22")
            return status == 200 and json.loads(body)

        try:
            wait_for("the alert in Alertmanager", in_alertmanager, 20, 0.5)
            print("  Alertmanager received OutboxBacklogGrowing", flush=True)
        except TimeoutError:
            problems.append("Alertmanager never received OutboxBacklogGrowing")
        stack.restart("app-notifier")
        load.communicate(timeout=120)
        drained = stack.drain_outbox(timeout=120)
        print(f"  notifier restarted; the outbox drained {drained:.1f} s after the load ended", flush=True)
        inhibition(urls["alertmanager"], problems)
        for d in daemons:
            d.stop()
        # A fresh Prometheus for the break scenarios: the traffic above had
        # forged webhooks in it, which must not count as the scenario's.
        (Path(workdir) / "break").mkdir()
        daemons, urls = start_monitoring(Path(workdir) / "break", apps, grpc, canary_addr, rules, "1s")
        break_scenarios(stack, urls["prometheus"], problems)
    finally:
        if canary:
            canary.terminate()
            canary.wait()
        for d in daemons:
            d.stop()
        if stack:
            stack.stop()
        bench.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if problems:
            print(f"(logs of Prometheus, Alertmanager and the exporter are kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def check():
    need_tools()
    started = time.monotonic()
    problems = static_checks()
    print(f"static checks: {'ok' if not problems else f'{len(problems)} problems'} "
          f"({len(RULE_TESTS)} rule test files, {len(expressions())} PromQL expressions)", flush=True)
    live_check(problems)
    for p in problems:
        print(f"FAIL {p}")
    print(f"observability check {'failed' if problems else 'ok'} in {time.monotonic() - started:.0f} s")
    sys.exit(1 if problems else 0)


# ---------------------------------------------------------------- make observe


# `make run`'s ports, as bench.Stack's `admin` and `grpc` give a stack's.
LOCAL_APPS = {service: f"127.0.0.1:{topology.metrics_port(ports)}" for service, ports in topology.PORTS.items()}
LOCAL_GRPC = {service: f"127.0.0.1:{ports['grpc']}" for service, ports in topology.PORTS.items() if "grpc" in ports}


def observe():
    need_tools()
    gateway = "http://" + LOCAL_APPS["app-gateway"]
    if http(gateway + "/health")[0] != 200:
        raise SystemExit(f"no gateway at {gateway}: start the services first with `make run` (in another terminal)")
    simulator_bin = ROOT / "target" / "debug" / "app-simulator"
    if not simulator_bin.exists():
        raise SystemExit("target/debug/app-simulator is missing: cargo build --bins")
    workdir = ROOT / "data" / "observe"
    workdir.mkdir(parents=True, exist_ok=True)
    canary_addr = "127.0.0.1:9004"
    canary = subprocess.Popen([str(simulator_bin), "--url", gateway, "--canary", "--interval", "10s",
                               "--metrics-addr", canary_addr],
                              stdout=open(workdir / "canary.log", "w"), stderr=subprocess.STDOUT)
    ports = {"prometheus": 9090, "alertmanager": 9093, "alertmanager_cluster": 9094, "blackbox": 9115}
    busy = [f"{k} {p}" for k, p in ports.items() if http(f"http://127.0.0.1:{p}/")[0] is not None]
    if busy:
        raise SystemExit(f"ports in use: {', '.join(busy)} (is `make observe` already running?)")
    daemons, urls = start_monitoring(workdir, LOCAL_APPS, LOCAL_GRPC, canary_addr, RULES, "5s", ports)
    print(f"""
Prometheus    {urls['prometheus']}   (alerts: {urls['prometheus']}/alerts, targets: {urls['prometheus']}/targets)
Alertmanager  {urls['alertmanager']}
Blackbox      {urls['blackbox']}
Canary        http://{canary_addr}/metrics (one signed webhook every 10 s)
Rules: {', '.join(str(f.relative_to(ROOT)) for f in RULES)}; logs in {workdir.relative_to(ROOT)}/.
Traffic: make simulate ARGS="--rate 20 --duration 5m --bad-signature-ratio 0.05". Ctrl-C stops.""", flush=True)
    try:
        while all(d.proc.poll() is None for d in daemons) and canary.poll() is None:
            time.sleep(1)
        print("a monitoring process exited; see its log")
    except KeyboardInterrupt:
        print("\nstopping…")
    finally:
        canary.terminate()
        for d in daemons:
            d.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "check", "static"])
    args = parser.parse_args()
    if args.command == "run":
        observe()
    elif args.command == "static":
        need_tools()
        problems = static_checks()
        for p in problems:
            print(f"FAIL {p}")
        print("static checks ok" if not problems else f"{len(problems)} problems")
        sys.exit(1 if problems else 0)
    else:
        check()


if __name__ == "__main__":
    main()
