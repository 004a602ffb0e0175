"""Unit tests for the parts of the executor service that need no broker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from mitigate.executor.handler import ExecutorError
from mitigate.executor.service import ExecutorService, _partition_list, _RepeatedErrors, consumer_group
from mitigate.topology import Topology
from tests.unit.test_executor_processing import FakeHandler


def test_consumer_group_has_prefix() -> None:
    assert consumer_group(Topology(prefix="staging."), "shell") == "staging.mitigate-executor-shell"
    assert consumer_group(Topology(), "ticket") == "mitigate-executor-ticket"


def test_service_topics_from_topology(tmp_path: Path) -> None:
    service = ExecutorService(FakeHandler("webhook"), bootstrap_servers="127.0.0.1:1",
                              topology=Topology(prefix="staging."), state_dir=tmp_path)

    assert service.command_topic == "staging.actions.webhook"
    assert service.results_topic == "staging.action-results"
    assert service.group_id == "staging.mitigate-executor-webhook"


def test_other_executor_needs_topic(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="unknown executor 'pager'.*pass command_topic"):
        ExecutorService(FakeHandler("pager"), bootstrap_servers="127.0.0.1:1", topology=Topology(),
                        state_dir=tmp_path)

    service = ExecutorService(FakeHandler("pager"), bootstrap_servers="127.0.0.1:1", topology=Topology(),
                              state_dir=tmp_path, command_topic="actions.pager")
    assert service.command_topic == "actions.pager"
    assert service.group_id == "mitigate-executor-pager"


def test_partition_list_groups_by_topic() -> None:
    partitions = [TopicPartition("actions.shell", 2), TopicPartition("actions.shell", 0),
                  TopicPartition("actions.ticket", 1)]

    assert _partition_list(partitions) == "actions.shell[0,2], actions.ticket[1]"
    assert _partition_list([]) == "none"


def test_repeated_errors_rate_limited(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("mitigate.executor.service.time.monotonic", lambda: clock[0])
    errors = _RepeatedErrors(interval_s=60.0)

    with caplog.at_level(logging.WARNING, logger="mitigate.executor.service"):
        errors.log(logging.WARNING, "_TRANSPORT", "broker down")
        clock[0] = 110.0
        errors.log(logging.WARNING, "_TRANSPORT", "broker down")
        errors.log(logging.WARNING, "_TRANSPORT", "broker down")
        errors.log(logging.WARNING, "_AUTHENTICATION", "bad credentials")
        clock[0] = 170.0
        errors.log(logging.WARNING, "_TRANSPORT", "broker down")

    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["broker down", "bad credentials", "broker down (2 more like it in the last 70 s)"]
