#!/usr/bin/env python3
"""Offline checks of the Grafana files in k8s/monitoring/mon-grafana/, and the
list of their queries for the live check against a running Prometheus.

The dashboards must parse, have unique uids and unique panel ids (rows and the
panels inside them included), and name their data sources only by a uid that
datasources.yaml provisions, on the panel and on every target; a Prometheus
or Loki target needs an expression, a graph or stat needs a unit, and a
latency graph (histogram_quantile) links to the traces in Jaeger, since the
prometheus crate cannot attach exemplars. Loki's derived fields and Jaeger's
trace-to-logs must point at provisioned data sources too.

Usage: dashboards.py [--root DIR] [--self-test] [--queries]
  --self-test  also break the files in memory in known ways and make sure each
               check notices (so a check that cannot fail is caught).
  --queries    print every query, Grafana variables substituted, as JSON lines.
`make observability` runs the checks and the self-test, then every query
against a real Prometheus (scripts/observe.py). Needs Python 3.11 and pyyaml.
"""

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
GRAFANA = Path("k8s/monitoring/mon-grafana")
# What Grafana's variables stand for when a query runs outside Grafana.
BUILT_INS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
# Panels that query nothing.
NO_QUERY = {"row", "text", "dashlist", "news"}
# Panels whose values need a unit.
NEEDS_UNIT = {"timeseries", "stat", "gauge", "bargauge", "barchart"}
LATENCY = re.compile(r"histogram_quantile\s*\(")


def grafana_dir(root: Path) -> Path:
    """The folder holding datasources.yaml: `root` itself or the repository's mon-grafana."""
    root = Path(root)
    return root if (root / "datasources.yaml").is_file() else root / GRAFANA


def read_texts(root: Path) -> dict[str, str]:
    """Each dashboard file's text, by its name in dashboards/."""
    folder = grafana_dir(root) / "dashboards"
    return {path.name: path.read_text() for path in sorted(folder.glob("*.json"))}


def read_datasources(root: Path) -> dict:
    return yaml.safe_load((grafana_dir(root) / "datasources.yaml").read_text()) or {}


def load_dashboards(root: Path) -> dict[str, dict]:
    """Every dashboard by file name; a file that is not JSON is a ValueError."""
    dashboards = {}
    for name, text in read_texts(root).items():
        try:
            dashboards[name] = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name}: invalid JSON: {error}") from error
    return dashboards


def walk_panels(panels: list) -> list[dict]:
    """Every panel, the ones inside rows included, in order."""
    found = []
    for panel in panels or []:
        if isinstance(panel, dict):
            found.append(panel)
            found.extend(walk_panels(panel.get("panels")))
    return found


def substitute(expr: str) -> str:
    """`expr` as Prometheus or Loki can run it: Grafana's interval variables become
    1m (1h for the range), every other variable matches anything (`.*`)."""

    def value(match: re.Match) -> str:
        name = match.group("name") or match.group("braced") or match.group("old")
        return BUILT_INS.get(name, ".*")

    pattern = r"\$\{(?P<braced>\w+)(?::[^}]*)?\}|\[\[(?P<old>\w+)(?::[^\]]*)?\]\]|\$(?P<name>\w+)"
    return re.sub(pattern, value, expr)


def provisioned(datasources: dict) -> dict[str, str]:
    """Data source uid → type."""
    return {
        ds.get("uid"): ds.get("type")
        for ds in datasources.get("datasources") or []
        if isinstance(ds, dict) and ds.get("uid")
    }


def check_datasources(datasources: dict) -> list[str]:
    problems = []
    entries = [ds for ds in datasources.get("datasources") or [] if isinstance(ds, dict)]
    uids = [ds.get("uid") for ds in entries]
    for ds in entries:
        if not ds.get("uid"):
            problems.append(f"datasources.yaml: {ds.get('name')!r} has no uid")
    for uid in sorted({u for u in uids if u and uids.count(u) > 1}):
        problems.append(f"datasources.yaml: uid {uid!r} is provisioned twice")
    known = provisioned(datasources)
    for ds in entries:
        json_data = ds.get("jsonData") or {}
        for field in json_data.get("derivedFields") or []:
            uid = field.get("datasourceUid")
            if uid and uid not in known:
                problems.append(
                    f"datasources.yaml: derived field {field.get('name')!r} of {ds.get('uid')!r} links to "
                    f"unknown data source uid {uid!r}"
                )
        for key in ("tracesToLogsV2", "tracesToLogs", "tracesToMetrics", "serviceMap"):
            uid = (json_data.get(key) or {}).get("datasourceUid")
            if uid and uid not in known:
                problems.append(f"datasources.yaml: {key} of {ds.get('uid')!r} points at unknown data source uid {uid!r}")
    return problems


def _datasource(where: str, ref, known: dict[str, str]) -> list[str]:
    if not isinstance(ref, dict) or not ref.get("uid"):
        return [f"{where}: no data source (an object {{type, uid}} is required), found {ref!r}"]
    uid, kind = ref.get("uid"), ref.get("type")
    if uid not in known:
        return [f"{where}: unknown data source uid {uid!r} (provisioned: {', '.join(sorted(known))})"]
    if kind != known[uid]:
        return [f"{where}: data source {uid!r} has type {known[uid]!r}, not {kind!r}"]
    return []


def _links(panel: dict) -> list[dict]:
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    return list(panel.get("links") or []) + list(defaults.get("links") or [])


def check_dashboard(name: str, board: dict, known: dict[str, str]) -> list[str]:
    problems = []
    if not board.get("uid"):
        problems.append(f"{name}: the dashboard has no uid")
    if not board.get("title"):
        problems.append(f"{name}: the dashboard has no title")
    for variable in (board.get("templating") or {}).get("list") or []:
        if variable.get("type") == "query":
            problems += _datasource(f"{name}: variable {variable.get('name')!r}", variable.get("datasource"), known)
    seen: dict[int, str] = {}
    for panel in walk_panels(board.get("panels")):
        title = panel.get("title") or "(untitled)"
        where = f"{name}: panel {panel.get('id')!r} {title!r}"
        pid = panel.get("id")
        if not isinstance(pid, int) or isinstance(pid, bool):
            problems.append(f"{where}: the id is not an integer")
        elif pid in seen:
            problems.append(f"{where}: duplicate panel id {pid} (also {seen[pid]!r})")
        else:
            seen[pid] = title
        if not isinstance(panel.get("gridPos"), dict):
            problems.append(f"{where}: no gridPos")
        kind = panel.get("type")
        if kind in NO_QUERY:
            continue
        problems += _datasource(where, panel.get("datasource"), known)
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{where}: no targets")
        for target in targets:
            at = f"{where} target {target.get('refId')!r}"
            problems += _datasource(at, target.get("datasource"), known)
            kind_of = (target.get("datasource") or {}).get("type") if isinstance(target.get("datasource"), dict) else None
            if kind_of in ("prometheus", "loki") and not str(target.get("expr") or "").strip():
                problems.append(f"{at}: a {kind_of} target without expr")
        defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
        if kind in NEEDS_UNIT and not defaults.get("unit"):
            problems.append(f"{where}: no unit")
        exprs = " ".join(str(t.get("expr") or "") for t in targets)
        if kind == "timeseries" and LATENCY.search(exprs):
            if not any("jaeger" in str(link.get("url", "")) for link in _links(panel)):
                problems.append(f"{where}: a latency graph without a link to the traces (Jaeger)")
    return problems


def check(texts: dict[str, str], datasources: dict) -> list[str]:
    """Every problem of these dashboard files (name → text) with these data sources."""
    problems = check_datasources(datasources)
    known = provisioned(datasources)
    uids: dict[str, str] = {}
    for name, text in texts.items():
        try:
            board = json.loads(text)
        except json.JSONDecodeError as error:
            problems.append(f"{name}: invalid JSON: {error}")
            continue
        if not isinstance(board, dict):
            problems.append(f"{name}: invalid JSON: not an object")
            continue
        uid = board.get("uid")
        if uid and uid in uids:
            problems.append(f"{name}: duplicate dashboard uid {uid!r} (also {uids[uid]})")
        elif uid:
            uids[uid] = name
        problems += check_dashboard(name, board, known)
    return problems


def problems(root: Path = REPO) -> list[str]:
    try:
        texts = read_texts(root)
        datasources = read_datasources(root)
    except (OSError, yaml.YAMLError) as error:
        return [f"cannot read the Grafana files: {error}"]
    if not texts:
        return [f"no dashboards in {grafana_dir(root) / 'dashboards'}"]
    return check(texts, datasources)


def queries_of(dashboards: dict[str, dict]) -> list[dict]:
    found = []
    for name, board in dashboards.items():
        for panel in walk_panels(board.get("panels")):
            for target in panel.get("targets") or []:
                source = target.get("datasource") or panel.get("datasource") or {}
                kind = source.get("type") if isinstance(source, dict) else None
                if kind in ("prometheus", "loki") and target.get("expr"):
                    found.append({
                        "dashboard": name,
                        "panel": panel.get("title"),
                        "ref": target.get("refId"),
                        "datasource_type": kind,
                        "expr": substitute(target["expr"]),
                    })
    return found


def queries(root: Path = REPO) -> list[dict]:
    """Every Prometheus and Loki query of the dashboards, variables substituted."""
    return queries_of(load_dashboards(root))


def self_test(root: Path) -> list[str]:
    """Break the files in memory in known ways; each break must be reported."""
    texts = read_texts(root)
    datasources = read_datasources(root)
    baseline = check(texts, datasources)
    if baseline:
        return ["the files must be clean before the self-test"]
    # A dashboard with a latency graph, so that every kind of break applies to it.
    name = next((n for n, t in texts.items() if LATENCY.search(t)), next(iter(texts)))
    board = json.loads(texts[name])

    def with_board(change) -> dict[str, str]:
        changed = copy.deepcopy(board)
        change(changed)
        return {**texts, name: json.dumps(changed)}

    def queried(b: dict) -> list[dict]:
        return [p for p in walk_panels(b["panels"]) if p.get("type") not in NO_QUERY]

    def duplicate_id(b):
        panels = walk_panels(b["panels"])
        panels[1]["id"] = panels[0]["id"]

    def unknown_uid(b):
        queried(b)[0]["targets"][0]["datasource"]["uid"] = "no-such-source"

    def panel_without_datasource(b):
        del queried(b)[0]["datasource"]

    def target_without_expr(b):
        target = next(t for p in queried(b) for t in p["targets"] if t["datasource"]["type"] == "prometheus")
        target["expr"] = " "

    def no_unit(b):
        next(p for p in queried(b) if p["type"] in NEEDS_UNIT)["fieldConfig"]["defaults"].pop("unit")

    def latency_without_link(b):
        for p in queried(b):
            p.pop("links", None)
            p["fieldConfig"]["defaults"].pop("links", None)

    def derived_field_elsewhere(ds):
        loki = next(d for d in ds["datasources"] if d["type"] == "loki")
        loki["jsonData"]["derivedFields"][0]["datasourceUid"] = "no-such-source"

    cases = [
        ("a duplicate panel id", with_board(duplicate_id), datasources, "duplicate panel id"),
        ("an unknown data source uid", with_board(unknown_uid), datasources, "unknown data source uid"),
        ("a panel without data source", with_board(panel_without_datasource), datasources, "no data source"),
        ("a Prometheus target without expr", with_board(target_without_expr), datasources, "without expr"),
        ("a graph without unit", with_board(no_unit), datasources, "no unit"),
        ("invalid JSON", {**texts, name: texts[name][:-3]}, datasources, "invalid JSON"),
        ("a duplicate dashboard uid", {**texts, "copy-" + name: texts[name]}, datasources, "duplicate dashboard uid"),
        ("a latency graph without trace link", with_board(latency_without_link), datasources, "without a link"),
    ]
    changed_ds = copy.deepcopy(datasources)
    derived_field_elsewhere(changed_ds)
    cases.append(("a derived field to an unknown uid", texts, changed_ds, "derived field"))
    missed = []
    for what, case_texts, case_ds, expected in cases:
        found = check(case_texts, case_ds)
        if not any(expected in p for p in found):
            missed.append(f"self-test: {what} was not caught (expected {expected!r}, got {found})")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=REPO, help="the repository (or the mon-grafana folder)")
    parser.add_argument("--self-test", action="store_true", help="also check that each check can fail")
    parser.add_argument("--queries", action="store_true", help="print the queries as JSON lines")
    args = parser.parse_args()

    found = problems(args.root)
    if not found and args.self_test:
        found = self_test(args.root)
    for problem in found:
        print(problem)
    if found:
        return 1
    dashboards = load_dashboards(args.root)
    listed = queries_of(dashboards)
    if args.queries:
        for query in listed:
            print(json.dumps(query))
        return 0
    panels = sum(
        1 for board in dashboards.values() for p in walk_panels(board.get("panels")) if p.get("type") != "row"
    )
    print(f"ok: {len(dashboards)} dashboards, {panels} panels, {len(listed)} queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
