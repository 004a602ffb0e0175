"""Unit tests for mitigate.operators: the operators file and the rights check."""

from __future__ import annotations

from pathlib import Path

import pytest

from mitigate.errors import ConfigurationError
from mitigate.operators import OperatorDirectory, load_operators
from tests.unit.builders import CONFIG_DIR

SHIPPED = load_operators(CONFIG_DIR / "operators.yaml")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "operators.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_file_loads() -> None:
    assert sorted(SHIPPED.operators) == ["alice", "bob", "carol", "dave"]


@pytest.mark.parametrize(("operator", "kind", "severity", "executors"), [
    ("alice", "approve", "critical", ["shell"]),
    ("bob", "approve", "high", ["demo-target", "ticket"]),
    ("bob", "veto", "high", ["shell"]),  # a veto runs nothing, so executors do not matter
    ("dave", "veto", "critical", []),
])
def test_allowed(operator: str, kind: str, severity: str, executors: list[str]) -> None:
    assert SHIPPED.check(operator, kind, severity, "industrial/cooling", executors) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(("operator", "kind", "severity", "executors", "message"), [
    ("bob", "approve", "critical", ["demo-target"],
     "operator bob may not approve this request: role responder lacks severity critical (allows low, medium, high); "
     "operators who may: alice"),
    ("bob", "modify", "high", ["shell"],
     "operator bob may not modify this request: role responder lacks executor shell (allows demo-target, ticket); "
     "operators who may: alice"),
    ("dave", "approve", "low", [],
     "operator dave may not approve this request: role observer lacks verdict approve (allows veto); "
     "operators who may: alice, bob, carol"),
    ("zoe", "veto", "low", [],
     "operator 'zoe' is not listed in the operators file, so it has no rights; answer under your listed name "
     "(--operator NAME or MITIGATE_OPERATOR), or ask an administrator to add it"),
])
def test_refused(operator: str, kind: str, severity: str, executors: list[str], message: str) -> None:
    assert SHIPPED.check(operator, kind, severity, "industrial/cooling", executors) == message  # type: ignore[arg-type]


def test_subsystem_pattern() -> None:
    directory = OperatorDirectory.model_validate({
        "roles": {"plant": {"verdicts": ["approve"], "subsystems": ["industrial/*"]}},
        "operators": {"pat": {"roles": ["plant"]}},
    })

    assert directory.check("pat", "approve", "low", "industrial/cooling", []) is None
    assert "lacks subsystem web/frontend (allows industrial/*); no operator has this right" in str(
        directory.check("pat", "approve", "low", "web/frontend", []))


def test_any_role_may_allow() -> None:
    directory = OperatorDirectory.model_validate({
        "roles": {"a": {"verdicts": ["veto"]}, "b": {"verdicts": ["approve"], "severities": ["low"]}},
        "operators": {"pat": {"roles": ["a", "b"]}},
    })

    assert directory.check("pat", "approve", "low", "x", []) is None
    assert directory.check("pat", "veto", "high", "x", []) is None


def test_empty_file_has_no_operators(tmp_path: Path) -> None:
    assert load_operators(write(tmp_path, "")).operators == {}


@pytest.mark.parametrize(("text", "message"), [
    ("roles: {}\noperators:\n  pat: {roles: [admin]}\n", "operators.pat.roles: unknown role 'admin'; roles: none defined"),
    ("roles:\n  r: {verdicts: [approve], severity: [low]}\n",
     "roles.r.severity: unknown field; roles take verdicts, severities, subsystems and executors"),
    ("roles:\n  r: {verdicts: [approve], severities: [urgent]}\n", "roles.r.severities.0: invalid value 'urgent'"),
    ("roles:\n  r: {verdicts: [approve]}\noperators:\n  'bad name': {roles: [r]}\n",
     "operators.bad name: invalid name 'bad name'; use letters, digits"),
    ("roles:\n  r: {verdicts: []}\n", "roles.r.verdicts: the list is empty; name at least one entry"),
    ("roles:\n  r: {verdict: [approve]}\n", "roles.r.verdict: unknown field"),
    ("roles:\n  r: {severities: [low]}\n", "roles.r.verdicts: required field is missing"),
    ("- alice\n", "expected a mapping with roles and operators, got list"),
    ("roles: [\n", "invalid YAML"),
])
def test_invalid_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ConfigurationError) as error:
        load_operators(path)

    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read: No such file or directory; set MITIGATE_OPERATORS_FILE"):
        load_operators(tmp_path / "absent.yaml")
