"""The Grafana dashboard of docker-compose.kafka.yml (infra/grafana/).

Structure, without a broker: the dashboard JSON loads, every panel, annotation and variable
names a provisioned data source by uid and type, and the compose file mounts the provisioning
and dashboards directories that exist, with the plugin and image pinned.

Against a real worker (embedded broker, chDB, the fake backend; a stable and a shadow version,
20 commits with Conventional Commits messages): every Prometheus metric an expression names is
a `# TYPE` family of the worker's /metrics (and the labels it groups by are labels of that
family); every SQL query of a panel, the annotation and the variables runs on the store once its
macros are expanded the way the ClickHouse plugin expands them, returns the columns its panel
reads, and the quality panels show the numbers the fake versions were built to produce.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
import yaml

from infra.procs import read_json
from schemas import ChangedFile, CommitEvent
from streams import names
from streams.services.bus import submit
from streams.services.common import publish

from .conftest import make_stack

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "infra" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "reviewbus.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
COMPOSE = ROOT / "docker-compose.kafka.yml"
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"
REFERENCE = re.compile(r"^\$\{[A-Za-z_]\w*(?::?[-?+][^}]*)?\}$")


# ---- reading the files ----------------------------------------------------------------------


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def datasources() -> dict[str, dict[str, Any]]:
    """The provisioned data sources by uid."""
    config = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    return {ds["uid"]: ds for ds in config["datasources"]}


def uid_of(kind: str) -> str:
    (uid,) = [u for u, ds in datasources().items() if ds["type"] == kind]
    return uid


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' collapsed panels included; rows themselves left out."""
    out = []
    for p in dashboard["panels"]:
        out += [p] if p.get("type") != "row" else p.get("panels", [])
    return out


def panel(dashboard: dict[str, Any], title: str) -> dict[str, Any]:
    (found,) = [p for p in all_panels(dashboard) if p["title"] == title]
    return found


def targets(dashboard: dict[str, Any], uid: str) -> list[tuple[dict, dict]]:
    """(panel, target) of every panel query on the data source `uid`."""
    return [(p, t) for p in all_panels(dashboard) for t in p.get("targets", [])
            if (t.get("datasource") or p.get("datasource") or {}).get("uid") == uid]


def sql_queries(dashboard: dict[str, Any]) -> list[tuple[str, str, dict, int | None]]:
    """(where, rawSql, owner, format) of every ClickHouse query: panels (format 0 is a time
    series, 1 a table), the annotations and the variables (format None)."""
    ch = uid_of(CLICKHOUSE_PLUGIN)
    out = [(f"panel {p['title']!r} {t['refId']}", t["rawSql"], p, t["format"])
           for p, t in targets(dashboard, ch)]
    for a in dashboard["annotations"]["list"]:
        if a["datasource"].get("uid") == ch:
            out.append((f"annotation {a['name']!r}", a["target"]["rawSql"], a, None))
    for v in dashboard["templating"]["list"]:
        if (v.get("datasource") or {}).get("uid") == ch:
            out.append((f"variable {v['name']!r}", v["query"]["rawSql"], v, None))
    return out


def service_env(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for item in service.get("ports", []) + service.get("expose", []):
        ports.add(int(str(item).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of each short-syntax volume."""
    out = []
    for v in service.get("volumes", []):
        source, target, *mode = str(v).split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


# ---- PromQL and the exposition format -------------------------------------------------------

PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                "group_right", "bool", "offset", "inf", "nan"}
CLAUSE = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) that a PromQL expression references."""
    labels: set[str] = set()
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    for m in re.finditer(r"\{([^}]*)\}", text):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", m.group(1)))
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    for m in CLAUSE.finditer(text):
        labels |= set(re.findall(r"[A-Za-z_]\w*", m.group(2)))
    text = CLAUSE.sub(" ", text)
    text = re.sub(r"\$\{?\w+(?::\w+)?\}?", " ", text)  # Grafana variables
    text = re.sub(r"(?<![\w:.])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?![\w:])", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", text):
        if text[m.end():].lstrip().startswith("(") or m.group(0).lower() in PROMQL_WORDS:
            continue  # a function or an aggregation
        names.add(m.group(0))
    return names, labels


def exposition(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """From the Prometheus text format: {series name -> its family}, {family -> label names
    of its samples}. A family is a `# TYPE name type` line; the names a query may use follow
    from the type (a histogram's _bucket, _count and _sum)."""
    series: dict[str, str] = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        if kind == "histogram":
            suffixes = ("_bucket", "_count", "_sum")
        elif kind == "summary":
            suffixes = ("", "_count", "_sum")
        else:  # counter (its TYPE line already ends in _total), gauge, untyped
            suffixes = ("",)
        series.update({name + s: name for s in suffixes})
    labels: dict[str, set[str]] = {}
    for m in re.finditer(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})? \S+", text, re.MULTILINE):
        family = series.get(m.group(1))
        if family is not None:
            labels.setdefault(family, set()).update(re.findall(r'(\w+)="', m.group(2) or ""))
    return series, labels


def test_promql_names():
    names, labels = promql_names(
        'histogram_quantile(0.99, sum by (le, version) (rate(a_bucket{x="y{z}", w!~"$v"}'
        '[$__rate_interval]))) / on(version) group_left b:rec offset 5m > 1e3 and sum(c) by (d)')
    assert names == {"a_bucket", "b:rec", "c"}
    assert labels == {"le", "version", "x", "w", "d"}


# ---- the ClickHouse plugin's macros ---------------------------------------------------------


VARIABLE = re.compile(r"\$\{([A-Za-z]\w*)(?::(\w+))?\}|\$([A-Za-z]\w*)")


def interpolate(sql: str, variables: dict[str, list[str]]) -> str:
    """Grafana's interpolation with the ClickHouse plugin's format function: a multi-value
    (or :singlequote) becomes 'a','b'; a single value goes in as it is."""
    def one(m: re.Match) -> str:
        name, fmt = m.group(1) or m.group(3), m.group(2)
        if name not in variables:
            return m.group(0)  # left for the check below
        values = variables[name]
        if fmt == "singlequote" or (fmt is None and len(values) > 1):
            return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
        assert fmt is None, f"variable format {fmt!r} is not emulated"
        return values[0]

    return VARIABLE.sub(one, sql)


def expand(sql: str, variables: dict[str, list[str]], interval_s: int = 60,
           span_s: int = 86_400) -> str:
    """sql as the ClickHouse plugin sends it to the server: variables interpolated, then the
    plugin's macros (pkg/macros of grafana/clickhouse-datasource) over the time range
    [now - span_s, now + 60 s] with the given interval."""
    now = int(time.time())
    start, end = now - span_s, now + 60
    with_args = {
        "timeFilter": lambda c: f"{c} >= toDateTime({start}) AND {c} <= toDateTime({end})",
        "timeFilter_ms": lambda c: (f"{c} >= fromUnixTimestamp64Milli({start * 1000}) AND "
                                    f"{c} <= fromUnixTimestamp64Milli({end * 1000})"),
        "timeInterval": lambda c: (f"toStartOfInterval(toDateTime({c}), "
                                   f"INTERVAL {interval_s} second)"),
        "timeInterval_ms": lambda c: (f"toStartOfInterval(toDateTime64({c}, 3), "
                                      f"INTERVAL {interval_s * 1000} millisecond)"),
    }
    plain = {"fromTime": f"toDateTime({start})", "toTime": f"toDateTime({end})",
             "fromTime_ms": f"fromUnixTimestamp64Milli({start * 1000})",
             "toTime_ms": f"fromUnixTimestamp64Milli({end * 1000})",
             "interval_s": str(interval_s)}
    sql = interpolate(sql, variables)
    sql = re.sub(r"\$__(\w+)\(\s*([^()]*?)\s*\)", lambda m: with_args[m.group(1)](m.group(2)),
                 sql)
    sql = re.sub(r"\$__(\w+)\b", lambda m: plain[m.group(1)], sql)
    assert "$" not in sql, f"a macro or variable is left unexpanded: {sql}"
    return sql


def test_expand():
    sql = ("SELECT $__timeInterval(t) AS time FROM x WHERE $__timeFilter(t) AND v IN "
           "(${version:singlequote}) AND w IN ($version) AND k = '${task}' AND $__interval_s > 0")
    out = expand(sql, {"version": ["a", "b'c"], "task": ["code-review"]}, interval_s=30)
    assert "toStartOfInterval(toDateTime(t), INTERVAL 30 second) AS time" in out
    assert re.search(r"WHERE t >= toDateTime\(\d+\) AND t <= toDateTime\(\d+\) AND", out)
    assert "v IN ('a','b\\'c') AND w IN ('a','b\\'c') AND k = 'code-review' AND 30 > 0" in out
    with pytest.raises(KeyError):
        expand("SELECT $__unknownMacro", {})
    with pytest.raises(AssertionError):
        expand("SELECT ${other}", {})


# ---- structure ------------------------------------------------------------------------------


def test_dashboard_names_provisioned_datasources():
    dashboard = load_dashboard()
    sources = datasources()
    assert dashboard["uid"] and dashboard["title"]
    panels = all_panels(dashboard)
    ids = [p["id"] for p in dashboard["panels"]] + [
        c["id"] for p in dashboard["panels"] for c in p.get("panels", [])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    used: list[tuple[str, dict]] = []
    for p in panels:
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            used.append((f"panel {p['title']!r}", t.get("datasource") or p.get("datasource")))
            if (t.get("datasource") or p["datasource"])["type"] == "prometheus":
                assert t["expr"].strip(), p["title"]
            else:
                assert t["editorType"] == "sql" and t["rawSql"].strip(), p["title"]
                assert t["format"] in (0, 1), p["title"]  # time series, table
    for a in dashboard["annotations"]["list"]:
        if not a.get("builtIn"):
            used.append((f"annotation {a['name']!r}", a["datasource"]))
    for v in dashboard["templating"]["list"]:
        used.append((f"variable {v['name']!r}", v["datasource"]))
    for where, ds in used:
        assert isinstance(ds, dict) and ds.get("uid") in sources, f"{where}: {ds}"
        assert ds["type"] == sources[ds["uid"]]["type"], f"{where}: {ds}"
    kinds = {ds["type"] for _, ds in used}
    assert kinds == {"prometheus", CLICKHOUSE_PLUGIN}
    assert any(a["datasource"]["type"] == CLICKHOUSE_PLUGIN
               for a in dashboard["annotations"]["list"]), "lifecycle annotations"
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"version"}


def test_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for p in load_dashboard()["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]


def test_datasources_point_at_the_compose_services():
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    grafana_env = service_env(services["grafana"])
    prom = datasources()[uid_of("prometheus")]
    url = urlsplit(prom["url"])
    assert url.hostname == "prometheus" and url.hostname in services
    assert url.port in container_ports(services["prometheus"])

    ch = datasources()[uid_of(CLICKHOUSE_PLUGIN)]
    data = ch["jsonData"]
    assert data["host"] == "clickhouse" and data["host"] in services
    assert data["protocol"] == "http" and int(data["port"]) in container_ports(services["clickhouse"])
    # Grafana reads as the read-only user the server is given, never as the workers' user.
    clickhouse = services["clickhouse"]
    assert data["username"] != service_env(clickhouse)["CLICKHOUSE_USER"]
    users = ROOT / "infra" / "clickhouse-server" / "users.d" / "grafana.xml"
    mounted = {v.split(":")[1]: v.split(":")[0] for v in clickhouse["volumes"] if ":" in v}
    assert (ROOT / mounted["/etc/clickhouse-server/users.d/grafana.xml"]).resolve() == users
    user = ElementTree.parse(users).getroot().find(f"users/{data['username']}")
    assert user is not None, f"no ClickHouse user {data['username']!r} in {users.name}"
    profile = ElementTree.parse(users).getroot().find(f"profiles/{user.findtext('profile')}")
    assert profile.findtext("readonly") in ("1", "2")
    assert user.find("password").get("from_env") in service_env(clickhouse)
    # The password comes from Grafana's environment, which the compose file fills from the
    # operator's; neither file holds it, and it is not the workers' password.
    m = re.fullmatch(r"\$(?:__env)?\{(\w+)\}|\$(\w+)", ch["secureJsonData"]["password"])
    assert m, "the ClickHouse password must be an environment reference"
    variable = m.group(1) or m.group(2)
    assert REFERENCE.match(grafana_env[variable])
    assert user.find("password").get("from_env") in grafana_env[variable]
    assert "CLICKHOUSE_PASSWORD" not in grafana_env


def test_compose_runs_grafana_with_the_provisioning():
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    grafana = compose["services"]["grafana"]
    env = service_env(grafana)
    assert re.fullmatch(r"grafana/grafana:11\.\d+\.\d+", grafana["image"]), "pin Grafana 11.x.y"
    assert re.fullmatch(rf"{CLICKHOUSE_PLUGIN} \d+\.\d+\.\d+", env["GF_INSTALL_PLUGINS"])
    assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", env["GF_SECURITY_ADMIN_PASSWORD"]), "required"
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert {"prometheus", "clickhouse"} <= set(grafana["depends_on"])
    assert "grafana-data" in compose["volumes"]

    targets = {target: (ROOT / source, mode) for source, target, mode in mounts(grafana)}
    provisioning = targets["/etc/grafana/provisioning"]
    assert provisioning == (GRAFANA / "provisioning", "ro")
    assert (provisioning[0] / "datasources" / DATASOURCES.name).is_file()
    assert (provisioning[0] / "dashboards" / PROVIDERS.name).is_file()
    (provider,) = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    source, mode = targets[provider["options"]["path"]]
    assert mode == "ro" and (source / DASHBOARD.name).samefile(DASHBOARD)
    home = PurePosixPath(env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert targets[str(home.parent)][0] / home.name == DASHBOARD.parent / home.name
    assert (DASHBOARD.parent / home.name).is_file()


# ---- against a real worker ------------------------------------------------------------------

STABLE, SHADOW = "dash-stable", "dash-shadow"
CONFIG = {
    "task": "code-review",
    "versions": [
        {"id": STABLE, "backend": "fake", "initial_state": "stable",
         "params": {"label": "feature"}},
        {"id": SHADOW, "backend": "fake", "initial_state": "shadow",
         "params": {"label": "feature", "label_by_path": {"docs/": "docs"}}},
    ],
    "rotation": {"interval_s": 3600},  # nothing moves while the test reads
    "quarantine": {"triggers": []},
    "inference": {"batch_size": 4, "batch_wait_s": 0.02},
}
COMMITS = 20  # 14 `feat:` under src/, 6 `docs:` under docs/ (i % 10 in 0, 3, 6)


def commits() -> list[CommitEvent]:
    out = []
    for i in range(COMMITS):
        docs = i % 10 in (0, 3, 6)
        path = f"docs/page{i}.md" if docs else f"src/mod{i}.py"
        out.append(CommitEvent(
            repo="org/dash", sha=hashlib.sha1(f"dash{i}".encode()).hexdigest(),
            message=f"{'docs' if docs else 'feat'}: change {i}", diff=f"+x = {i}\n",
            files=[ChangedFile(path=path, added=1, deleted=0, content=f"x = {i}\n")]))
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker):
    s = make_stack(tmp_path_factory, broker, CONFIG, "grafana")
    try:
        asyncio.run(submit(s.settings, commits(), wait=True, timeout=120))
        # `stable` accuracy 14/20, `shadow` 20/20, agreement 14/20: once every row is stored.
        s.wait_for("SELECT count() AS n FROM interactions FINAL",
                   lambda rows: rows[0]["n"] == 2 * COMMITS)
        s.wait_for("SELECT count() AS n FROM shadow_comparisons FINAL",
                   lambda rows: rows[0]["n"] == COMMITS)
        s.wait_for("SELECT uniqExact(version_id) AS n FROM lifecycle FINAL",
                   lambda rows: rows[0]["n"] == 2)
        # One input intake cannot read: a dead letter for the DLQ panels.
        asyncio.run(publish(s.settings, names.topic(s.settings, "commits"),
                            [(b"org/dash", b"not json")]))
        s.wait_for("SELECT count() AS n FROM dead_letters FINAL", lambda rows: rows[0]["n"] >= 1)
        yield s
    finally:
        s.stop()


VARIABLES = {"task": ["code-review"], "version": sorted([STABLE, SHADOW])}  # "All"


def run(stack, sql: str, **kw) -> list[dict]:
    return stack.query(expand(sql, VARIABLES, **kw))


@pytest.mark.integration
def test_every_prometheus_metric_is_exported_by_the_worker(stack):
    web_url = read_json(stack.home / "worker.json")["web_url"]
    with urllib.request.urlopen(web_url + "/metrics", timeout=10) as resp:
        series, labels = exposition(resp.read().decode())
    assert series, "no # TYPE line in /metrics"
    dashboard = load_dashboard()
    seen: set[str] = set()
    for p, t in targets(dashboard, uid_of("prometheus")):
        names, used = promql_names(t["expr"])
        assert names, f"{p['title']!r}: no metric in {t['expr']!r}"
        missing = names - set(series)
        assert not missing, f"{p['title']!r}: {sorted(missing)} not exported by the worker"
        seen |= names
        used |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")))
        families = {series[n] for n in names}
        have = set().union(*(labels.get(f, set()) for f in families))
        if have:  # the family has samples: the labels a query groups by must be theirs
            assert used <= have, f"{p['title']!r}: labels {sorted(used - have)} not on {families}"
    # What the issue asks the dashboard to show, from Prometheus.
    assert {"reviewbus_inference_seconds_bucket", "reviewbus_inference_seconds_count",
            "reviewbus_version_traffic_percent", "reviewbus_dead_letters_total",
            "reviewbus_timer_errors_total", "reviewbus_faust_guard_firings_total"} <= seen
    # And the worker did answer and dead-letter: those families have samples.
    assert {"version", "status", "le"} <= labels["reviewbus_inference_seconds"]
    assert labels["reviewbus_dead_letters_total"] == {"source"}


def expected_columns(where: str, owner: dict, fmt: int | None) -> set[str]:
    """Columns a query's panel reads: the time column of a time series, the fields a table's
    overrides name, the labels a display name uses; an annotation's time and title."""
    if where.startswith("annotation"):
        return {"time", "title", "text", "tags"}
    cols = {"time"} if fmt == 0 else set()
    config = owner.get("fieldConfig", {})
    cols |= set(re.findall(r"__field\.labels\.(\w+)", config.get("defaults", {})
                           .get("displayName", "")))
    cols |= {o["matcher"]["options"] for o in config.get("overrides", [])
             if o["matcher"]["id"] == "byName"}
    return cols


@pytest.mark.integration
def test_every_sql_query_runs_on_the_store(stack):
    dashboard = load_dashboard()
    queries = sql_queries(dashboard)
    assert len(queries) >= 8
    for where, raw, owner, fmt in queries:
        try:
            rows = run(stack, raw)
        except Exception as exc:
            raise AssertionError(f"{where} does not run on chDB: {exc}") from exc
        assert rows, f"{where} returned no rows"  # every table read has rows of the fixture
        columns = set(rows[0])
        expected = expected_columns(where, owner, fmt)
        assert expected <= columns, f"{where}: columns {sorted(columns)}, wants {sorted(expected)}"
        if fmt == 0:  # time series: a time column, numeric values, in time order
            assert any(isinstance(v, (int, float)) and not isinstance(v, bool)
                       for row in rows for k, v in row.items() if k != "time"), where
            times = [r["time"] for r in rows]
            assert times == sorted(times), f"{where}: not in time order"
        if where.startswith("variable"):
            assert len(columns) == 1, where


def one_bucket(stack, title: str) -> list[dict]:
    """The rows of a panel's query with one interval (10**9 s) over the whole range."""
    (target,) = panel(load_dashboard(), title)["targets"]
    return run(stack, target["rawSql"], interval_s=10**9)


def by_version(rows: list[dict]) -> dict[str, dict]:
    assert len({r["version_id"] for r in rows}) == len(rows), rows
    return {r["version_id"]: r for r in rows}


@pytest.mark.integration
def test_quality_panels_show_the_known_numbers(stack):
    accuracy = by_version(one_bucket(stack, "Change-type accuracy"))
    assert set(accuracy) == {STABLE, SHADOW}
    assert accuracy[STABLE]["accuracy"] == pytest.approx(14 / 20)
    assert accuracy[SHADOW]["accuracy"] == pytest.approx(1.0)

    agreement = by_version(one_bucket(stack, "Agreement with stable"))
    assert set(agreement) == {SHADOW}
    assert agreement[SHADOW]["agreement"] == pytest.approx(14 / 20)

    table = by_version(one_bucket(stack, "Version comparison"))
    assert {v: (r["n"], r["error_rate"]) for v, r in table.items()} == {
        STABLE: (COMMITS, 0), SHADOW: (COMMITS, 0)}
    assert table[STABLE]["accuracy"] == pytest.approx(0.7)
    assert table[SHADOW]["accuracy"] == pytest.approx(1.0)
    assert table[STABLE]["agreement"] is None
    assert table[SHADOW]["agreement"] == pytest.approx(0.7)
    assert table[STABLE]["p50_ms"] <= table[STABLE]["p99_ms"]

    rows = one_bucket(stack, "Results by version (store)")
    assert {r["series"]: r["results"] for r in rows} == {
        f"{STABLE} primary": COMMITS, f"{SHADOW} shadow": COMMITS}


@pytest.mark.integration
def test_lifecycle_annotations_and_variables(stack):
    dashboard = load_dashboard()
    (annotation,) = [a for a in dashboard["annotations"]["list"]
                     if a["datasource"]["type"] == CLICKHOUSE_PLUGIN]
    rows = run(stack, annotation["target"]["rawSql"])
    titles = {r["title"] for r in rows}
    assert {f"{STABLE}: register -> stable", f"{SHADOW}: register -> shadow"} <= titles
    assert all(r["tags"].split(",")[0] in (STABLE, SHADOW) for r in rows)

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert [r["task"] for r in run(stack, variables["task"]["query"]["rawSql"])] == ["code-review"]
    versions = run(stack, variables["version"]["query"]["rawSql"])
    assert sorted(r["version_id"] for r in versions) == VARIABLES["version"]
    # Only one version picked: the panels follow it.
    accuracy = panel(dashboard, "Change-type accuracy")["targets"][0]["rawSql"]
    only = stack.query(expand(accuracy, {**VARIABLES, "version": [SHADOW]}, interval_s=10**9))
    assert [r["version_id"] for r in only] == [SHADOW]
