"""Fixtures of the fault suite: rigs on the shared test broker, a broker of its own, and the figures file.

Each scenario records its counts with `figures.record(name, {...})`. They are
printed at the end of the run and written to .run/faults/figures.json (or
MITIGATE_FAULT_FIGURES), from which docs/reliability.md takes its tables.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import ROOT
from tests.faults.harness import Rig
from tests.integration.conftest import free_port

FIGURES_ENV = "MITIGATE_FAULT_FIGURES"
# `make faults` sets this to run the scenarios at full size; the test run uses smaller ones.
FULL_ENV = "MITIGATE_FAULTS_FULL"


def full_size() -> bool:
    return os.environ.get(FULL_ENV, "") not in ("", "0")


class Figures:
    """Counts of each scenario of this run, by scenario name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.scenarios: dict[str, dict[str, Any]] = {}

    def record(self, scenario: str, figures: dict[str, Any]) -> None:
        self.scenarios[scenario] = {"finished_at": datetime.now(UTC).isoformat(timespec="seconds"), **figures}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        previous: dict[str, Any] = orjson.loads(self.path.read_bytes()) if self.path.exists() else {}
        previous.update({"full_size": full_size(), "scenarios": {**previous.get("scenarios", {}),
                                                                   **self.scenarios}})
        self.path.write_bytes(orjson.dumps(previous, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


_FIGURES = Figures(Path(os.environ.get(FIGURES_ENV, str(ROOT / ".run" / "faults" / "figures.json"))))


@pytest.fixture(scope="session")
def figures() -> Figures:
    return _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES.scenarios:
        return
    terminalreporter.section("fault suite figures")
    for scenario, counts in _FIGURES.scenarios.items():
        shown = ", ".join(f"{name} {value}" for name, value in counts.items() if name != "finished_at")
        terminalreporter.write_line(f"{scenario}: {shown}")
    terminalreporter.write_line(f"written to {_FIGURES.path}")


@pytest.fixture
def rig(kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    """A deployment of its own on the shared test broker; its processes stop at the end of the test.

    A test changes the rig with `@pytest.mark.rig(runbook_then=..., automation=...)`.
    """
    marker = request.node.get_closest_marker("rig")
    built = Rig(kafka_bootstrap, tmp_path, **(marker.kwargs if marker else {}))
    try:
        yield built
    finally:
        built.close()


class OwnBroker:
    """A broker this suite starts, stops and starts again (scripts/kafka.sh on free loopback ports)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_CONTROLLER_PORT": str(free_port()),
                    "KAFKA_DATA_DIR": str(folder)}
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.script = str(ROOT / "scripts" / "kafka.sh")

    def start(self) -> None:
        subprocess.run([self.script, "start"], env=self.env, check=True, stdout=subprocess.DEVNULL, timeout=180)

    def stop(self) -> None:
        subprocess.run([self.script, "stop"], env=self.env, check=False, stdout=subprocess.DEVNULL, timeout=180)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[OwnBroker]:
    folder = tmp_path / "kafka"
    broker = OwnBroker(folder)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
