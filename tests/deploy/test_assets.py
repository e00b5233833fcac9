"""deploy/grafana and deploy/prometheus against Sentinel's real metrics: the dashboard imports (datasource
input and variable), every panel uses the datasource variable, and every metric name in a dashboard
query or an alert rule is one Sentinel exports (with the `_bucket`/`_sum`/`_count`/`_total` suffixes
Prometheus stores). With a `prometheus` binary, the queries also run against a real server scraping
Sentinel's exposition."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import DEPLOY, populated_metrics

DASHBOARD = DEPLOY / "grafana" / "sentinel-dashboard.json"
RULES = DEPLOY / "prometheus" / "sentinel-rules.yml"
DS_REF = {"type": "prometheus", "uid": "${datasource}"}

# Families the dashboard must chart (the panels the deployment promises).
CHARTED = {
    "sentinel_series_current",
    "sentinel_series_baseline",
    "sentinel_series_threshold",
    "sentinel_series_ratio",
    "sentinel_streak_length",
    "sentinel_alerts_firing",
    "sentinel_alert_events_total",
    "sentinel_notifications_total",
    "sentinel_notification_delay_seconds_bucket",
    "sentinel_outbox_pending",
    "sentinel_poll_duration_seconds_bucket",
    "sentinel_source_up",
    "sentinel_source_lag_seconds",
    "sentinel_records_ingested_total",
    "sentinel_records_rejected_total",
    "sentinel_records_late_total",
}

# --- PromQL metric names ---------------------------------------------------------------------------

_NAME_REGEX_MATCHER = re.compile(r"""__name__\s*=~?\s*"([^"]*)\"""")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC = re.compile(r"(?<![A-Za-z0-9_:$])(sentinel_[A-Za-z0-9_:]*|up)(?=\s*[{\[),]|\s|$)")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana `label_values(...)` / `query_result(...)`).

    Names are identifiers starting with `sentinel_` (or `up`) followed by `{`, `[`, `)`, `,`, whitespace
    or the end; names inside `__name__="a"` / `__name__=~"a|b"` matchers count too. Other string
    literals are removed first, so a label value such as `job="sentinel_x"` is not taken for a metric.
    """
    names: set[str] = set()
    for m in _NAME_REGEX_MATCHER.finditer(expr):
        names.update(alt.strip("()^$") for alt in m.group(1).split("|"))
    names.update(_METRIC.findall(_STRING.sub('""', expr)))
    return names


def test_metric_names_extraction() -> None:
    assert metric_names('up{job="sentinel"} == 0 or absent(up{job="sentinel"})') == {"up"}
    assert metric_names("sum by (le) (rate(sentinel_poll_duration_seconds_bucket[5m]))") == {
        "sentinel_poll_duration_seconds_bucket"
    }
    assert metric_names('sentinel_a > 1 unless on (instance) sentinel_b{x="sentinel_c"} offset 5m') == {
        "sentinel_a",
        "sentinel_b",
    }
    assert metric_names('label_values({__name__=~"sentinel_x|sentinel_y", rule=~"$rule"}, type)') == {
        "sentinel_x",
        "sentinel_y",
    }
    assert metric_names("label_values(sentinel_build_info, job)") == {"sentinel_build_info"}
    assert metric_names("max_over_time(uptime[5m]) + group_up") == set()
    assert metric_names("sentinel_source_lag_seconds\n") == {"sentinel_source_lag_seconds"}


def queryable_names(exposition: str) -> set[str]:
    """The series names Prometheus stores for this exposition: a histogram `h` becomes `h_bucket`,
    `h_sum`, `h_count`; a counter is stored as `<name>_total`; a gauge under its own name."""
    names: set[str] = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE):
        name, kind = m.groups()
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif kind == "summary":
            names |= {name, f"{name}_sum", f"{name}_count"}
        elif kind == "counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        else:
            names.add(name)
    return names


def sample_names(exposition: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]", exposition, flags=re.MULTILINE)}


def test_suffix_mapping(rendered_metrics: str) -> None:
    names = queryable_names(rendered_metrics)
    assert "sentinel_notification_delay_seconds_bucket" in names
    assert "sentinel_notification_delay_seconds" not in names  # a histogram is not a series by itself
    assert "sentinel_notifications_total" in names and "sentinel_notifications" not in names
    # Every queryable name really has samples (the population helper reached every family).
    assert names <= sample_names(rendered_metrics)


# --- the dashboard ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def variable_query(var: dict[str, Any]) -> str:
    query = var.get("query")
    return str(query["query"] if isinstance(query, dict) else query)


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    exprs += [variable_query(v) for v in variables(dashboard).values() if v["type"] == "query"]
    return exprs


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [str(r["expr"]) for g in doc["groups"] for r in g["rules"]]


def test_dashboard_header(dashboard: dict[str, Any]) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["uid"] and dashboard["title"] and dashboard["id"] is None
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["type"] == "datasource" and ds_input["pluginId"] == "prometheus"
    assert ds_input["name"] == "DS_PROMETHEUS"


def test_datasource_variable(dashboard: dict[str, Any]) -> None:
    ds = variables(dashboard)["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == "${DS_PROMETHEUS}"  # import fills in the chosen Prometheus


@pytest.mark.parametrize("name", ["rule", "type", "channel"])
def test_label_variables(dashboard: dict[str, Any], name: str) -> None:
    var = variables(dashboard)[name]
    assert var["type"] == "query" and var["datasource"] == DS_REF
    query = variable_query(var)
    assert re.fullmatch(rf"label_values\(.+, {name}\)", query), query
    assert var["multi"] and var["includeAll"] and var["allValue"] == ".*"
    targets = [t["expr"] for p in all_panels(dashboard) for t in p.get("targets", [])]
    assert any(f'{name}=~"${name}"' in e for e in targets), f"no panel filters on ${name}"


def test_every_panel_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DS_REF, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DS_REF) == DS_REF, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_layout(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_charts_every_promised_family(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs(dashboard)))
    assert used >= CHARTED, f"not charted: {sorted(CHARTED - used)}"


def test_every_metric_in_dashboard_and_rules_exists(dashboard: dict[str, Any], rendered_metrics: str) -> None:
    known = queryable_names(rendered_metrics) | {"up"}
    for source, exprs in (("dashboard", dashboard_exprs(dashboard)), ("sentinel-rules.yml", rule_exprs())):
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"{source}: no metric found in {expr!r}"
            unknown = names - known
            assert not unknown, f"{source}: {sorted(unknown)} not exported by Sentinel, in {expr!r}"


# --- a real Prometheus scraping Sentinel's exposition ----------------------------------------------

GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$job": ".*",
    "$instance": ".*",
    "$rule": ".*",
    "$type": ".*",
    "$channel": ".*",
}


def as_promql(expr: str) -> str:
    for var, value in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(var, value)
    assert "$" not in expr, expr
    return expr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Exposition(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else f"{base}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:  # 400 bad_data: the body says why
        return json.load(exc)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.skip("the prometheus server is not installed (Debian package: prometheus)")
    _Exposition.body = populated_metrics().render()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tmp_path_factory.mktemp("prometheus")
    shutil.copy(RULES, work / "sentinel-rules.yml")
    (work / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["sentinel-rules.yml"],
                "scrape_configs": [
                    {"job_name": "sentinel", "static_configs": [{"targets": [f"127.0.0.1:{server.server_address[1]}"]}]}
                ],
            }
        ),
        encoding="utf-8",
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # until a few scrapes are in, so rate() over 1m has samples to work with
            assert proc.poll() is None, (work / "prometheus.log").read_text(errors="replace")
            try:
                result = _api(base, "/api/v1/query", query='count_over_time(up{job="sentinel"}[1m])')["data"]["result"]
                if result and float(result[0]["value"][1]) >= 4:
                    break
            except (OSError, KeyError, ValueError):
                pass
            assert time.monotonic() < deadline, "prometheus did not scrape the exposition in time"
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_dashboard_queries_return_data(prometheus: str, dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            query = as_promql(target["expr"])
            answer = _api(prometheus, "/api/v1/query", query=query)
            assert answer["status"] == "success", f"{panel['title']}: {answer.get('error')} in {query}"
            assert answer["data"]["result"], f"{panel['title']}: no data for {query}"


@pytest.mark.slow
def test_variable_queries_find_their_label(prometheus: str, dashboard: dict[str, Any]) -> None:
    for name, var in variables(dashboard).items():
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable_query(var))
        assert m, variable_query(var)
        selector, label = as_promql(m.group(1)), m.group(2)
        answer = _api(prometheus, "/api/v1/series", **{"match[]": selector})
        assert answer["status"] == "success", f"${name}: {answer.get('error')}"
        assert any(label in series for series in answer["data"]), f"${name}: no series with {label} for {selector}"


@pytest.mark.slow
def test_alert_rules_evaluate_on_real_series(prometheus: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        groups = _api(prometheus, "/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r["health"] != "unknown" for r in rules):
            break
        assert time.monotonic() < deadline, "rules were not evaluated"
        time.sleep(0.5)
    assert len(rules) == 8
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    # The populated exposition has one failed message on a new series: the first-failure clause fires.
    alerts = _api(prometheus, "/api/v1/alerts")["data"]["alerts"]
    failing = [a for a in alerts if a["labels"]["alertname"] == "SentinelDeliveriesFailing"]
    assert [a["labels"]["receiver"] for a in failing] == ["cs-team"]
    assert failing[0]["state"] == "firing"
