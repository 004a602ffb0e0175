"""The SDK example in docs/executors.md runs as written, through the same rules as the service."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from mitigate.executor.processing import CommandProcessor
from mitigate.executor.store import CommandStore
from tests.unit.builders import ROOT
from tests.unit.test_executor_processing import command_fields

DOC = ROOT / "docs" / "executors.md"


def example_namespace() -> dict[str, Any]:
    """Execute the documented example as a module that is not __main__, so that it defines but does not run."""
    [code] = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    namespace: dict[str, Any] = {"__name__": "executors_example"}
    exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the repository's own documentation
    return namespace


def test_example_handler_records_ticket(tmp_path: Path) -> None:
    handler = example_namespace()["JsonLinesTickets"](tmp_path / "tickets.jsonl")
    record = command_fields(executor="ticket", action="open-ticket", parameters={"queue": "plant-operations"})

    with CommandStore(tmp_path / "commands.sqlite", "ticket") as store:
        result = CommandProcessor(handler, store).process(record, "actions.ticket[0]@0")

    assert result is not None
    assert result.status == "succeeded"
    assert result.output == {"file": str(tmp_path / "tickets.jsonl")}
    [line] = (tmp_path / "tickets.jsonl").read_text().splitlines()
    assert json.loads(line) == {"command_id": "command-1", "target": "machine-temperature-01",
                                "queue": "plant-operations"}


@pytest.mark.parametrize(("changes", "reason"), [
    ({"action": "close-ticket"}, "unknown action 'close-ticket'; known: open-ticket"),
    ({"action": "open-ticket", "preconditions": {"owner": "ops"}}, "unknown preconditions: owner"),
])
def test_example_handler_rejects(tmp_path: Path, changes: dict[str, Any], reason: str) -> None:
    handler = example_namespace()["JsonLinesTickets"](tmp_path / "tickets.jsonl")
    record = command_fields(executor="ticket", **changes)

    with CommandStore(tmp_path / "commands.sqlite", "ticket") as store:
        result = CommandProcessor(handler, store).process(record, "actions.ticket[0]@0")

    assert result is not None
    assert result.status == "rejected"
    assert result.reason == reason
