"""Unit tests for mitigate.policy: the policy file format, its validation and matching signals to policies."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from mitigate.errors import PolicyError
from mitigate.policy import (
    ActivePolicy,
    Match,
    PolicyDocument,
    PolicyIndex,
    load_policy_file,
    load_policy_files,
    parse_policy,
    policy_from_json,
)
from tests.unit.builders import POLICY_DIR, anomaly_event, policy_data

SHIPPED_FILES = sorted(POLICY_DIR.glob("*.yaml"))


def write_policy(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_policy_data(folder: Path, name: str, data: Any) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def policy(policy_id: str, version: int = 1, **match: Any) -> ActivePolicy:
    document = parse_policy(
        {"id": policy_id, "match": match, "plan": [{"id": "notify", "executor": "ticket", "action": "open-ticket"}]},
        f"{policy_id}.yaml",
    )
    return ActivePolicy(document, version)


# Shipped policies


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=[path.stem for path in SHIPPED_FILES])
def test_shipped_policy_validates(path: Path) -> None:
    assert isinstance(load_policy_file(path), PolicyDocument)


def test_shipped_policy_ids() -> None:
    documents = load_policy_files([POLICY_DIR])

    assert sorted(document.id for document in documents) == ["industrial-low-shadow", "machine-temperature-high"]


def test_shipped_folder_loads_every_file() -> None:
    assert len(load_policy_files([POLICY_DIR])) == len(SHIPPED_FILES)


def test_shipped_parameters_are_text() -> None:
    (document,) = [document for document in load_policy_files([POLICY_DIR]) if document.id == "machine-temperature-high"]

    assert document.plan[1].parameters == {"limit_percent": "50"}


def test_shipped_shadow_policy_mode() -> None:
    (document,) = [document for document in load_policy_files([POLICY_DIR]) if document.id == "industrial-low-shadow"]

    assert document.mode == "shadow"


# Matching

MATCHING = [
    policy("spikes", anomaly_types=["spike"]),
    policy("cooling", subsystems=["industrial/cooling"]),
    policy("network", subsystems=["network/*"]),
    policy("critical-only", severities=["critical"]),
    policy("temperature-label", labels={"metric": "machine_*"}),
]
MATCHING_POLICIES = PolicyIndex(MATCHING)

# (case, event changes, ids of the MATCHING policies that cover the event)
MATCH_CASES = [
    ("anomaly-type", {"anomaly_type": "spike", "subsystem": "storage/disk", "labels": {}}, ["spikes"]),
    ("anomaly-type-other", {"anomaly_type": "dip", "subsystem": "storage/disk", "labels": {}}, []),
    ("subsystem-exact", {"anomaly_type": "dip", "subsystem": "industrial/cooling", "labels": {}}, ["cooling"]),
    ("subsystem-glob", {"anomaly_type": "dip", "subsystem": "network/edge", "labels": {}}, ["network"]),
    ("subsystem-glob-other", {"anomaly_type": "dip", "subsystem": "networks", "labels": {}}, []),
    ("severity", {"anomaly_type": "dip", "subsystem": "storage/disk", "severity": "critical", "labels": {}},
     ["critical-only"]),
    ("label-glob", {"anomaly_type": "dip", "subsystem": "storage/disk", "labels": {"metric": "machine_temperature"}},
     ["temperature-label"]),
    ("label-other-value", {"anomaly_type": "dip", "subsystem": "storage/disk", "labels": {"metric": "disk_used"}}, []),
    ("label-missing", {"anomaly_type": "dip", "subsystem": "storage/disk", "labels": {"site": "machine_1"}}, []),
    ("case-sensitive", {"anomaly_type": "Spike", "subsystem": "Network/edge", "labels": {}}, []),
]


@pytest.mark.parametrize(
    ("changes", "covering"), [case[1:] for case in MATCH_CASES], ids=[case[0] for case in MATCH_CASES]
)
def test_match_covers_signal(changes: dict[str, Any], covering: list[str]) -> None:
    signal = anomaly_event(**changes)
    policies = [policy for policy in MATCHING if policy.document.match.covers(signal)]

    assert [policy.policy_id for policy in policies] == covering


@pytest.mark.parametrize(
    ("changes", "covering"), [case[1:] for case in MATCH_CASES], ids=[case[0] for case in MATCH_CASES]
)
def test_index_picks_single_match(changes: dict[str, Any], covering: list[str]) -> None:
    match = MATCHING_POLICIES.match(anomaly_event(**changes))

    if not covering:
        assert match is None
    else:
        assert match is not None
        assert match.policy.policy_id == covering[0]


def test_match_all_fields_required() -> None:
    match = Match(anomaly_types=["spike"], subsystems=["industrial/*"], severities=["high"],
                  labels={"metric": "machine_temperature"})

    assert match.covers(anomaly_event())
    assert not match.covers(anomaly_event(severity="medium"))
    assert not match.covers(anomaly_event(anomaly_type="dip"))


def test_default_match_covers_everything() -> None:
    assert Match().covers(anomaly_event(anomaly_type="x", subsystem="y", severity="low", labels={}))


def test_empty_index_matches_nothing() -> None:
    assert PolicyIndex([]).match(anomaly_event()) is None


def test_index_length() -> None:
    assert len(MATCHING_POLICIES) == 5


# (case, match clause, specificity)
SPECIFICITY_CASES = [
    ("catch-all", {}, (0, 0)),
    ("exact-type", {"anomaly_types": ["spike"]}, (1, 1)),
    ("glob-subsystem", {"subsystems": ["industrial/*"]}, (1, 0)),
    ("two-exact-types", {"anomaly_types": ["spike", "dip"]}, (1, 2)),
    ("severity", {"severities": ["high"]}, (1, 0)),
    ("all-severities", {"severities": ["critical", "high", "medium", "low"]}, (0, 0)),
    ("labels", {"labels": {"metric": "machine_temperature", "site": "plant-*"}}, (2, 1)),
    ("everything", {"anomaly_types": ["spike"], "subsystems": ["industrial/cooling"], "severities": ["high"],
                    "labels": {"metric": "machine_temperature"}}, (4, 3)),
]


@pytest.mark.parametrize(
    ("clause", "expected"), [case[1:] for case in SPECIFICITY_CASES], ids=[case[0] for case in SPECIFICITY_CASES]
)
def test_specificity_rank(clause: dict[str, Any], expected: tuple[int, int]) -> None:
    assert Match.model_validate(clause).specificity() == expected


@pytest.mark.parametrize(
    ("general", "specific"),
    [
        ({}, {"anomaly_types": ["spike"]}),
        ({"subsystems": ["industrial/*"]}, {"subsystems": ["industrial/cooling"]}),
        ({"anomaly_types": ["spike"]}, {"anomaly_types": ["spike"], "severities": ["high"]}),
        ({"anomaly_types": ["spike"]}, {"anomaly_types": ["spike"], "labels": {"metric": "machine_*"}}),
    ],
    ids=["catch-all", "glob-subsystem", "severity-added", "label-added"],
)
def test_specific_beats_general(general: dict[str, Any], specific: dict[str, Any]) -> None:
    # The general policy gets the id that sorts first, so that only specificity can pick the other.
    index = PolicyIndex([policy("zz-specific", **specific), policy("aa-general", **general)])

    match = index.match(anomaly_event())

    assert match is not None
    assert match.policy.policy_id == "zz-specific"
    assert match.tied_with == ()


def test_tie_reported() -> None:
    index = PolicyIndex([
        policy("cooling-b", subsystems=["industrial/cooling"]),
        policy("spike-a", anomaly_types=["spike"]),
        policy("spike-c", anomaly_types=["spike"], severities=["low"]),
    ])

    match = index.match(anomaly_event())

    assert match is not None
    assert match.policy.policy_id == "cooling-b"
    assert match.tied_with == ("spike-a",)


def test_tie_order_ignores_arrival() -> None:
    first = PolicyIndex([policy("b", anomaly_types=["spike"]), policy("a", subsystems=["industrial/cooling"])])
    second = PolicyIndex([policy("a", subsystems=["industrial/cooling"]), policy("b", anomaly_types=["spike"])])

    assert first.match(anomaly_event()) == second.match(anomaly_event())


def test_describe_lists_clause() -> None:
    match = Match(anomaly_types=["spike", "dip"], subsystems=["industrial/*"], severities=["high"],
                  labels={"site": "plant-*", "metric": "machine_temperature"})

    assert match.describe() == (
        "anomaly_types=spike,dip subsystems=industrial/* severities=high "
        "labels.metric=machine_temperature labels.site=plant-*"
    )


# Validation errors


def step(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": "notify", "executor": "ticket", "action": "open-ticket"}
    data.update(changes)
    return data


# (case, document, field, problem)
FIELD_ERRORS = [
    ("unknown-executor", policy_data(plan=[step(executor="pagerduty")]), "plan.0.executor",
     "unknown executor 'pagerduty'; use one of: demo-target, shell, ticket, webhook"),
    ("unknown-field", policy_data(owner="sre"), "owner",
     "unknown field; the fields of this section are listed in docs/policies.md (Extra inputs are not permitted)"),
    ("unknown-gate-field", policy_data(gates={"min_confidense": 0.9}), "gates.min_confidense",
     "unknown field; the fields of this section are listed in docs/policies.md (Extra inputs are not permitted)"),
    ("unknown-step-field", policy_data(plan=[step(timeout=30)]), "plan.0.timeout",
     "unknown field; the fields of this section are listed in docs/policies.md (Extra inputs are not permitted)"),
    ("missing-plan", {"id": "no-plan"}, "plan", "required field is missing"),
    ("missing-id", {"plan": [step()]}, "id", "required field is missing"),
    ("empty-plan", policy_data(plan=[]), "plan", "List should have at least 1 item after validation, not 0"),
    ("bad-target-placeholder", policy_data(plan=[step(target="{host}")]), "plan.0.target",
     "invalid target template '{host}'; placeholders allowed: {entity}, {subsystem}, {fingerprint}"),
    ("unclosed-target-brace", policy_data(plan=[step(target="{entity")]), "plan.0.target",
     "invalid target template '{entity'; placeholders allowed: {entity}, {subsystem}, {fingerprint}"),
    ("positional-target", policy_data(plan=[step(target="{0}")]), "plan.0.target",
     "invalid target template '{0}'; placeholders allowed: {entity}, {subsystem}, {fingerprint}"),
    ("confidence-above-one", policy_data(gates={"min_confidence": 1.2}), "gates.min_confidence",
     "Input should be less than or equal to 1"),
    ("confidence-negative", policy_data(gates={"min_confidence": -0.1}), "gates.min_confidence",
     "Input should be greater than or equal to 0"),
    ("unknown-severity", policy_data(match={"severities": ["urgent"]}), "match.severities.0",
     "Input should be 'low', 'medium', 'high' or 'critical'"),
    ("unknown-mode", policy_data(mode="dry-run"), "mode", "Input should be 'enforce' or 'shadow'"),
    ("id-with-space", policy_data(id="Cooling spike"), "id",
     "String should match pattern '^[a-z0-9][a-z0-9._-]{0,127}$'"),
    ("zero-timeout", policy_data(plan=[step(timeout_s=0)]), "plan.0.timeout_s", "Input should be greater than 0"),
    ("parameter-null", policy_data(plan=[step(parameters={"queue": None})]), "plan.0.parameters.queue",
     "Input should be a valid string"),
    ("two-problems", policy_data(owner="sre", team="plant"), "owner",
     "unknown field; the fields of this section are listed in docs/policies.md (Extra inputs are not permitted) "
     "(and 1 more problem in this file)"),
    ("three-problems", policy_data(owner="sre", team="plant", mode="x"), "mode",
     "Input should be 'enforce' or 'shadow' (and 2 more problems in this file)"),
]
FIELD_ERROR_IDS = [case[0] for case in FIELD_ERRORS]


def policy_error(tmp_path: Path, data: Any) -> tuple[Path, PolicyError]:
    path = write_policy_data(tmp_path, "policy.yaml", data)
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    return path, caught.value


@pytest.mark.parametrize("data", [case[1] for case in FIELD_ERRORS], ids=FIELD_ERROR_IDS)
def test_error_names_file(tmp_path: Path, data: dict[str, Any]) -> None:
    path, error = policy_error(tmp_path, data)

    assert error.source == str(path)


@pytest.mark.parametrize(("data", "field"), [(case[1], case[2]) for case in FIELD_ERRORS], ids=FIELD_ERROR_IDS)
def test_error_names_field(tmp_path: Path, data: dict[str, Any], field: str) -> None:
    _, error = policy_error(tmp_path, data)

    assert error.field == field


@pytest.mark.parametrize(("data", "problem"), [(case[1], case[3]) for case in FIELD_ERRORS], ids=FIELD_ERROR_IDS)
def test_error_states_problem(tmp_path: Path, data: dict[str, Any], problem: str) -> None:
    _, error = policy_error(tmp_path, data)

    assert error.detail == problem


@pytest.mark.parametrize(("data", "field"), [(case[1], case[2]) for case in FIELD_ERRORS], ids=FIELD_ERROR_IDS)
def test_error_text_starts_with_location(tmp_path: Path, data: dict[str, Any], field: str) -> None:
    path, error = policy_error(tmp_path, data)

    assert str(error).startswith(f"{path}: {field}: ")


# Plans that are not a list of steps after the steps they depend on. (case, plan, problem)
PLAN_ERRORS = [
    ("depends-on-unknown-step", [step(id="open", depends_on=["drain"])],
     "step 'open' depends on 'drain', which is not an earlier step; "
     "list steps after the steps they depend on"),
    ("depends-on-later-step", [step(id="open", depends_on=["close"]), step(id="close")],
     "step 'open' depends on 'close', which is not an earlier step; "
     "list steps after the steps they depend on"),
    ("depends-on-itself", [step(id="open", depends_on=["open"])],
     "step 'open' depends on 'open', which is not an earlier step; "
     "list steps after the steps they depend on"),
    ("duplicate-step-id", [step(id="open"), step(id="open", action="reopen")],
     "step id 'open' appears twice; give each step its own id"),
]
PLAN_ERROR_IDS = [case[0] for case in PLAN_ERRORS]


@pytest.mark.parametrize(("plan", "problem"), [case[1:] for case in PLAN_ERRORS], ids=PLAN_ERROR_IDS)
def test_plan_error_states_problem(tmp_path: Path, plan: list[dict[str, Any]], problem: str) -> None:
    path, error = policy_error(tmp_path, policy_data(plan=plan))

    assert error.source == str(path)
    assert error.detail == problem


@pytest.mark.parametrize("plan", [case[1] for case in PLAN_ERRORS], ids=PLAN_ERROR_IDS)
def test_plan_error_names_plan(tmp_path: Path, plan: list[dict[str, Any]]) -> None:
    _, error = policy_error(tmp_path, policy_data(plan=plan))

    assert error.field.startswith("plan")


def test_attribute_placeholder_rejected(tmp_path: Path) -> None:
    _, error = policy_error(tmp_path, policy_data(plan=[step(target="{entity.region}")]))

    assert error.field == "plan.0.target"


@pytest.mark.parametrize("target", ["{entity}", "{subsystem}/{entity}", "fp-{fingerprint}", "fixed-host", "{{entity}}"])
def test_valid_target_accepted(target: str) -> None:
    assert parse_policy(policy_data(plan=[step(target=target)]), "policy.yaml").plan[0].target == target


def test_invalid_yaml_names_file(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "broken.yaml", "id: broken\nplan: [\n")

    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)

    assert caught.value.source == str(path)
    assert caught.value.field == "(file)"
    assert caught.value.detail.startswith("invalid YAML: ")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- id: a\n- id: b\n", "list"), ("just text\n", "str"), ("", "NoneType"), ("42\n", "int")],
    ids=["list", "text", "empty", "number"],
)
def test_non_mapping_document(tmp_path: Path, text: str, kind: str) -> None:
    path = write_policy(tmp_path, "odd.yaml", text)

    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)

    assert str(caught.value) == f"{path}: (document): expected a mapping of policy fields, got {kind}"


def test_missing_file_named(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)

    assert str(caught.value) == f"{path}: (file): cannot read: No such file or directory"


def test_duplicate_id_across_files(tmp_path: Path) -> None:
    first = write_policy_data(tmp_path, "a.yaml", policy_data())
    second = write_policy_data(tmp_path, "b.yml", policy_data(description="a copy"))

    with pytest.raises(PolicyError) as caught:
        load_policy_files([tmp_path])

    assert str(caught.value) == f"{second}: id: policy id 'cooling-spike' is already used by {first}"


def test_folder_without_policies(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a policy", encoding="utf-8")

    with pytest.raises(PolicyError) as caught:
        load_policy_files([tmp_path])

    assert str(caught.value) == f"{tmp_path}: (file): no policy files found"


def test_folder_reads_yaml_and_yml(tmp_path: Path) -> None:
    write_policy_data(tmp_path, "a.yaml", policy_data(id="first"))
    write_policy_data(tmp_path, "b.yml", policy_data(id="second"))

    assert [document.id for document in load_policy_files([tmp_path])] == ["first", "second"]


# Parameters and content hash


def test_yaml_numbers_become_text(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path,
        "numbers.yaml",
        """\
        id: numbers
        plan:
          - id: throttle
            executor: demo-target
            action: set-traffic-limit
            parameters:
              limit_percent: 50
              ratio: 0.25
              dry_run: true
              label: "50"
        """,
    )

    assert load_policy_file(path).plan[0].parameters == {
        "limit_percent": "50",
        "ratio": "0.25",
        "dry_run": "true",
        "label": "50",
    }


@pytest.mark.parametrize(("value", "text"), [(False, "false"), (-3, "-3"), (1.5e-3, "0.0015")])
def test_parameter_scalar_text(value: Any, text: str) -> None:
    document = parse_policy(policy_data(plan=[step(parameters={"value": value})]), "policy.yaml")

    assert document.plan[0].parameters["value"] == text


def test_hash_ignores_key_order(tmp_path: Path) -> None:
    forward = write_policy(
        tmp_path,
        "forward.yaml",
        """\
        id: ordered
        mode: enforce
        gates: {min_confidence: 0.9, environments: [production]}
        plan:
          - {id: notify, executor: ticket, action: open-ticket, parameters: {queue: ops, limit: 5}}
        """,
    )
    backward = write_policy(
        tmp_path,
        "backward.yaml",
        """\
        plan:
          - {parameters: {limit: 5, queue: ops}, action: open-ticket, executor: ticket, id: notify}
        gates: {environments: [production], min_confidence: 0.9}
        mode: enforce
        id: ordered
        """,
    )

    assert load_policy_file(forward).content_hash() == load_policy_file(backward).content_hash()


def test_hash_counts_defaults_once() -> None:
    explicit = parse_policy(policy_data(mode="enforce"), "a.yaml")
    implicit_data = policy_data()
    del implicit_data["mode"]

    assert parse_policy(implicit_data, "b.yaml").content_hash() == explicit.content_hash()


def test_hash_changes_with_content() -> None:
    original = parse_policy(policy_data(), "a.yaml")
    changed = parse_policy(policy_data(review_timeout_s=600), "a.yaml")

    assert changed.content_hash() != original.content_hash()


def test_hash_is_sha256_hex() -> None:
    digest = parse_policy(policy_data(), "a.yaml").content_hash()

    assert len(digest) == 64
    assert int(digest, 16) >= 0


def test_canonical_json_sorted() -> None:
    text = parse_policy(policy_data(), "a.yaml").canonical_json()

    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def test_json_round_trip() -> None:
    document = parse_policy(policy_data(), "a.yaml")

    restored = policy_from_json(document.canonical_json(), 4)

    assert restored.document == document
    assert restored.version == 4


def test_defaults_fill_document() -> None:
    document = PolicyDocument.model_validate({"id": "minimal", "plan": [step()]})

    assert document.mode == "enforce"
    assert document.gates.min_confidence == 0.9
    assert document.gates.require_approval_for == ["critical"]
    assert document.plan[0].target == "{entity}"
    assert document.plan[0].timeout_s == 300.0
