"""The Grafana dashboard, its provisioning and the compose services that run them.

Every PromQL expression on the dashboard must select only series that the
worker's /metrics page exports: the pipeline's metrics from
mitigate.telemetry, and Faust's from faust.sensors.prometheus with the name
prefix "faust" that mitigate.web passes. docker-compose.yml must wire
Prometheus and Grafana to the files under config/.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import faust
import pytest
import yaml
from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mitigate.automation import MetricsSettings
from mitigate.models import ActionCommand, ActionResult, DecisionRecord, Lineage, PlanControl, ReviewRequest
from mitigate.telemetry import Telemetry
from mitigate.web import add_pages

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = ROOT / "config" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = ROOT / "config" / "grafana"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
DASHBOARD_FILE = DASHBOARDS_DIR / "mitigate.json"
DATASOURCE_FILE = PROVISIONING_DIR / "datasources" / "prometheus.yaml"
PROVIDER_FILE = PROVISIONING_DIR / "dashboards" / "mitigate.yaml"

NOW = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
FAUST_PREFIX = "faust"
PANEL_TYPES = {"timeseries", "stat", "bargauge"}
GRID_COLUMNS = 24

# The sample names each metric type exports (prometheus_client 0.26, with
# *_created series turned off by mitigate.telemetry).
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}

# Series that the dashboard must show: a panel for each of these.
REQUIRED_SERIES = {
    "mitigate_anomalies_total",
    "mitigate_dead_letters_total",
    "mitigate_incidents_opened_total",
    "mitigate_decisions_total",
    "mitigate_review_requests_total",
    "mitigate_commands_total",
    "mitigate_results_total",
    "mitigate_verdicts_total",
    "mitigate_plans_completed_total",
    "mitigate_signal_judgements_total",
    "mitigate_cost_total",
    "mitigate_pending_reviews",
    "mitigate_review_wait_seconds_bucket",
    "mitigate_event_to_command_seconds_bucket",
    "mitigate_ingest_to_command_seconds_bucket",
    "mitigate_time_to_containment_seconds_bucket",
    "faust_topic_partition_end_offset",
    "faust_topic_partition_offset_commited",
}

# Histograms and the quantiles their panels must show.
REQUIRED_QUANTILES = {
    "mitigate_event_to_command_seconds_bucket": {"0.5", "0.9", "0.99"},
    "mitigate_ingest_to_command_seconds_bucket": {"0.5", "0.9", "0.99"},
    "mitigate_time_to_containment_seconds_bucket": {"0.5", "0.9"},
    "mitigate_review_wait_seconds_bucket": {"0.5", "0.9"},
}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                   "offset", "inf", "nan"}
STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
# An identifier that does not continue a number, a duration or a Grafana variable such as $__range.
IDENTIFIER = re.compile(r"(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*")
SELECTOR = re.compile(r"(?<![A-Za-z0-9_:.$])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')


# PromQL


def metric_names(expression: str) -> set[str]:
    """Extract the metric names that a PromQL expression selects.

    Label matchers, string literals, range and subquery durations and label
    lists (by, without, on, ignoring, group_left, group_right) are removed
    first. An identifier followed by "(" is a function or aggregation.
    """
    text = STRING_LITERAL.sub('""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = LABEL_LIST.sub(" ", text)
    names = set()
    for match in IDENTIFIER.finditer(text):
        if text[match.end():].lstrip().startswith("("):
            continue
        if match.group().lower() in PROMQL_KEYWORDS:
            continue
        names.add(match.group())
    return names


def grouping_labels(expression: str) -> set[str]:
    """Return the labels named in the by and without clauses of a PromQL expression."""
    labels: set[str] = set()
    for keyword, names in LABEL_LIST.findall(expression):
        if keyword in ("by", "without"):
            labels.update(name.strip() for name in names.split(",") if name.strip())
    return labels


def equality_matchers(expression: str) -> list[tuple[str, str, str]]:
    """Return (metric, label, value) for each label="value" matcher of a PromQL expression."""
    found = []
    for metric, matchers in SELECTOR.findall(expression):
        for label, operator, value in MATCHER.findall(matchers):
            if operator == "=":
                found.append((metric, label, value))
    return found


def test_metric_names_skip_functions_and_labels() -> None:
    expression = 'histogram_quantile(0.9, sum by (le) (rate(foo_seconds_bucket{job="a", le=~"1.*"}[5m])))'

    assert metric_names(expression) == {"foo_seconds_bucket"}


def test_metric_names_skip_keywords_and_numbers() -> None:
    expression = ("(sum(increase(plans_total{kind=\"auto\"}[$__range])) or vector(0))"
                  " / (sum(increase(plans_total[$__range] offset 5m)) > 0) * 1e3")

    assert metric_names(expression) == {"plans_total"}


def test_metric_names_find_both_operands() -> None:
    expression = "sum without (instance) (end_offset - on (topic, partition) group_left (owner) committed_offset)"

    assert metric_names(expression) == {"end_offset", "committed_offset"}


def test_grouping_labels_ignore_joins() -> None:
    expression = "sum by (topic, partition) (a - on (instance) b) / sum without (job) (c)"

    assert grouping_labels(expression) == {"topic", "partition", "job"}


def test_equality_matchers_skip_regex() -> None:
    expression = 'sum(x_total{decided_by="automation", status=~"fail.*"}) / sum(x_total{judgement!="rejected"})'

    assert equality_matchers(expression) == [("x_total", "decided_by", "automation")]


# What the worker exports


def decision_record() -> DecisionRecord:
    lineage = Lineage(source_topic="anomalies", source_partition=0, source_offset=7, detector_id="robust-zscore",
                      detector_version="1.2.0", writer_schema="AnomalyEvent", event_time=NOW, ingest_time=NOW,
                      clock_skew_ms=0, pipeline_version="0.1.0")
    return DecisionRecord(decision_id="decision-1", decided_at=NOW, event_id="event-1", trace_id="trace-1",
                          incident_id="incident-1", fingerprint="machine-temperature-01:spike",
                          entity="machine-temperature-01", subsystem="industrial/cooling", anomaly_type="spike",
                          severity="high", confidence=0.95, signal_status="firing", outcome="auto",
                          reason_code="policy-matched", reason="all gates passed",
                          policy_id="machine-temperature-high", policy_version=1, risk_score=0.2, lineage=lineage)


def review_request(status: str = "pending") -> ReviewRequest:
    return ReviewRequest.model_validate({
        "review_id": "review-1", "decision_id": "decision-1", "event_id": "event-1", "trace_id": "trace-1",
        "created_at": NOW - timedelta(minutes=5), "deadline": NOW + timedelta(minutes=25),
        "incident_id": "incident-1", "entity": "machine-temperature-01", "subsystem": "industrial/cooling",
        "anomaly_type": "spike", "severity": "high", "confidence": 0.6, "score": 6.25, "risk_score": 0.4,
        "reason_code": "gate-failed", "reason": "confidence below the policy's gate", "status": status,
    })


def action_command() -> ActionCommand:
    return ActionCommand(command_id="command-1", idempotency_key="key-1", decision_id="decision-1",
                         event_id="event-1", incident_id="incident-1", trace_id="trace-1", issued_at=NOW,
                         deadline=NOW + timedelta(minutes=5), executor="ticket", action="open-ticket",
                         target="machine-temperature-01", step_id="open-ticket",
                         policy_id="machine-temperature-high", policy_version=1)


def action_result() -> ActionResult:
    return ActionResult(command_id="command-1", idempotency_key="key-1", decision_id="decision-1",
                        incident_id="incident-1", trace_id="trace-1", executor="ticket", step_id="open-ticket",
                        status="succeeded", finished_at=NOW)


def exercised_telemetry() -> Telemetry:
    """Build a Telemetry and call each of its methods, so that every labelled metric has a series."""
    telemetry = Telemetry(MetricsSettings(), worker="grafana-test:1")
    control = PlanControl(kind="start", incident_id="incident-1", plan_id="plan-1", trace_id="trace-1",
                          issued_at=NOW)
    telemetry.anomaly_in()
    telemetry.dead_letter("undecodable")
    telemetry.decision(decision_record(), opened_incident=True)
    telemetry.review_request(review_request())
    telemetry.command(action_command())
    telemetry.plan_started(control, NOW - timedelta(seconds=2), NOW - timedelta(seconds=1), NOW)
    telemetry.result(action_result())
    telemetry.contained("incident-1", NOW - timedelta(minutes=3), NOW)
    telemetry.plan_completed("policy", changed_something=True)
    telemetry.verdict("approve", True, "incident-1", review_request("approved"), NOW)
    telemetry.set_pending_reviews(1)
    return telemetry


class Exports:
    """Series names, and their labels with the values seen, read from a registry's text exposition."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sample_names: set[str] = set()
        self.family_names: set[str] = set()
        self.labels: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for family in text_string_to_metric_families(generate_latest(registry).decode()):
            # A labelled metric without children exports no samples, so its type gives the names it will export.
            self.family_names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",)))
            for sample in family.samples:
                self.sample_names.add(sample.name)
                for label, value in sample.labels.items():
                    self.labels[sample.name][label].add(value)

    @property
    def names(self) -> set[str]:
        return self.sample_names | self.family_names


@pytest.fixture(scope="module")
def worker_exports() -> Exports:
    """Series of the worker's /metrics page: the Telemetry registry with Faust's sensor, set up by mitigate.web."""
    telemetry = exercised_telemetry()
    app = faust.App("grafana-test", broker="kafka://127.0.0.1:9092", autodiscover=False, web_enabled=False)
    add_pages(app, telemetry)
    return Exports(telemetry.registry)


@pytest.fixture(scope="module")
def faust_exports() -> Exports:
    """Faust's metrics as FaustMetrics defines them, with a consumer lag of 3 on one partition."""
    registry = CollectorRegistry()
    metrics = FaustMetrics.create(registry, FAUST_PREFIX)
    metrics.topic_partition_end_offset.labels(topic="anomalies", partition=0).set(10)
    metrics.topic_partition_offset_commited.labels(topic="anomalies", partition=0).set(7)
    return Exports(registry)


def test_exports_include_faust_sensor(worker_exports: Exports, faust_exports: Exports) -> None:
    worker_faust_names = {name for name in worker_exports.names if name.startswith(f"{FAUST_PREFIX}_")}

    assert faust_exports.family_names
    assert worker_faust_names == faust_exports.family_names


# The dashboard


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return dashboard


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every panel, including those inside rows."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def panel_expressions(panel: dict[str, Any]) -> list[str]:
    return [target["expr"] for target in panel.get("targets", []) if target.get("expr")]


def dashboard_expressions() -> list[tuple[str, str]]:
    """Return (panel title, expression) for every PromQL expression of the dashboard."""
    return [(panel.get("title", ""), expression)
            for panel in dashboard_panels(load_dashboard()) for expression in panel_expressions(panel)]


def unknown_names(expressions: list[tuple[str, str]], exported: set[str]) -> list[tuple[str, str]]:
    """Return (panel title, metric name) for each name that an expression selects and nothing exports."""
    return [(title, name)
            for title, expression in expressions
            for name in sorted(metric_names(expression)) if name not in exported]


def test_unknown_name_detected(worker_exports: Exports) -> None:
    expressions = [("Anomalies in", "sum(rate(mitigate_anomalies_totl[$__rate_interval]))"),
                   ("Lag", "sum(faust_topic_partition_end_offset - faust_topic_partition_offset_committed)")]

    assert unknown_names(expressions, worker_exports.names) == [
        ("Anomalies in", "mitigate_anomalies_totl"),
        ("Lag", "faust_topic_partition_offset_committed"),
    ]


def test_dashboard_uses_exported_names(worker_exports: Exports) -> None:
    expressions = dashboard_expressions()

    assert len(expressions) >= len(REQUIRED_SERIES)
    assert unknown_names(expressions, worker_exports.names) == []


def test_dashboard_series_have_samples(worker_exports: Exports) -> None:
    # The label checks below compare with the labels of real samples, so exercised_telemetry must create them.
    used = {name for _, expression in dashboard_expressions() for name in metric_names(expression)
            if name.startswith("mitigate_")}

    assert used
    assert used - worker_exports.sample_names == set()


def test_dashboard_faust_names_in_faust_metrics(faust_exports: Exports) -> None:
    faust_names = {name for _, expression in dashboard_expressions() for name in metric_names(expression)
                   if name.startswith(f"{FAUST_PREFIX}_")}

    assert faust_names
    assert faust_names - faust_exports.family_names == set()


def test_dashboard_names_only_known_prefixes() -> None:
    names = {name for _, expression in dashboard_expressions() for name in metric_names(expression)}

    assert {name for name in names if not name.startswith(("mitigate_", f"{FAUST_PREFIX}_"))} == set()


def test_dashboard_labels_exported(worker_exports: Exports, faust_exports: Exports) -> None:
    labels: dict[str, dict[str, set[str]]] = {**faust_exports.labels, **worker_exports.labels}
    missing = []
    for title, expression in dashboard_expressions():
        available = {label for name in metric_names(expression) for label in labels.get(name, {})}
        for label in sorted(grouping_labels(expression) - available):
            missing.append((title, label))

    assert missing == []


def test_dashboard_label_values_exported(worker_exports: Exports) -> None:
    unknown = []
    for title, expression in dashboard_expressions():
        for metric, label, value in equality_matchers(expression):
            if value not in worker_exports.labels.get(metric, {}).get(label, set()):
                unknown.append((title, f'{metric}{{{label}="{value}"}}'))

    assert unknown == []


def test_dashboard_shows_required_series() -> None:
    used = {name for _, expression in dashboard_expressions() for name in metric_names(expression)}

    assert REQUIRED_SERIES - used == set()


@pytest.mark.parametrize(("histogram", "levels"), sorted(REQUIRED_QUANTILES.items()))
def test_dashboard_quantiles_from_buckets(histogram: str, levels: set[str]) -> None:
    pattern = re.compile(r"histogram_quantile\(\s*([0-9.]+)\s*,\s*sum by \(le\) \(rate\(" + histogram + r"\[")
    found = {match.group(1) for _, expression in dashboard_expressions() for match in pattern.finditer(expression)}

    assert levels - found == set()


def test_dashboard_plain_schema() -> None:
    dashboard = load_dashboard()
    panels = dashboard_panels(dashboard)
    ids = [panel.get("id") for panel in panels]

    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"]
    assert {panel["type"] for panel in panels} - PANEL_TYPES == set()
    assert len(ids) == len(set(ids))
    assert [panel.get("title") for panel in panels if not panel_expressions(panel)] == []


def test_dashboard_target_refids_unique() -> None:
    for panel in dashboard_panels(load_dashboard()):
        refids = [target.get("refId") for target in panel["targets"]]

        assert None not in refids, panel["title"]
        assert len(refids) == len(set(refids)), panel["title"]


def test_dashboard_panels_do_not_overlap() -> None:
    cell_owners: dict[tuple[int, int], str] = {}
    overlaps = []
    for panel in dashboard_panels(load_dashboard()):
        grid = panel["gridPos"]

        assert grid["x"] >= 0, panel["title"]
        assert grid["w"] > 0, panel["title"]
        assert grid["h"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        for column in range(grid["x"], grid["x"] + grid["w"]):
            for row in range(grid["y"], grid["y"] + grid["h"]):
                if (column, row) in cell_owners:
                    overlaps.append((cell_owners[(column, row)], panel["title"]))
                cell_owners[(column, row)] = panel["title"]

    assert overlaps == []


# Provisioning and docker-compose.yml


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_yaml(COMPOSE_FILE)["services"]
    return services


def bind_mounts(service: dict[str, Any]) -> dict[Path, tuple[str, bool]]:
    """Map each host path that a service mounts to its container path and whether it is read-only."""
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target, read_only = volume["source"], volume["target"], bool(volume.get("read_only"))
        else:
            source, target, *options = volume.split(":")
            if not source.startswith((".", "/")):
                continue  # a named volume
            read_only = "ro" in ",".join(options).split(",")
        mounts[(COMPOSE_FILE.parent / source).resolve()] = (target, read_only)
    return mounts


def named_volumes(service: dict[str, Any]) -> set[str]:
    names = set()
    for volume in service.get("volumes", []):
        source = volume.get("source", "") if isinstance(volume, dict) else volume.split(":")[0]
        if isinstance(volume, dict) and volume.get("type") != "volume":
            continue
        if source and not source.startswith((".", "/")):
            names.add(source)
    return names


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Return (host address, host port, container port) for each port a service publishes."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", ""), str(port.get("published", "")), str(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) == 3:
            ports.append((parts[0], parts[1], parts[2]))
        else:
            ports.append(("", parts[0] if len(parts) == 2 else "", parts[-1]))
    return ports


def dependencies(service: dict[str, Any]) -> set[str]:
    depends_on = service.get("depends_on", [])
    return set(depends_on if isinstance(depends_on, list) else depends_on.keys())


def provisioned_datasource() -> dict[str, Any]:
    datasources: list[dict[str, Any]] = load_yaml(DATASOURCE_FILE)["datasources"]
    [datasource] = datasources
    return datasource


def test_compose_references_resolve() -> None:
    compose = load_yaml(COMPOSE_FILE)
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})

    for name, service in services.items():
        assert dependencies(service) - set(services) == set(), name
        assert named_volumes(service) - declared_volumes == set(), name
        assert [path for path in bind_mounts(service) if not path.exists()] == [], name


def test_compose_ports_on_loopback() -> None:
    for name, service in compose_services().items():
        for host, _, _ in published_ports(service):
            assert host == "127.0.0.1", name


@pytest.mark.parametrize(("service", "repository"), [("prometheus", "prom/prometheus"),
                                                      ("grafana", "grafana/grafana")])
def test_compose_image_pinned(service: str, repository: str) -> None:
    image = compose_services()[service]["image"]
    name, _, tag = image.partition(":")

    assert name == repository
    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), image


def test_compose_worker_serves_metrics() -> None:
    worker = compose_services()["worker"]
    environment = worker["environment"]
    port = str(environment["MITIGATE_WEB_PORT"])

    assert environment["MITIGATE_WEB_HOST"] == "0.0.0.0"
    assert ("127.0.0.1", port, port) in published_ports(worker)
    # The shared variables must survive the worker's own environment mapping.
    assert environment["MITIGATE_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_prometheus_scrapes_worker() -> None:
    services = compose_services()
    config = load_yaml(PROMETHEUS_CONFIG)
    [job] = config["scrape_configs"]
    [targets] = job["static_configs"]
    [target] = targets["targets"]
    host, _, port = target.partition(":")

    assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "15s"
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert host == "worker"
    assert host in services
    assert port == str(services["worker"]["environment"]["MITIGATE_WEB_PORT"])
    assert "worker" in dependencies(services["prometheus"])


def test_compose_prometheus_mounts_config() -> None:
    prometheus = compose_services()["prometheus"]
    flags = dict(argument.split("=", 1) for argument in prometheus["command"] if "=" in argument)
    mounts = bind_mounts(prometheus)

    assert PROMETHEUS_CONFIG.resolve() in mounts
    assert mounts[PROMETHEUS_CONFIG.resolve()] == (flags["--config.file"], True)
    assert ("127.0.0.1", "9090", "9090") in published_ports(prometheus)


def test_compose_grafana_mounts_provisioning() -> None:
    grafana = compose_services()["grafana"]
    mounts = bind_mounts(grafana)
    environment = grafana["environment"]
    provisioning_path = environment.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning")
    [provider] = load_yaml(PROVIDER_FILE)["providers"]

    assert mounts.get(PROVISIONING_DIR.resolve()) == (provisioning_path, True)
    assert DASHBOARDS_DIR.resolve() in mounts
    assert mounts[DASHBOARDS_DIR.resolve()] == (provider["options"]["path"], True)
    assert provider["type"] == "file"
    assert ("127.0.0.1", "3000", "3000") in published_ports(grafana)


def test_compose_grafana_anonymous_viewer() -> None:
    grafana = compose_services()["grafana"]
    environment = grafana["environment"]
    dashboards_target, _ = bind_mounts(grafana)[DASHBOARDS_DIR.resolve()]
    home = environment["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]

    assert str(environment["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert home == f"{dashboards_target}/{DASHBOARD_FILE.name}"


def test_datasource_points_at_prometheus() -> None:
    services = compose_services()
    datasource = provisioned_datasource()
    url = urlsplit(datasource["url"])

    assert datasource["type"] == "prometheus"
    assert url.hostname == "prometheus"
    assert url.hostname in services
    assert str(url.port) in {container for _, _, container in published_ports(services["prometheus"])}
    assert "prometheus" in dependencies(services["grafana"])


def test_dashboard_uses_provisioned_datasource() -> None:
    uid = provisioned_datasource()["uid"]
    references = []
    for panel in dashboard_panels(load_dashboard()):
        references.append((panel["title"], panel.get("datasource")))
        references.extend((panel["title"], target.get("datasource")) for target in panel["targets"])

    assert uid
    assert [title for title, reference in references
            if reference != {"type": "prometheus", "uid": uid}] == []
