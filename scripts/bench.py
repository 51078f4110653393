#!/usr/bin/env python3
"""make bench: the four release binaries on real PostgreSQL, Redis and RabbitMQ,
then once on the embedded defaults; time from start to all-ready, a warm-up,
then the webhook path (app-simulator, fresh signed deliveries), the hello path
(SNS disabled), a read (/api/stats) and the gateway's own /health (wrk), and
each process's peak RSS. Prints one table and writes it to BENCH.md.

On the real backends, PostgreSQL alone is measured first (pgbench: one
transaction inserting an event row and an outbox row, BENCH_CONCURRENCY
clients) and the webhook path is compared with it, and the outbox relay's drain is
measured (WEBHOOKS deliveries accepted while app-notifier is down, then
published once it is back). Two hostile-traffic checks
follow: overload (open loop
at 3× the webhook capacity just measured, for 30 s, then recovery) and stalled
dashboards (50 clients open GET /events and never read while 100,000 webhooks
go through; the gateway's and the notifier's RSS, and the relay's progress).
Last, reads at scale: the tickets table is seeded to BENCH_SEED_TICKETS
(default 1,000,000), then /api/stats and /api/tickets (unfiltered and by
category) are read with wrk while app-simulator writes 100 webhooks/s.

Environment: BENCH_WEBHOOKS (default 20000), BENCH_SECONDS (wrk, default 10),
BENCH_CONCURRENCY (default 32), BENCH_OVERLOAD_SECONDS (default 30),
BENCH_STALLED_CLIENTS (default 50), BENCH_STALLED_WEBHOOKS (default 100000),
BENCH_SEED_TICKETS (default 1000000),
TEST_POSTGRES_URL, TEST_REDIS_URL, TEST_AMQP_URL.
"""

import datetime
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import topology

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
WEBHOOKS = int(os.environ.get("BENCH_WEBHOOKS", "20000"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "32"))
OVERLOAD_SECONDS = int(os.environ.get("BENCH_OVERLOAD_SECONDS", "30"))
STALLED_CLIENTS = int(os.environ.get("BENCH_STALLED_CLIENTS", "50"))
STALLED_WEBHOOKS = int(os.environ.get("BENCH_STALLED_WEBHOOKS", "100000"))
SEED_TICKETS = int(os.environ.get("BENCH_SEED_TICKETS", "1000000"))
READ_WRITE_RATE = 100  # webhooks/s written while the reads at scale are measured
PG_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
AMQP = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
ANALYSIS = "## What limits each path"
SERVICES = topology.STARTUP  # in the order they are started


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def psql(sql):
    subprocess.run(["psql", PG_ADMIN, "-qtAc", sql], check=True, capture_output=True)


CLK_TCK = os.sysconf("SC_CLK_TCK")
BACKENDS = {"postgres": "PostgreSQL", "beam.smp": "RabbitMQ", "redis-server": "Redis"}


def cpu_seconds(pid):
    """User + system CPU seconds a process has used (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def backend_pids():
    """The PostgreSQL, RabbitMQ and Redis processes on this machine, by name."""
    pids = {}
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = stat.read_text().strip()
        except OSError:
            continue
        if name in BACKENDS:
            pids.setdefault(BACKENDS[name], []).append(int(stat.parent.name))
    return pids


class CpuMeter:
    """CPU time per process over one measurement: the four services, the
    backends, and the load generator (children of this script), as a share of
    the wall time × cores, so the busiest one is the measured bottleneck."""

    def __init__(self, stack):
        self.stack = stack

    def sample(self):
        now = {name: cpu_seconds(proc.pid) for name, proc in self.stack.procs.items()}
        for name, pids in backend_pids().items():
            now[name] = sum(cpu_seconds(pid) for pid in pids)
        children = os.times()
        now["load generator"] = children.children_user + children.children_system
        return now

    def __enter__(self):
        self.started, self.before = time.monotonic(), self.sample()
        return self

    def __exit__(self, *exc):
        wall, after = time.monotonic() - self.started, self.sample()
        self.share = {name: 100 * (after[name] - self.before.get(name, 0.0)) / wall for name in after}
        self.idle = 100 * os.cpu_count() - sum(self.share.values())


def peak_rss_mib(pid):
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


class Stack:
    """The four release binaries, started together; `ready_ms` is how long
    until every /ready answered 200."""

    def __init__(self, name, env, bindir=BIN):
        self.name = name
        # The topology's names and wiring on free ports, so that a stack can
        # run beside `make run` or another stack.
        ports = {service: {kind: free_port() for kind in fixed} for service, fixed in topology.PORTS.items()}
        self.base = f"http://127.0.0.1:{ports['app-gateway']['http']}"
        common = {"PATH": os.environ["PATH"], "LOG_FORMAT": "json", "RUST_LOG": "warn", **env}
        self.env = {service: topology.env(service, ports) for service in SERVICES}
        self.env["app-gateway"].update(WEBHOOK_SECRET="secret", ALLOW_DEMO_SECRET="true")
        # Where each service serves /ready and /metrics.
        self.admin = {service: f"http://127.0.0.1:{topology.metrics_port(p)}" for service, p in ports.items()}
        # Where each serves /faults: its admin port.
        self.fault_admin = {service: f"http://127.0.0.1:{p['admin']}" for service, p in ports.items()}
        self.storage_metrics = self.admin["app-storage"] + "/metrics"
        self.ready_urls = [url + "/ready" for url in self.admin.values()]
        self.logs = tempfile.TemporaryFile()
        self.bindir = bindir
        self.grpc = {service: f"127.0.0.1:{p['grpc']}" for service, p in ports.items() if "grpc" in p}
        self.common = common
        self.earlier_peak = {}
        started = time.monotonic()
        self.procs = {name: self.spawn(name) for name in SERVICES}
        pending = list(self.ready_urls)
        while pending:
            pending = [u for u in pending if status(u) != 200]
            if time.monotonic() - started > 30:
                self.stop()
                raise SystemExit(f"{name}: not ready after 30 s: {pending}")
            if any(proc.poll() is not None for proc in self.procs.values()):
                self.stop()
                raise SystemExit(f"{name}: a service exited at start")
            time.sleep(0.005)
        self.ready_ms = (time.monotonic() - started) * 1000

    def spawn(self, name):
        return subprocess.Popen([str(self.bindir / name)], env={**self.common, **self.env[name]},
                                stdout=self.logs, stderr=self.logs)

    def kill(self, name):
        """SIGKILL one service, as a crash would (its peak RSS so far is kept)."""
        self.earlier_peak[name] = max(self.earlier_peak.get(name, 0.0), peak_rss_mib(self.procs[name].pid))
        self.procs[name].kill()
        self.procs[name].wait()

    def restart(self, name):
        self.procs[name] = self.spawn(name)

    def drain_outbox(self, timeout=300):
        """Seconds until the relay has published everything (outbox_backlog 0),
        so the next measurement does not share the CPU with it."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with urllib.request.urlopen(self.storage_metrics, timeout=5) as r:
                backlog = re.search(r"^outbox_backlog (\d+)", r.read().decode(), re.M)
            if backlog and backlog.group(1) == "0":
                return time.monotonic() - started
            time.sleep(0.2)
        raise SystemExit(f"{self.name}: the outbox did not drain in {timeout} s")

    def peak_rss(self):
        return {name: max(peak_rss_mib(proc.pid), self.earlier_peak.get(name, 0.0)) for name, proc in self.procs.items()}

    def stop(self):
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def simulator(*args):
    """Runs app-simulator with `args` and returns its JSON report."""
    out = subprocess.run([str(BIN / "app-simulator"), *args, "--cancel-ratio", "0", "--json"],
                         capture_output=True, text=True)
    if not out.stdout.strip():
        raise SystemExit(f"app-simulator failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def simulate(base, count, concurrency):
    report = simulator("--url", base, "--count", str(count), "--concurrency", str(concurrency))
    errors = report["sent"] - report["accepted"]
    return {"rps": report["accepted"] / report["elapsed_s"], "p50": report["latency_ms"]["p50"],
            "p99": report["latency_ms"]["p99"], "errors": errors, "requests": report["sent"]}


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, connections=CONCURRENCY, seconds=SECONDS):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url], capture_output=True, text=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))

    def pct(key):
        value, unit = re.match(r"([\d.]+)(\w+)", latency[key]).groups()
        return ms(value, unit)

    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50": pct("50"), "p99": pct("99"),
            "errors": errors, "requests": requests}


def metric(url, name):
    """One sample's value from a /metrics page (0 when absent)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        found = re.search(rf"^{re.escape(name)} ([\d.e+]+)$", r.read().decode(), re.M)
    return float(found.group(1)) if found else 0.0


def relay_drain(stack, count):
    """How fast the outbox relay publishes a backlog: `count` deliveries
    accepted while app-notifier is down (they wait in the outbox), then
    app-notifier started again and one more delivery to wake the relay at
    once (not at its next backoff); the messages published per second until
    the outbox is empty."""
    print(f"   outbox relay: {count} deliveries with app-notifier down, then the drain", flush=True)
    stack.kill("app-notifier")
    written = simulate(stack.base, count, CONCURRENCY)
    stack.restart("app-notifier")
    ready = stack.admin["app-notifier"] + "/ready"
    deadline = time.monotonic() + 30
    while status(ready) != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"{stack.name}: app-notifier not ready 30 s after its restart")
        time.sleep(0.05)
    backlog = metric(stack.storage_metrics, "outbox_backlog")
    with CpuMeter(stack) as meter:
        started = time.monotonic()
        simulate(stack.base, 1, 1)
        stack.drain_outbox()
        seconds = time.monotonic() - started
    return {"messages": backlog + 1, "seconds": seconds, "rate": (backlog + 1) / seconds,
            "errors": written["errors"], "cpu": meter}


def overload(stack, capacity):
    """Open loop at 3× `capacity` for OVERLOAD_SECONDS: what is accepted, how
    fast, how fast the excess is refused; then a closed-loop run to show the
    path recovered."""
    rate = 3 * capacity
    print(f"   overload: open loop at {rate:.0f}/s (3 × {capacity:.0f}/s) for {OVERLOAD_SECONDS} s", flush=True)
    report = simulator("--url", stack.base, "--rate", f"{rate:.0f}", "--duration", f"{OVERLOAD_SECONDS}s",
                       "--concurrency", "4096")
    print("   overload: recovery, 2,000 deliveries closed loop", flush=True)
    after = simulate(stack.base, 2000, CONCURRENCY)
    return {"rate": rate, "capacity": capacity, "sent": report["sent"], "accepted": report["accepted"],
            "accepted_per_s": report["accepted"] / report["elapsed_s"],
            "refused": report["rejected"].get("503", 0), "failed": report["failed"],
            "other": report["sent"] - report["accepted"] - report["rejected"].get("503", 0) - report["failed"],
            "accepted_p99": report["accepted_latency_ms"]["p99"], "refused_p99": report["refused_latency_ms"]["p99"],
            "recovery": after}


def stalled_dashboards(stack):
    """STALLED_CLIENTS clients open GET /events with a small receive buffer
    and never read, while STALLED_WEBHOOKS deliveries go through: the
    gateway's and the notifier's RSS every half second, and whether the relay
    kept publishing (the outbox drains)."""
    host, port = stack.base.removeprefix("http://").split(":")
    sockets = []
    for _ in range(STALLED_CLIENTS):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((host, int(port)))
        s.sendall(b"GET /events HTTP/1.1\r\nHost: bench\r\n\r\n")
        sockets.append(s)
    print(f"   stalled dashboards: {STALLED_CLIENTS} clients on /events not reading, "
          f"{STALLED_WEBHOOKS} webhooks at {CONCURRENCY} in flight", flush=True)
    watched = {name: stack.procs[name].pid for name in ("app-gateway", "app-notifier")}
    peak = dict.fromkeys(watched, 0.0)
    load = subprocess.Popen([str(BIN / "app-simulator"), "--url", stack.base, "--count", str(STALLED_WEBHOOKS),
                             "--concurrency", str(CONCURRENCY), "--cancel-ratio", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    while load.poll() is None:
        for name, pid in watched.items():
            rss = int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
            peak[name] = max(peak[name], rss)
        time.sleep(0.5)
    report = json.loads(load.stdout.read().strip().splitlines()[-1])
    drained = stack.drain_outbox(timeout=120)
    cut = metric(stack.base + "/metrics", 'sse_streams_refused_total{reason="too_far_behind"}')
    for s in sockets:
        s.close()
    return {"clients": STALLED_CLIENTS, "webhooks": report["sent"], "accepted": report["accepted"],
            "rps": report["accepted"] / report["elapsed_s"], "peak": peak, "drained_s": drained, "cut": cut}


def _field(tag, value):
    """SQL for one length-delimited protobuf field (`value` a bytea
    expression of under 128 bytes)."""
    return f"'\\x{tag:02x}'::bytea || set_byte('\\x00'::bytea, 0, length({value})) || {value}"


def _text(sql):
    return f"convert_to({sql}, 'UTF8')"


# Tickets SEED-1, SEED-2, ... in four categories and 100 events, one in twenty
# cancelled, 42.00 CHF each; `detail` is their TicketEvent encoded in SQL
# (protobuf, as app-storage writes it), so they list and render like any
# other. Inserted through the triggers that keep the stats' rollups.
_TICKET = " || ".join([
    _field(0x0a, _text("'SEED-' || g")), _field(0x12, _text("'seed'")), _field(0x1a, _text("'Seeded ticket'")),
    _field(0x22, _text("category")), "'\\x28'::bytea || set_byte('\\x00'::bytea, 0, event_id::int)",
    _field(0x32, _text("'Seeded event'")),
    f"CASE WHEN reason = '' THEN ''::bytea ELSE {_field(0x3a, _text('reason'))} END",
    _field(0x52, "'\\x0a03434846102a'::bytea"),  # Money { currency_code: "CHF", units: 42 }
])
SEED_SQL = f"""INSERT INTO tickets (number, ticket_type, title, category, event_id, event_name, cancellation_reason,
  promoter, price_cents, currency, last_event, detail, created_at_ms, updated_at_ms)
SELECT 'SEED-' || g, 'seed', 'Seeded ticket', category, event_id, 'Seeded event', reason, '', 4200, 'CHF',
  'ticket_created', {_field(0x0a, _text("'seed-' || g"))} || '\\x1001'::bytea || {_field(0x1a, _TICKET)}, 0, 0
FROM (SELECT g, (ARRAY['Concert', 'Theater', 'Club', 'Festival'])[1 + g % 4] AS category, 1 + g % 100 AS event_id,
             CASE WHEN g % 20 = 0 THEN 'customer_request' ELSE '' END AS reason
      FROM generate_series({{lo}}, {{hi}}) AS g) AS seed
ON CONFLICT (number) DO NOTHING"""


def seed_tickets(database_url, target):
    """Adds seeded tickets until the table holds `target`; how many it holds."""
    def count():
        return int(subprocess.run(["psql", database_url, "-qtAXc", "SELECT COUNT(*) FROM tickets"], check=True,
                                  capture_output=True, text=True).stdout)
    have, started, step = count(), time.monotonic(), 100_000
    for lo in range(have + 1, target + 1, step):
        hi = min(lo + step - 1, target)
        subprocess.run(["psql", database_url, "-qtAXc", SEED_SQL.format(lo=lo, hi=hi)], check=True,
                       capture_output=True)
        print(f"   {hi:,} tickets seeded ({time.monotonic() - started:.0f} s)", flush=True)
    subprocess.run(["psql", database_url, "-qtAXc", "VACUUM ANALYZE tickets"], check=True, capture_output=True)
    return count()


def reads_at_scale(stack, database_url):
    """Seeds the tickets table to SEED_TICKETS, then reads /api/stats and
    /api/tickets with wrk (4 connections, one path after the other) while
    app-simulator writes READ_WRITE_RATE webhooks/s in open loop."""
    tickets = seed_tickets(database_url, SEED_TICKETS)
    paths = [("GET /api/stats", "/api/stats"), ("GET /api/tickets", "/api/tickets"),
             ("GET /api/tickets?category=Club", "/api/tickets?category=Club")]
    seconds = 15
    print(f"   reads at scale: {tickets:,} tickets; {READ_WRITE_RATE} webhooks/s while each read runs {seconds} s",
          flush=True)
    writes = subprocess.Popen([str(BIN / "app-simulator"), "--url", stack.base, "--rate", str(READ_WRITE_RATE),
                               "--duration", f"{seconds * len(paths) + 5}s", "--concurrency", "64", "--cancel-ratio",
                               "0", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    rows = {label: wrk(stack.base + path, connections=4, seconds=seconds) for label, path in paths}
    out, err = writes.communicate(timeout=120)
    if not out.strip():
        raise SystemExit(f"app-simulator failed: {err[-2000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    return {"tickets": tickets, "rows": rows, "seconds": seconds, "written": report["accepted"],
            "write_errors": report["sent"] - report["accepted"], "write_rate": report["accepted"] / report["elapsed_s"]}


# pgbench substitutes :payload as text: a bytea of a real delivery's size.
FLOOR_SCRIPT = """\\set n random(1, 2000000000)
BEGIN;
INSERT INTO events (delivery_id, event_type, ticket_number, payload, signed_at_ms, received_at_ms)
  VALUES (md5(:client_id || '-' || :n || '-' || random()), 'ticket_created', 'T' || :n, :payload, 0, 0);
INSERT INTO outbox (message_id, routing_key, ticket_number, payload, created_at_ms)
  VALUES (md5(:client_id || '+' || :n || '+' || random()), 'ticket.created', 'T' || :n, :payload, 0);
END;
"""


def floor(seconds=10):
    """PostgreSQL alone: pgbench, one transaction inserting an event row and an
    outbox row (the tables and indexes a delivery writes, payloads of a real
    delivery's size) per request, CONCURRENCY clients, for `seconds`. The
    transactions per second: what the webhook path is compared with."""
    database = f"tm_floor_{time.strftime('%Y%m%d%H%M%S')}"
    psql(f"CREATE DATABASE {database}")
    url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{database}"
    try:
        for sql in sorted((ROOT / "services/storage/migrations/postgres").glob("*.sql")):
            subprocess.run(["psql", url, "-qX", "-v", "ON_ERROR_STOP=1", "-f", str(sql)], check=True, capture_output=True)
        with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
            script.write(FLOOR_SCRIPT)
            script.flush()
            out = subprocess.run(["pgbench", "-n", "-c", str(CONCURRENCY), "-j", str(os.cpu_count()), "-T", str(seconds),
                                  "-D", "payload=decode(repeat('7b', 600), 'hex')", "-f", script.name, url],
                                 check=True, capture_output=True, text=True).stdout
        return float(re.search(r"tps = ([\d.]+)", out).group(1))
    finally:
        psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def run(name, env, cleanup, hostile=False):
    """`hostile`: the real backends' run, with the floor, the hostile-traffic
    checks and the reads at scale."""
    print(f"== {name}: starting the four release binaries", flush=True)
    stack = Stack(name, env)
    print(f"   all ready in {stack.ready_ms:.0f} ms; warming up", flush=True)
    try:
        simulate(stack.base, 1000, CONCURRENCY)
        rows = {}
        if hostile:
            print(f"   PostgreSQL alone (pgbench, event + outbox row per transaction, {CONCURRENCY} clients)", flush=True)
            extra_floor = floor()
        print(f"   webhook path: {WEBHOOKS} signed deliveries at {CONCURRENCY} in flight", flush=True)
        cpu = {}
        with CpuMeter(stack) as meter:
            rows["webhook (POST /webhook)"] = simulate(stack.base, WEBHOOKS, CONCURRENCY)
        cpu["webhook"] = meter
        drained = stack.drain_outbox()
        print(f"   outbox drained {drained:.1f} s after the last webhook", flush=True)
        for label, path in [("hello (GET /, SNS off)", "/"), ("read (GET /api/stats)", "/api/stats"),
                            ("gateway health (GET /health)", "/health")]:
            print(f"   {label}: wrk {SECONDS} s at {CONCURRENCY} connections", flush=True)
            with CpuMeter(stack) as meter:
                rows[label] = wrk(stack.base + path)
            cpu[label.split(" ")[0]] = meter
        extra = {}
        if hostile:
            extra["drain"] = relay_drain(stack, WEBHOOKS)
            cpu["relay drain"] = extra["drain"]["cpu"]
            extra["floor"] = extra_floor
            extra["overload"] = overload(stack, rows["webhook (POST /webhook)"]["rps"])
            stack.drain_outbox()
            extra["stalled"] = stalled_dashboards(stack)
            stack.drain_outbox()
            extra["scale"] = reads_at_scale(stack, env["DATABASE_URL"])
        rss = stack.peak_rss()
    finally:
        stack.stop()
        cleanup()
    return {"name": name, "ready_ms": stack.ready_ms, "rows": rows, "rss": rss, "drained_s": drained, "cpu": cpu,
            **extra}


def hostile_table(result):
    o, s = result["overload"], result["stalled"]
    r = o["recovery"]
    return "\n".join([
        "### Hostile traffic (real backends)", "",
        f"**Overload**: app-simulator in open loop at {o['rate']:.0f} deliveries/s, 3 × the {o['capacity']:.0f}/s "
        f"measured above, for {OVERLOAD_SECONDS} s (up to 4,096 in flight). The gateway admits "
        "WEBHOOK_CONCURRENCY at once and answers the rest 503 + Retry-After at once.", "",
        "| sent | accepted | accepted/s | refused (503) | no answer | other | accepted p99 ms | refused p99 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {o['sent']} | {o['accepted']} | {o['accepted_per_s']:.0f} | {o['refused']} | {o['failed']} | {o['other']} "
        f"| {o['accepted_p99']:.1f} | {o['refused_p99']:.1f} |", "",
        f"Right after: {r['requests']} deliveries closed loop at {CONCURRENCY} in flight, {r['rps']:.0f}/s, "
        f"p99 {r['p99']:.1f} ms, {r['errors']} errors.", "",
        f"**Stalled dashboards**: {s['clients']} clients open GET /events and never read (4 KiB receive buffer) "
        f"while {s['webhooks']} deliveries go through at {CONCURRENCY} in flight ({s['accepted']} accepted, "
        f"{s['rps']:.0f}/s). {s['cut']:.0f} streams were cut off as too far behind; the outbox drained "
        f"{s['drained_s']:.1f} s after the last delivery.", "",
        "| process | peak RSS during the run (MiB) |", "| --- | ---: |",
        *[f"| {name} | {mib:.1f} |" for name, mib in s["peak"].items()],
    ])


def scale_table(result):
    s = result["scale"]
    return "\n".join([
        "### Reads at scale (real backends)", "",
        f"The tickets table seeded to {s['tickets']:,} rows, then each read with wrk for {s['seconds']} s at 4 "
        f"connections while app-simulator wrote {s['write_rate']:.0f} webhooks/s in open loop ({s['written']} "
        f"accepted, {s['write_errors']} not). Every write changes the figures, so the stats' cache and memo are "
        "invalidated all along.", "",
        "| read | req/s | p50 ms | p99 ms | errors | requests |", "| --- | ---: | ---: | ---: | ---: | ---: |",
        *[f"| {label} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} | {r['requests']} |"
          for label, r in s["rows"].items()],
    ])


def scale_verdict(result):
    s = result["scale"]
    return "\n".join(
        f"- {'met' if ok else 'NOT met'}: {label} p99 ≤ 50 ms and 0 errors at {s['tickets']:,} tickets "
        f"({r['p99']:.1f} ms, {r['errors']} errors)"
        for label, r in s["rows"].items() for ok in [r["p99"] <= 50 and r["errors"] == 0])


def hostile_verdict(result):
    o, s = result["overload"], result["stalled"]
    checks = [
        ("overload: accepted/s ≥ 90 % of capacity", o["accepted_per_s"] >= 0.9 * o["capacity"],
         f"{100 * o['accepted_per_s'] / o['capacity']:.0f} %"),
        ("overload: accepted p99 ≤ 100 ms", o["accepted_p99"] <= 100, f"{o['accepted_p99']:.1f} ms"),
        ("overload: refusals p99 ≤ 10 ms", o["refused_p99"] <= 10, f"{o['refused_p99']:.1f} ms"),
        ("overload: full recovery (0 errors, p99 ≤ 50 ms)", o["recovery"]["errors"] == 0 and o["recovery"]["p99"] <= 50,
         f"{o['recovery']['errors']} errors, p99 {o['recovery']['p99']:.1f} ms"),
        ("stalled dashboards: gateway and notifier each < 64 MiB RSS", max(s["peak"].values()) < 64,
         f"max {max(s['peak'].values()):.1f} MiB"),
        ("stalled dashboards: the relay kept publishing (outbox drained)", s["drained_s"] < 120, f"{s['drained_s']:.1f} s"),
    ]
    return "\n".join(f"- {'met' if ok else 'NOT met'}: {what} ({figure})" for what, ok, figure in checks)


def table(result):
    lines = [f"### {result['name']}", "", f"All four ready {result['ready_ms']:.0f} ms after start. The outbox relay "
             f"had published every accepted webhook {result['drained_s']:.1f} s after the last one was answered; the "
             "next measurement starts only then.", "",
             "| path | req/s | p50 ms | p99 ms | errors | requests |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for label, r in result["rows"].items():
        lines.append(f"| {label} | {r['rps']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['errors']} | {r['requests']} |")
    if "floor" in result:
        webhook = result["rows"]["webhook (POST /webhook)"]["rps"]
        lines += ["", f"PostgreSQL alone in the same run (pgbench, {CONCURRENCY} clients, one transaction inserting an "
                  f"event row and an outbox row): {result['floor']:.0f} transactions/s. The webhook path does "
                  f"{webhook / result['floor']:.2f}× that."]
    if "drain" in result:
        d = result["drain"]
        lines += ["", f"Outbox relay: {d['messages']:.0f} messages waiting (deliveries accepted with app-notifier down, "
                  f"{d['errors']} errors), then app-notifier started again: the relay published them all in "
                  f"{d['seconds']:.1f} s, {d['rate']:.0f} messages/s (CPU in the column \"relay drain\" below)."]
    lines += ["", "| process | peak RSS (MiB) |", "| --- | ---: |"]
    lines += [f"| {name} | {mib:.1f} |" for name, mib in result["rss"].items()]
    cpu = result["cpu"]
    names = [n for n in next(iter(cpu.values())).share if any(m.share.get(n, 0) >= 0.5 for m in cpu.values())]
    lines += ["", f"CPU used during each measurement, in % of one core ({os.cpu_count()} cores = "
              f"{100 * os.cpu_count()} %); the load generator is app-simulator or wrk:", "",
              "| process | " + " | ".join(cpu) + " |", "| --- |" + " ---: |" * len(cpu)]
    lines += [f"| {n} | " + " | ".join(f"{m.share.get(n, 0):.0f}" for m in cpu.values()) + " |" for n in names]
    lines.append("| idle | " + " | ".join(f"{max(m.idle, 0):.0f}" for m in cpu.values()) + " |")
    return "\n".join(lines)


def verdict(result):
    rows = result["rows"]
    webhook = rows["webhook (POST /webhook)"]
    hello, health = rows["hello (GET /, SNS off)"], rows["gateway health (GET /health)"]
    checks = [
        (f"webhook ≥ 2,000 accepted/s at {CONCURRENCY} in flight", webhook["rps"] >= 2000, f"{webhook['rps']:.0f}/s"),
        ("webhook p99 ≤ 50 ms", webhook["p99"] <= 50, f"{webhook['p99']:.1f} ms"),
        *([("webhook ≥ 1.0× PostgreSQL's event+outbox floor measured in the same run", webhook["rps"] >= result["floor"],
            f"{webhook['rps'] / result['floor']:.2f}×")] if "floor" in result else []),
        *([("the outbox relay publishes at least as fast as the webhook path accepts", result["drain"]["rate"] >= webhook["rps"],
            f"{result['drain']['rate']:.0f} messages/s")] if "drain" in result else []),
        ("webhook 0 errors", webhook["errors"] == 0, str(webhook["errors"])),
        ("hello ≥ 50 % of /health's req/s", hello["rps"] >= health["rps"] / 2,
         f"{100 * hello['rps'] / max(health['rps'], 1):.0f} %"),
        ("each service ≤ 30 MB RSS", max(result["rss"].values()) <= 30 * 1e6 / 2**20,
         f"max {max(result['rss'].values()):.1f} MiB"),
        ("all four ready ≤ 1 s after start", result["ready_ms"] <= 1000, f"{result['ready_ms']:.0f} ms"),
    ]
    return "\n".join(f"- {'met' if ok else 'NOT met'}: {what} ({figure})" for what, ok, figure in checks)


def main():
    for tool, package in (("wrk", "wrk"), ("psql", "postgresql-client"), ("pgbench", "postgresql-client")):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install -y {package}")
    for name in SERVICES + ["app-simulator"]:
        if not (BIN / name).exists():
            raise SystemExit(f"{BIN / name} is missing: cargo build --release --bins")
    stamp = time.strftime("%Y%m%d%H%M%S")
    database = f"tm_bench_{stamp}"
    psql(f"CREATE DATABASE {database}")
    pg_base = PG_ADMIN.rsplit("/", 1)[0]
    real = run(
        "PostgreSQL + Redis + RabbitMQ",
        {"DATABASE_URL": f"{pg_base}/{database}", "REDIS_URL": REDIS, "CACHE_PREFIX": f"bench{stamp}",
         "AMQP_URL": AMQP, "AMQP_EXCHANGE": f"bench.{stamp}"},
        lambda: psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        hostile=True,
    )
    sqlite_dir = tempfile.mkdtemp(prefix="tm-bench-")
    embedded = run(
        "embedded defaults (SQLite, no cache, in-process bus)",
        {"DATABASE_URL": f"sqlite:{sqlite_dir}/bench.db?mode=rwc"},
        lambda: shutil.rmtree(sqlite_dir, ignore_errors=True),
    )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                      cwd=ROOT).stdout.strip():
        commit += " with uncommitted changes"
    text = "\n".join([
        "# Benchmarks",
        "",
        f"`make bench` on {datetime.date.today().isoformat()}, commit {commit}: {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), {platform.system()} {platform.release()}. Everything on this one "
        "machine: the four release binaries, PostgreSQL, Redis, RabbitMQ and the load generators. The webhook "
        f"path is app-simulator sending {WEBHOOKS} fresh signed deliveries at {CONCURRENCY} in flight (closed loop, after "
        f"a 1,000-delivery warm-up); the other paths are wrk, {SECONDS} s at {CONCURRENCY} connections. Errors are answers "
        "other than 2xx, and requests with no answer.",
        "",
        table(real),
        "",
        "Against the targets (real backends):",
        "",
        verdict(real),
        "",
        hostile_table(real),
        "",
        "Against the targets:",
        "",
        hostile_verdict(real),
        "",
        scale_table(real),
        "",
        "Against the targets:",
        "",
        scale_verdict(real),
        "",
        table(embedded),
        "",
    ])
    # The hand-written analysis at the end (from "## What limits each path")
    # outlives a new run; its figures say which run they come from.
    previous = (ROOT / "BENCH.md").read_text() if (ROOT / "BENCH.md").exists() else ""
    if ANALYSIS in previous:
        text += "\n" + previous[previous.index(ANALYSIS):]
    (ROOT / "BENCH.md").write_text(text)
    print()
    print(text)
    print("written to BENCH.md")


if __name__ == "__main__":
    sys.exit(main())
