"""TextKeyStore reads a Faust table's store directly. These tests use the memory store, which needs no assigned partitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
import pytest

from mitigate.agents.reference import TextKeyStore


@pytest.fixture
def table(tmp_path: Path) -> Any:
    app = faust.App("unit-text-key-store", broker="kafka://127.0.0.1:1", store="memory://",
                    datadir=str(tmp_path), autodiscover=False)
    return app.Table("state", key_type=bytes, value_type=bytes)


def test_reads_what_the_store_holds(table: Any) -> None:
    table.data[b"incident:a"] = b"{}"
    store = TextKeyStore(table)

    assert store["incident:a"] == b"{}"
    assert store.get("incident:a") == b"{}"
    assert store.get("incident:b") is None
    assert store.get("incident:b", b"default") == b"default"
    with pytest.raises(KeyError):
        store["incident:b"]
