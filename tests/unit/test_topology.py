"""topology.md documents exactly the topics that mitigate/topology.py declares."""

from __future__ import annotations

import re

import pytest

from mitigate.topology import EXECUTORS, Topology
from tests.conftest import ROOT

DAYS = {"1 day": 86_400_000, "7 days": 7 * 86_400_000, "30 days": 30 * 86_400_000, "forever": None}


def documented_topics() -> dict[str, list[str]]:
    """Rows of the first table of topology.md, by topic name."""
    text = (ROOT / "topology.md").read_text(encoding="utf-8")
    table = text.split("| topic | key |", 1)[1].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_every_declared_topic_documented() -> None:
    declared = {spec.base_name for spec in Topology().specs()}

    assert set(documented_topics()) == declared


@pytest.mark.parametrize("spec", Topology().specs(), ids=lambda spec: spec.base_name)
def test_documented_settings_match(spec) -> None:  # type: ignore[no-untyped-def]
    _, key, schema, partitions, cleanup, retention, _, _ = documented_topics()[spec.base_name]

    assert key == spec.key
    assert schema == spec.schema
    assert cleanup == spec.cleanup_policy
    assert DAYS[retention] == spec.retention_ms
    # "P" stands for the configurable partition count of the keyed topics.
    assert partitions == ("P" if spec.partitions == Topology().partitions else str(spec.partitions))


def test_action_topic_per_executor() -> None:
    names = {spec.base_name for spec in Topology().specs()}

    assert {f"actions.{executor}" for executor in EXECUTORS} <= names


def test_prefix_applies_to_every_topic() -> None:
    topology = Topology(prefix="staging.")

    assert topology.anomalies == "staging.anomalies"
    assert topology.actions("ticket") == "staging.actions.ticket"


def test_unknown_executor_rejected() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown executor 'pager'; known executors: demo-target")):
        Topology().actions("pager")
