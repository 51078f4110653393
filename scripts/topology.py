"""The local topology from scripts/topology.txt (the format is described
there): each binary's listeners with their fixed local ports, and the
services it calls with the variable that carries each URL."""

from pathlib import Path

KINDS = ("http", "grpc", "admin")


def _read(path):
    ports, calls = {}, {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, *listeners, wiring = line.split()
        ports[name] = {kind: int(port) for kind, port in zip(KINDS, listeners, strict=True) if port != "-"}
        calls[name] = dict(call.split("=") for call in wiring.split(",")) if wiring != "-" else {}
    return ports, calls


# PORTS: binary → {listener kind: fixed local port}; CALLS: binary →
# {variable: binary it calls}. Both in the file's order, callers first.
PORTS, CALLS = _read(Path(__file__).with_name("topology.txt"))
# Callees before their callers: the order to start them in.
STARTUP = list(reversed(PORTS))


def env(name, ports):
    """The listen addresses (HTTP_ADDR, GRPC_ADDR, ADMIN_ADDR) and the URLs
    of the services it calls that `name` is started with, `ports` being
    binary → {listener kind: port} (PORTS, or free ports of the same shape)."""
    return {
        **{f"{kind.upper()}_ADDR": f"127.0.0.1:{port}" for kind, port in ports[name].items()},
        **{variable: f"http://127.0.0.1:{ports[callee]['grpc']}" for variable, callee in CALLS[name].items()},
    }


def metrics_port(ports):
    """Where a binary with these listeners serves the /metrics and /ready
    that get scraped and polled: its http port if it has one (the gateway),
    else its admin port."""
    return ports.get("http", ports["admin"])
