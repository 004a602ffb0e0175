"""The metrics stage on a real broker: windows on the metrics topic, the Prometheus page and the dashboard.

The dashboard is loaded in headless Chromium (Debian's chromium package, which
.ci/run installs), which runs the page's script against the worker's data.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mitigate.models import MetricsWindow
from tests.integration.conftest import TEST_AUTOMATION, Deployment
from tests.integration.test_pipeline_kafka import anomaly, decision_for, send_event

pytestmark = pytest.mark.kafka

AUTOMATION = TEST_AUTOMATION + """\
metrics:
  window: 2s
  costs:
    unit: operator minutes
    review: 10
    executors: {demo-target: 1, ticket: 3}
"""

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def page(deployment: Deployment, path: str) -> str:
    url = f"http://127.0.0.1:{deployment.env['MITIGATE_WEB_PORT']}{path}"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback URL built here
        return str(response.read().decode())


@pytest.fixture(scope="module")
def traffic(deployment: Deployment) -> dict[str, Any]:
    """One automated decision, one review and one dead letter, fully processed."""
    covered = anomaly()
    uncertain = anomaly(confidence=0.6)
    for event in (covered, uncertain):
        send_event(deployment, event)
    deployment.produce(deployment.topology.anomalies, b'{"not": "avro"}', key=b"web-01")
    decision_for(deployment, covered["event_id"])
    decision_for(deployment, uncertain["event_id"])
    return {"covered": covered, "uncertain": uncertain}


def windows_until(deployment: Deployment, anomalies: int, timeout_s: float = 60.0) -> list[MetricsWindow]:
    found: list[MetricsWindow] = []

    def enough(messages: list[Any]) -> bool:
        found[:] = [MetricsWindow.model_validate(deployment.decode(message, "MetricsWindow")) for message in messages]
        return sum(window.anomalies_in for window in found) >= anomalies

    deployment.read(deployment.topology.metrics, enough, timeout_s)
    return found


def test_windows_match_topics(deployment: Deployment, traffic: dict[str, Any]) -> None:
    windows = windows_until(deployment, 3)
    time.sleep(3)  # one more window length, for the commands sent after the decisions
    windows = windows_until(deployment, 3)

    decisions: Counter[str] = Counter()
    commands: Counter[str] = Counter()
    for window in windows:
        decisions.update(window.decisions)
        commands.update(window.commands)
    assert sum(window.anomalies_in for window in windows) == 3
    assert sum((Counter(window.dead_letters) for window in windows), Counter()) == {"unknown-wire-format": 1}
    assert decisions == {"auto": 1, "review": 1}
    assert commands == {"demo-target": 1, "ticket": 1}
    assert sum(window.review_requests for window in windows) == 1


def test_window_fields(deployment: Deployment, traffic: dict[str, Any]) -> None:
    windows = windows_until(deployment, 3)

    assert all((window.window_end - window.window_start).total_seconds() == 2 for window in windows)
    assert {window.cost_unit for window in windows} == {"operator minutes"}
    assert sum(window.cost for window in windows) >= 10  # the review request at least
    assert any(window.ingest_to_command_ms is not None for window in windows)


def test_prometheus_page(deployment: Deployment, traffic: dict[str, Any]) -> None:
    text = page(deployment, "/metrics")

    assert "mitigate_anomalies_total 3.0" in text
    assert 'mitigate_dead_letters_total{reason="unknown-wire-format"} 1.0' in text
    assert 'mitigate_decisions_total{outcome="auto",policy="test-cpu-saturation"} 1.0' in text
    assert "mitigate_ingest_to_command_seconds_count 1.0" in text
    assert "faust_messages_received" in text  # Faust's own consumer metrics


def test_summary_page(deployment: Deployment, traffic: dict[str, Any]) -> None:
    summary = json.loads(page(deployment, "/api/summary/"))

    assert summary["anomalies_in"] == 3
    assert summary["decisions"] == {"auto": 1, "review": 1}
    assert summary["pending_reviews"] == 1
    assert {item["entity"] for item in summary["recent_decisions"]} == {"web-01"}


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run installs it)")
def test_dashboard_in_chromium(deployment: Deployment, traffic: dict[str, Any], tmp_path: Path) -> None:
    assert CHROMIUM is not None
    url = f"http://127.0.0.1:{deployment.env['MITIGATE_WEB_PORT']}/dashboard/"
    profile = tmp_path / "profile"
    screenshot = tmp_path / "dashboard.png"
    common = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000"]

    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=90)
    shot = subprocess.run([*common, "--window-size=1280,1000", f"--screenshot={screenshot}", url],
                          capture_output=True, text=True, timeout=90)

    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<div class="value" id="anomalies">3</div>' in dom.stdout
    assert '<div class="value" id="pending">1</div>' in dom.stdout
    assert "policy-matched: all " in dom.stdout  # a recent decision with its reason
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 10_000
    shutil.copy(screenshot, Path(deployment.log_path).parent / f"dashboard-{uuid.uuid4().hex[:6]}.png")
