"""Unit tests for config/executors.yaml: the shipped file, defaults and rejected settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from mitigate.errors import ConfigurationError
from mitigate.executor.config import ExecutorsConfig, load_config
from mitigate.executor.reference import REFERENCE_EXECUTORS, create_handler
from mitigate.topology import EXECUTORS
from tests.unit.builders import CONFIG_DIR

SHIPPED = CONFIG_DIR / "executors.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "executors.yaml"
    path.write_text(text)
    return path


def test_shipped_config_loads() -> None:
    config = load_config(SHIPPED)

    assert config.result_retention == 14 * 86400
    assert config.consumer.max_poll_interval == 300
    assert config.demo_target.initial.config_version == "v2"
    assert config.demo_target.faulty_versions == ["v2"]
    assert config.webhook.backoff == 0.5
    assert "print-arguments" in config.shell.actions
    assert "notify" in config.webhook.endpoints


def test_shipped_config_starts_every_executor(tmp_path: Path) -> None:
    config = load_config(SHIPPED)

    for name in REFERENCE_EXECUTORS:
        assert create_handler(name, config, tmp_path / name).name == name


def test_reference_executors_match_topology() -> None:
    assert set(REFERENCE_EXECUTORS) == set(EXECUTORS)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))

    assert config == ExecutorsConfig()
    assert config.ticket.id_prefix == "MIT"
    assert config.consumer.session_timeout == 45


# (case, file content, expected message)
REJECTED = [
    ("unknown-top-level-key", "retention: 1d\n", "retention: Extra inputs are not permitted"),
    ("unknown-nested-key", "demo-target:\n  initial_state: {}\n", "demo-target.initial_state: Extra inputs"),
    ("unknown-endpoint-key", "webhook:\n  endpoints:\n    notify: {url: 'http://127.0.0.1:1/', verb: PUT}\n",
     "webhook.endpoints.notify.verb: Extra inputs are not permitted"),
    ("invalid-url", "webhook:\n  endpoints:\n    notify: {url: 'ftp://example/hook'}\n",
     "invalid URL 'ftp://example/hook'"),
    ("invalid-action-name", "shell:\n  actions:\n    '-x': {argv: [echo]}\n", "invalid name '-x'"),
    ("empty-argv", "shell:\n  actions:\n    drain: {argv: []}\n", "shell.actions.drain.argv"),
    ("blank-program", "shell:\n  actions:\n    drain: {argv: ['  ']}\n", "needs a program"),
    ("poll-below-session", "consumer: {session_timeout: 60s, max_poll_interval: 30s}\n",
     "max_poll_interval (30 s) must not be shorter than session_timeout (60 s)"),
    ("invalid-duration", "result_retention: forever\n", "invalid duration 'forever'"),
    ("invalid-prefix", "ticket: {id_prefix: 'mit'}\n", "ticket.id_prefix"),
    ("invalid-traffic-limit", "demo-target:\n  initial: {config_version: v1, last_known_good: v1, "
     "traffic_limit_percent: 120, replicas: 1, healthy: true}\n", "demo-target.initial.traffic_limit_percent"),
    ("not-a-mapping", "- webhook\n", "expected a mapping of settings, got list"),
    ("invalid-yaml", "webhook: [\n", "invalid YAML"),
]


@pytest.mark.parametrize(("case", "text", "message"), REJECTED, ids=[row[0] for row in REJECTED])
def test_invalid_config_rejected(tmp_path: Path, case: str, text: str, message: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigurationError) as caught:
        load_config(path)

    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)


def test_missing_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read: No such file or directory"):
        load_config(tmp_path / "absent.yaml")
