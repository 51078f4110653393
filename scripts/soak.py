#!/usr/bin/env python3
"""make soak: the four release binaries on real PostgreSQL, Redis and RabbitMQ
under a steady moderate load for a long time (SOAK_SECONDS, default 600) —
app-simulator at SOAK_RATE signed webhooks a second (default 50; a few
cancellations, 2 % forged, 2 % replays), a reader on /api/stats and
/api/tickets once a second, and an SSE client on /events that reconnects
every 30 s, so streams come and go. Every 10 s it samples each process's
resident memory (VmRSS) and open file descriptors, and the outbox backlog;
at the end it fits a least-squares slope to each over the samples after the
first half of the run (the warm-up), and checks that every accepted webhook was
stored and published. Prints the figures and appends them as a Markdown
section to data/soak.md. Exits non-zero if a process's RSS or fds grow, or
if a check fails.

With SOAK_SEED_TICKETS=n the tickets table is first seeded to n rows (as
`make bench` does for its reads at scale), so the reader's latency is that of
a large database.

Environment: SOAK_SECONDS (default 600), SOAK_RATE (default 50),
SOAK_SEED_TICKETS (default 0), TEST_POSTGRES_URL, TEST_REDIS_URL, TEST_AMQP_URL (as for make bench).
"""

import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the stack starter `make bench` uses)

ROOT = bench.ROOT
SECONDS = int(os.environ.get("SOAK_SECONDS", "600"))
RATE = float(os.environ.get("SOAK_RATE", "50"))
SEED_TICKETS = int(os.environ.get("SOAK_SEED_TICKETS", "0"))
CONCURRENCY = 32
CANCEL_RATIO, FORGED_RATIO, REPLAY_RATIO = 0.05, 0.02, 0.02
INTERVAL = 10  # s between two samples
# The slopes are taken over the second half of the run (at least the first
# minute left out): connection pools and buffers grow to their size first.
WARMUP = max(60, SECONDS // 2)
SSE_PERIOD = 30  # s each SSE connection stays open
DRAIN_TIMEOUT = 60  # s the outbox has to reach 0 after the load
RSS_FLAT = 64.0  # KiB/min: |slope| below this is flat
FD_MARGIN = 2  # fds: the last sample may exceed the settled maximum by this much
OUT = ROOT / "data" / "soak.md"
SHORT = {"app-gateway": "gateway", "app-event": "event", "app-notifier": "notifier", "app-storage": "storage"}
ORDER = ["app-gateway", "app-event", "app-notifier", "app-storage"]


def proc_sample(pid):
    """(VmRSS in KiB, open fds) of a running process; OSError once it has
    exited (a zombie has no VmRSS)."""
    rss = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    if rss is None:
        raise OSError(f"process {pid} has exited")
    return int(rss.group(1)), len(os.listdir(f"/proc/{pid}/fd"))


def gauge(url, name):
    """One unlabelled gauge from a /metrics page (None if it is not there)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            found = re.search(rf"^{name} (\S+)", r.read().decode(), re.M)
    except OSError:
        return None
    return int(float(found.group(1))) if found else None


def query(database_url, sql):
    """The single row `sql` returns, as strings (psql -tA)."""
    out = subprocess.run(["psql", database_url, "-qtAc", sql], capture_output=True, text=True, check=True)
    return out.stdout.strip().split("|")


def slope(points):
    """Least-squares slope of (x, y) points; None with fewer than two."""
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else None


class Reader(threading.Thread):
    """GET /api/stats and /api/tickets once a second, each on a new
    connection, at half past each second of the run: never at the instant of
    a sample (which falls on a multiple of 10 s). The shared lock keeps a
    slow answer from overlapping a sample, so a request in flight is not
    counted as an open fd."""

    def __init__(self, base, t0, stop, lock):
        super().__init__(daemon=True)
        self.base, self.t0, self.stop, self.lock = base, t0, stop, lock
        self.ok, self.errors, self.last_error = 0, 0, None
        self.latency_ms = {"/api/stats": [], "/api/tickets": []}

    def run(self):
        k = 0
        while not self.stop.wait(max(0.0, self.t0 + k + 0.5 - time.monotonic())):
            k += 1
            with self.lock:
                for path, latencies in self.latency_ms.items():
                    started = time.monotonic()
                    code = bench.status(self.base + path)
                    latencies.append(1000 * (time.monotonic() - started))
                    if code == 200:
                        self.ok += 1
                    else:
                        self.errors += 1
                        self.last_error = f"{path}: {code or 'no answer'}"


class SseClient(threading.Thread):
    """One GET /events stream at a time, each closed after SSE_PERIOD s and
    reopened, counting the events received. The connections open and close
    5 s off the sampling instants, so every sample sees exactly one stream
    (after the first) and none half torn down. HTTP/1.0, so the body is the
    raw event stream, not chunked."""

    def __init__(self, base, t0, stop):
        super().__init__(daemon=True)
        self.host, self.port = urllib.parse.urlsplit(base).hostname, urllib.parse.urlsplit(base).port
        self.t0, self.stop = t0, stop
        self.connections, self.events, self.errors, self.last_error = 0, 0, 0, None

    def run(self):
        k = 0
        while not self.stop.wait(max(0.0, self.t0 + 5 + SSE_PERIOD * k - time.monotonic())):
            end = self.t0 + 5 + SSE_PERIOD * (k + 1) - 0.5
            k += 1
            try:
                self.stream(end)
                self.connections += 1
            except (OSError, ValueError) as e:
                self.errors += 1
                self.last_error = str(e)

    def stream(self, end):
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall(f"GET /events HTTP/1.0\r\nHost: {self.host}:{self.port}\r\n"
                      "Accept: text/event-stream\r\n\r\n".encode())
            s.settimeout(0.5)
            buf, head = b"", None
            while time.monotonic() < end and not self.stop.is_set():
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    raise ValueError("the gateway ended the stream")
                buf += chunk
                if head is None:
                    if b"\r\n\r\n" not in buf:
                        continue
                    head, buf = buf.split(b"\r\n\r\n", 1)
                    if not re.match(rb"HTTP/1\.\d 200", head):
                        raise ValueError(f"GET /events answered {head.splitlines()[0].decode(errors='replace')}")
                *lines, buf = buf.split(b"\n")
                self.events += sum(1 for line in lines if line.startswith(b"event:"))


def stack_log_problems(stack):
    """WARN and ERROR lines the four services logged (RUST_LOG=warn)."""
    stack.logs.flush()
    stack.logs.seek(0)
    lines = stack.logs.read().decode(errors="replace").splitlines()
    return [line for line in lines if re.search(r'"level":\s*"(WARN|ERROR)"', line)]


def fmt_slope(value, unit):
    return "n/a" if value is None else f"{value:+.1f} {unit}"


def soak(stack, database_url, stop):
    """The load and the samples; returns everything the report needs."""
    simulator_err = tempfile.TemporaryFile()
    simulator = subprocess.Popen(
        [str(bench.BIN / "app-simulator"), "--url", stack.base, "--rate", f"{RATE:g}", "--duration", f"{SECONDS}s",
         "--concurrency", str(CONCURRENCY), "--cancel-ratio", str(CANCEL_RATIO),
         "--bad-signature-ratio", str(FORGED_RATIO), "--replay-ratio", str(REPLAY_RATIO), "--json"],
        stdout=subprocess.PIPE, stderr=simulator_err, text=True,
    )
    t0 = time.monotonic()
    lock = threading.Lock()
    reader, sse = Reader(stack.base, t0, stop, lock), SseClient(stack.base, t0, stop)
    reader.start()
    sse.start()
    pids = {name: stack.procs[name].pid for name in ORDER}
    samples, died = [], None
    print(f"   {SECONDS} s at {RATE:g} webhooks/s; a sample every {INTERVAL} s (RSS MiB / open fds)", flush=True)
    try:
        # Samples at 0, 10, 20 s… while the load runs; not at its very end,
        # when the simulator is closing its connections (the gateway's fds
        # would drop by the simulator's pool and fake a downward slope).
        k = 0
        while INTERVAL * k <= SECONDS - 1:
            time.sleep(max(0.0, t0 + INTERVAL * k - time.monotonic()))
            with lock:
                elapsed = time.monotonic() - t0
                try:
                    procs = {name: proc_sample(pid) for name, pid in pids.items()}
                except OSError:
                    died = [name for name in ORDER if stack.procs[name].poll() is not None] or ["a service"]
                    break
                # After /proc: fetching /metrics opens a connection of its own.
                backlog = gauge(stack.storage_metrics, "outbox_backlog")
            samples.append({"t": elapsed, "procs": procs, "backlog": backlog})
            print(f"   [{elapsed:5.0f} s] " + " · ".join(
                f"{SHORT[n]} {procs[n][0] / 1024:6.2f}/{procs[n][1]:3d}" for n in ORDER)
                + f" · backlog {backlog if backlog is not None else '?'}", flush=True)
            k += 1
            if simulator.poll() is not None:
                break
        out, _ = simulator.communicate(timeout=SECONDS + 120)
    finally:
        stop.set()
        if simulator.poll() is None:
            simulator.terminate()
            simulator.wait()
        reader.join(timeout=5)
        sse.join(timeout=5)
    if died:
        raise SystemExit(f"{', '.join(died)} exited during the soak")
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        simulator_err.seek(0)
        raise SystemExit(f"app-simulator gave no report: {simulator_err.read().decode(errors='replace')[-2000:]}")

    # After the load: the outbox drains, then the database must hold exactly
    # what the simulator was told was stored.
    try:
        drained = stack.drain_outbox(timeout=DRAIN_TIMEOUT)
    except SystemExit:
        drained = None
    events, outbox, unpublished = map(int, query(
        database_url, "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM outbox), "
                      "(SELECT count(*) FROM outbox WHERE published_at_ms IS NULL)"))
    # The streams closed: the gateway's SSE gauge and the notifier's
    # subscriptions (one RabbitMQ queue each) must come back to 0.
    deadline = time.monotonic() + 10
    while True:
        clients = gauge(stack.admin["app-gateway"] + "/metrics", "sse_clients")
        subscribers = gauge(stack.admin["app-notifier"] + "/metrics", "notifier_subscribers")
        if (clients == 0 and subscribers == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return {"samples": samples, "report": report, "drained": drained, "events": events, "outbox": outbox,
            "unpublished": unpublished, "reader": reader, "sse": sse, "sse_clients": clients,
            "subscribers": subscribers, "log_problems": stack_log_problems(stack)}


def analyse(result):
    """Per process: first, after the warm-up, last and max of RSS and fds,
    and their slopes over the samples after the warm-up."""
    samples = result["samples"]
    after = [s for s in samples if s["t"] >= WARMUP - 0.5]
    rows = {}
    for name in ORDER:
        rss = [s["procs"][name][0] for s in samples]
        fds = [s["procs"][name][1] for s in samples]
        rss_slope = slope([(s["t"] / 60, s["procs"][name][0]) for s in after])
        fd_slope = slope([(s["t"] / 60, s["procs"][name][1]) for s in after])
        # A process's fds follow its clients' connections (the simulator's
        # pool, the reader's one-shot connections, the SSE client), so they
        # move both ways; a leak only adds. Growing means the last sample is
        # above the most seen in the first half (after its first minute), by
        # more than FD_MARGIN. The slope is shown, not judged.
        settled = [s["procs"][name][1] for s in samples if 60 <= s["t"] < WARMUP] or fds
        fds_flat = fds[-1] <= max(settled) + FD_MARGIN
        flat = rss_slope is not None and abs(rss_slope) < RSS_FLAT and fds_flat
        rows[name] = {"rss": rss, "fds": fds, "rss_at_warmup": after[0]["procs"][name][0] if after else None,
                      "fds_at_warmup": after[0]["procs"][name][1] if after else None,
                      "rss_slope": rss_slope, "fd_slope": fd_slope, "verdict": "flat" if flat else "GROWING"}
    return rows


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else 0.0


def checks(result):
    """(ok, text) of each check besides the slopes."""
    r = result["report"]
    forged = r["rejected"].get("401", 0)
    other_rejected = {k: v for k, v in r["rejected"].items() if k != "401"}
    reader, sse = result["reader"], result["sse"]
    drained = result["drained"]
    return [
        (drained is not None,
         f"the outbox drained to 0 within {DRAIN_TIMEOUT} s after the load"
         + (f" ({drained:.1f} s)" if drained is not None else " (it did not)")),
        # Every delivery the gateway answered 2xx without "duplicate" is a
        # new row in `events` and in `outbox` (the same transaction, keyed by
        # the SHA-256 of the body): that is the simulator's `accepted`.
        # Replays resend an already accepted body and come back as
        # `duplicates`: stored before, no new row. Forged ones are 401 and
        # never reach storage; cancellations are fresh bodies (ticket_updated),
        # so each is one new event row (the ticket row is updated, not added:
        # hence no check on `tickets`). The reader and the SSE client only
        # read. So events = outbox = accepted, exactly. A request with no
        # answer (`failed`) may or may not have been stored: it is counted as
        # unexpected below, and would show here as events > accepted.
        (result["events"] == r["accepted"],
         f"events in the database = accepted ({result['events']} vs {r['accepted']}; the {r['duplicates']} "
         "duplicates are replays of stored deliveries, no new rows)"),
        (result["outbox"] == r["accepted"] and result["unpublished"] == 0,
         f"outbox rows = accepted, all published ({result['outbox']} rows, {result['unpublished']} unpublished)"),
        (r["unexpected"] == 0 and r["failed"] == 0,
         f"every answer the one intended (unexpected {r['unexpected']}, failed {r['failed']}, "
         f"{forged} forged answered 401, other rejections {other_rejected or 'none'})"),
        (reader.errors == 0 and reader.ok > 0,
         f"reader: {reader.ok} GETs of /api/stats and /api/tickets answered 200, {reader.errors} not"
         + (f" (last: {reader.last_error})" if reader.last_error else "")
         + "; " + ", ".join(f"{path} p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
                            f"max {max(ms, default=0):.1f} ms (a new connection each)"
                            for path, ms in reader.latency_ms.items())),
        (sse.errors == 0 and sse.connections > 0,
         f"SSE: {sse.connections} streams of {SSE_PERIOD} s opened and closed, {sse.events} events received, "
         f"{sse.errors} failures" + (f" (last: {sse.last_error})" if sse.last_error else "")),
        (result["sse_clients"] == 0 and result["subscribers"] == 0,
         f"after the last stream closed: gateway sse_clients {result['sse_clients']}, "
         f"notifier_subscribers {result['subscribers']} (both must be 0)"),
    ]


def markdown(result, rows, checked, database):
    r = result["report"]
    lat = r["latency_ms"]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                      cwd=ROOT).stdout.strip():
        commit += " with uncommitted changes"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mib = lambda kib: f"{kib / 1024:.2f}"  # noqa: E731
    rejected = ", ".join(f"{n} × {status}" for status, n in r["rejected"].items()) or "0"
    lines = [
        f"## Soak: {SECONDS} s at {RATE:g} webhooks/s ({when})",
        "",
        f"`make soak` (SOAK_SECONDS={SECONDS} SOAK_RATE={RATE:g}"
        + (f" SOAK_SEED_TICKETS={SEED_TICKETS}" if SEED_TICKETS else "") + f"), commit {commit}: {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}), {platform.system()} {platform.release()}. The four release "
        f"binaries on PostgreSQL (database {database}, dropped after), Redis and RabbitMQ, all on this machine. "
        + (f"The tickets table was first seeded to {SEED_TICKETS:,} rows. " if SEED_TICKETS else "") + "Load: "
        f"app-simulator --rate {RATE:g} for {SECONDS} s (at most {CONCURRENCY} in flight; {CANCEL_RATIO:.0%} "
        f"cancellations, {FORGED_RATIO:.0%} forged, {REPLAY_RATIO:.0%} replays), a reader on /api/stats and "
        f"/api/tickets once a second (a new connection each), an SSE client on /events reconnecting every "
        f"{SSE_PERIOD} s. Each process's VmRSS and open fds sampled every {INTERVAL} s; slopes are least squares over "
        f"the samples from {WARMUP} s on (the first half is warm-up: pools and buffers grow to their size). Flat: "
        f"|RSS slope| < {RSS_FLAT:g} KiB/min, and the last fd count at most {FD_MARGIN} above the most seen from 60 s "
        f"to {WARMUP} s (fds follow the clients' connections both ways; a leak only adds).",
        "",
        f"Simulator: sent {r['sent']} in {r['elapsed_s']:.1f} s, accepted {r['accepted']}, duplicates "
        f"{r['duplicates']}, rejected {rejected}, failed {r['failed']}, unexpected {r['unexpected']}; "
        f"latency p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms.",
        "",
        f"| process | RSS MiB at 0 s | at {WARMUP} s | last | max | RSS slope | fds at 0 s | at {WARMUP} s | last | max "
        "| fd slope | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name in ORDER:
        row = rows[name]
        lines.append(
            f"| {name} | {mib(row['rss'][0])} | {mib(row['rss_at_warmup']) if row['rss_at_warmup'] else 'n/a'} "
            f"| {mib(row['rss'][-1])} | {mib(max(row['rss']))} | {fmt_slope(row['rss_slope'], 'KiB/min')} "
            f"| {row['fds'][0]} | {row['fds_at_warmup'] if row['fds_at_warmup'] is not None else 'n/a'} "
            f"| {row['fds'][-1]} | {max(row['fds'])} | {fmt_slope(row['fd_slope'], '/min')} | {row['verdict']} |")
    lines += ["", "Checks:", ""]
    lines += [f"- {'ok' if ok else 'FAILED'}: {text}" for ok, text in checked]
    problems = result["log_problems"]
    lines += ["", f"The services logged {len(problems)} WARN/ERROR lines"
              + (":" if problems else ".")]
    if problems:
        lines += ["", "```"] + [p[:300] for p in problems[:5]] + (["…"] if len(problems) > 5 else []) + ["```"]
    lines += ["", "Every sample (RSS MiB / open fds; outbox backlog):", "",
              "| t (s) | " + " | ".join(SHORT[n] for n in ORDER) + " | backlog |",
              "| ---: |" + " ---: |" * (len(ORDER) + 1)]
    for s in result["samples"]:
        lines.append(f"| {s['t']:.0f} | " + " | ".join(f"{mib(s['procs'][n][0])} / {s['procs'][n][1]}" for n in ORDER)
                     + f" | {s['backlog'] if s['backlog'] is not None else '?'} |")
    return "\n".join(lines)


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main():
    if shutil.which("psql") is None:
        raise SystemExit("psql is needed: apt-get install -y postgresql-client")
    for name in bench.SERVICES + ["app-simulator"]:
        if not (bench.BIN / name).exists():
            raise SystemExit(f"{bench.BIN / name} is missing: cargo build --release --bins")
    if SECONDS < WARMUP + 3 * INTERVAL:
        raise SystemExit(f"SOAK_SECONDS={SECONDS} leaves too few samples after the {WARMUP} s warm-up: "
                         f"at least {WARMUP + 3 * INTERVAL}")
    # Ctrl-C and SIGTERM stop the stack and drop the database (even when
    # started from a shell that had SIGINT ignored, as background jobs are).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupted)
    stamp = f"{time.strftime('%Y%m%d%H%M%S')}{os.getpid()}"
    database = f"tm_soak_{stamp}"
    database_url = f"{bench.PG_ADMIN.rsplit('/', 1)[0]}/{database}"
    stop = threading.Event()
    stack = None
    bench.psql(f"CREATE DATABASE {database}")
    try:
        print("== soak: starting the four release binaries on PostgreSQL, Redis and RabbitMQ", flush=True)
        stack = bench.Stack("soak", {
            "DATABASE_URL": database_url, "REDIS_URL": bench.REDIS, "CACHE_PREFIX": f"soak{stamp}",
            "AMQP_URL": bench.AMQP, "AMQP_EXCHANGE": f"soak.{stamp}",
        })
        print(f"   all ready in {stack.ready_ms:.0f} ms", flush=True)
        if SEED_TICKETS:
            print(f"   seeding the tickets table to {SEED_TICKETS:,} rows", flush=True)
            bench.seed_tickets(database_url, SEED_TICKETS)
        result = soak(stack, database_url, stop)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stack and dropping the database", flush=True)
        return 130
    finally:
        stop.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if stack:
            stack.stop()
        try:
            bench.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        except subprocess.CalledProcessError as e:
            print(f"could not drop {database}: {e.stderr.decode(errors='replace')}", file=sys.stderr)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    rows = analyse(result)
    checked = checks(result)
    text = markdown(result, rows, checked, database)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    previous = OUT.read_text() if OUT.exists() else "# Soak runs\n"
    OUT.write_text(previous.rstrip("\n") + "\n\n" + text + "\n")
    print()
    print(text)
    print()
    growing = [name for name in ORDER if rows[name]["verdict"] != "flat"]
    failed = [text for ok, text in checked if not ok]
    for name in ORDER:
        row = rows[name]
        print(f"{name}: {row['verdict']} (RSS {fmt_slope(row['rss_slope'], 'KiB/min')}, "
              f"fds {fmt_slope(row['fd_slope'], '/min')})")
    print(f"appended to {OUT.relative_to(ROOT)}")
    if growing or failed:
        print(f"soak FAILED: {len(growing)} growing, {len(failed)} checks failed")
        return 1
    print("soak ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
