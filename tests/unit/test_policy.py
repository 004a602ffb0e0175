"""Unit tests for mitigate.policy: the policy file format, its validation and matching signals to policies."""

from __future__ import annotations

import itertools
import json
import textwrap
from fnmatch import fnmatchcase
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
    check_ties,
    load_policy_file,
    load_policy_files,
    load_policy_set,
    matches_may_overlap,
    parse_policy,
    patterns_may_overlap,
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

    assert document.plan[2].parameters == {"limit_percent": "50"}


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
     "unknown field; the fields of each section are listed in docs/policies.md"),
    ("unknown-gate-field", policy_data(gates={"min_confidense": 0.9}), "gates.min_confidense",
     "unknown field (did you mean 'min_confidence'?); the fields of each section are listed in docs/policies.md"),
    ("unknown-step-field", policy_data(plan=[step(timeout=30)]), "plan.0.timeout",
     "unknown field (did you mean 'timeout_s'?); the fields of each section are listed in docs/policies.md"),
    ("missing-plan", {"id": "no-plan"}, "plan",
     "required field is missing; add a plan with at least one step (id, executor, action)"),
    ("missing-id", {"plan": [step()]}, "id",
     "required field is missing; give the policy an id such as cpu-saturation"),
    ("empty-plan", policy_data(plan=[]), "plan", "the plan is empty; add at least one step with id, executor and action"),
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
     "invalid value 'urgent'; input should be 'low', 'medium', 'high' or 'critical'"),
    ("unknown-mode", policy_data(mode="dry-run"), "mode",
     "invalid value 'dry-run'; input should be 'enforce', 'shadow' or 'canary'"),
    ("id-with-space", policy_data(id="Cooling spike"), "id",
     "invalid name 'Cooling spike'; use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"),
    ("zero-timeout", policy_data(plan=[step(timeout_s=0)]), "plan.0.timeout_s", "Input should be greater than 0"),
    ("parameter-null", policy_data(plan=[step(parameters={"queue": None})]), "plan.0.parameters.queue",
     "Input should be a valid string"),
    ("two-problems", policy_data(owner="sre", team="plant"), "owner",
     "unknown field; the fields of each section are listed in docs/policies.md (and 1 more problem in this file)"),
    ("three-problems", policy_data(owner="sre", team="plant", mode="x"), "mode",
     "invalid value 'x'; input should be 'enforce', 'shadow' or 'canary' (and 2 more problems in this file)"),
    ("canary-without-fraction", policy_data(mode="canary"), "canary_fraction",
     "mode canary needs canary_fraction, for example 0.1 for 10%"),
    ("fraction-without-canary", policy_data(canary_fraction=0.2), "canary_fraction",
     "canary_fraction applies only to mode canary, not enforce"),
    ("fraction-in-shadow", policy_data(mode="shadow", canary_fraction=0.2), "canary_fraction",
     "canary_fraction applies only to mode canary, not shadow"),
    ("canary-fraction-zero", policy_data(mode="canary", canary_fraction=0), "canary_fraction",
     "Input should be greater than 0"),
    ("canary-fraction-one", policy_data(mode="canary", canary_fraction=1), "canary_fraction",
     "Input should be less than 1"),
    ("run-cap-bad-window", policy_data(limits={"per_fingerprint": [{"runs": 3, "window": "soon"}]}),
     "limits.per_fingerprint.0.window",
     "invalid duration 'soon'; use a number followed by ms, s, m, h or d, for example 90s or 1h"),
    ("run-cap-window-no-unit", policy_data(limits={"per_fingerprint": [{"runs": 3, "window": "10"}]}),
     "limits.per_fingerprint.0.window",
     "invalid duration '10'; use a number followed by ms, s, m, h or d, for example 90s or 1h"),
    ("run-cap-zero-window", policy_data(limits={"per_target": [{"runs": 3, "window": "0s"}]}),
     "limits.per_target.0.window", "invalid duration '0s'; it must be greater than zero"),
    ("run-cap-missing-window", policy_data(limits={"per_target": [{"runs": 3}]}),
     "limits.per_target.0.window", "required field is missing"),
    ("run-cap-zero-runs", policy_data(limits={"per_fingerprint": [{"runs": 0, "window": "1h"}]}),
     "limits.per_fingerprint.0.runs", "Input should be greater than or equal to 1"),
    ("unknown-limit-scope", policy_data(limits={"per_entity": [{"runs": 1, "window": "1h"}]}), "limits.per_entity",
     "unknown field (did you mean 'per_target'?); the fields of each section are listed in docs/policies.md"),
    ("compensate-unknown-executor",
     policy_data(plan=[step(compensate={"executor": "pagerduty", "action": "close-ticket"})]),
     "plan.0.compensate.executor", "unknown executor 'pagerduty'; use one of: demo-target, shell, ticket, webhook"),
    ("compensate-missing-action", policy_data(plan=[step(compensate={"executor": "ticket"})]),
     "plan.0.compensate.action", "required field is missing"),
    ("retries-above-ten", policy_data(plan=[step(retries=11)]), "plan.0.retries",
     "Input should be less than or equal to 10"),
    ("retries-negative", policy_data(plan=[step(retries=-1)]), "plan.0.retries",
     "Input should be greater than or equal to 0"),
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
    [("- id: a\n- id: b\n", "list"), ("just text\n", "str"), ("42\n", "int")],
    ids=["list", "text", "number"],
)
def test_non_mapping_document(tmp_path: Path, text: str, kind: str) -> None:
    path = write_policy(tmp_path, "odd.yaml", text)

    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)

    assert str(caught.value) == f"{path}: (document): expected a mapping of policy fields, got {kind}"


@pytest.mark.parametrize("text", ["", "# only a comment\n"], ids=["empty", "comment-only"])
def test_empty_document(tmp_path: Path, text: str) -> None:
    path = write_policy(tmp_path, "empty.yaml", text)

    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)

    assert str(caught.value) == f"{path}: (document): the file is empty; a policy needs at least id and plan"


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

    assert str(caught.value) == f"{tmp_path}: (file): no policy files found (*.yaml or *.yml)"


def test_folder_reads_yaml_and_yml(tmp_path: Path) -> None:
    write_policy_data(tmp_path, "a.yaml", policy_data(id="first"))
    write_policy_data(tmp_path, "b.yml", policy_data(id="second", match={"subsystems": ["network/*"]}))

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


# Canary mode, run caps, retries and compensation


def test_canary_with_fraction_valid() -> None:
    document = parse_policy(policy_data(mode="canary", canary_fraction=0.25), "policy.yaml")

    assert document.mode == "canary"
    assert document.canary_fraction == 0.25


def test_canary_fraction_default_none() -> None:
    assert parse_policy(policy_data(), "policy.yaml").canary_fraction is None


def test_run_cap_windows_parsed() -> None:
    limits = {"per_fingerprint": [{"runs": 2, "window": "10m"}, {"runs": 5, "window": 7200}],
              "per_target": [{"runs": 1, "window": "1d"}]}
    document = parse_policy(policy_data(limits=limits), "policy.yaml")

    assert [cap.window for cap in document.limits.per_fingerprint] == [600.0, 7200.0]
    assert [cap.window for cap in document.limits.per_target] == [86400.0]


@pytest.mark.parametrize(
    ("cap", "text"),
    [({"runs": 2, "window": "10m"}, "2 per 10m"), ({"runs": 5, "window": 7200}, "5 per 2h"),
     ({"runs": 1, "window": "90s"}, "1 per 90s"), ({"runs": 3, "window": "1d"}, "3 per 1d")],
    ids=["minutes", "hours", "seconds", "days"],
)
def test_run_cap_describe(cap: dict[str, Any], text: str) -> None:
    document = parse_policy(policy_data(limits={"per_fingerprint": [cap]}), "policy.yaml")

    assert document.limits.per_fingerprint[0].describe() == text


def test_limits_default_empty() -> None:
    limits = parse_policy(policy_data(), "policy.yaml").limits

    assert limits.per_fingerprint == []
    assert limits.per_target == []


def test_compensate_defaults() -> None:
    document = parse_policy(policy_data(plan=[step(compensate={"action": "close-ticket"})]), "policy.yaml")
    compensate = document.plan[0].compensate

    assert compensate is not None
    assert compensate.executor is None
    assert compensate.timeout_s == 300.0


def test_compensate_parameters_text() -> None:
    compensate = {"executor": "ticket", "action": "close-ticket", "parameters": {"limit": 5, "force": True}}
    document = parse_policy(policy_data(plan=[step(compensate=compensate)]), "policy.yaml")

    assert document.plan[0].compensate is not None
    assert document.plan[0].compensate.parameters == {"limit": "5", "force": "true"}


def test_retries_default_zero() -> None:
    assert parse_policy(policy_data(plan=[step()]), "policy.yaml").plan[0].retries == 0


def test_error_lists_other_problems(tmp_path: Path) -> None:
    _, error = policy_error(tmp_path, policy_data(owner="sre", mode="x"))

    assert error.others == ["owner: unknown field; the fields of each section are listed in docs/policies.md"]


# Overlap between policies: could one signal match both?

# (case, first pattern, second pattern, may overlap)
PATTERN_OVERLAP = [
    ("exact-equal", "industrial/cooling", "industrial/cooling", True),
    ("exact-differ", "industrial/cooling", "industrial/pumps", False),
    ("glob-covers-exact", "industrial/*", "industrial/cooling", True),
    ("exact-outside-glob", "network/*", "industrial/cooling", False),
    ("nested-prefixes", "industrial/*", "industrial/c*", True),
    ("prefixes-differ", "industrial/*", "network/*", False),
    ("suffixes-differ", "*/cooling", "*/pumps", False),
    ("prefix-meets-suffix", "industrial/*", "*/pumps", True),
    ("catch-all", "*", "anything/*", True),
    ("question-mark", "machine-?", "machine-1", True),
    ("class-excludes", "machine-[12]", "machine-3", False),
    ("class-includes", "machine-[12]", "machine-2", True),
    ("case-sensitive", "Industrial/*", "industrial/cooling", False),
    # Documented as reported although no text matches both.
    ("middle-differs", "a*b*c", "a*d*c", True),
]


@pytest.mark.parametrize(
    ("first", "second", "overlap"), [case[1:] for case in PATTERN_OVERLAP], ids=[case[0] for case in PATTERN_OVERLAP]
)
def test_patterns_may_overlap(first: str, second: str, overlap: bool) -> None:
    assert patterns_may_overlap(first, second) is overlap


@pytest.mark.parametrize(
    ("first", "second", "overlap"), [case[1:] for case in PATTERN_OVERLAP], ids=[case[0] for case in PATTERN_OVERLAP]
)
def test_patterns_overlap_symmetric(first: str, second: str, overlap: bool) -> None:
    assert patterns_may_overlap(second, first) is overlap


def test_patterns_overlap_never_missed() -> None:
    # Every pair of patterns up to three characters over a, b, * and ?, against
    # every text up to six characters over a and b: a text that matches both
    # patterns must be reported as an overlap.
    tokens = "ab*?"
    patterns = ["".join(chars) for size in range(1, 4) for chars in itertools.product(tokens, repeat=size)]
    texts = ["".join(chars) for size in range(7) for chars in itertools.product("ab", repeat=size)]
    matched = {pattern: {text for text in texts if fnmatchcase(text, pattern)} for pattern in patterns}

    missed = [
        (first, second)
        for first, second in itertools.product(patterns, repeat=2)
        if matched[first] & matched[second] and not patterns_may_overlap(first, second)
    ]

    assert missed == []


# (case, first match clause, second match clause, may overlap)
MATCH_OVERLAP = [
    ("same-type", {"anomaly_types": ["spike"]}, {"anomaly_types": ["spike"]}, True),
    ("disjoint-types", {"anomaly_types": ["spike"]}, {"anomaly_types": ["dip"]}, False),
    ("type-in-list", {"anomaly_types": ["spike", "dip"]}, {"anomaly_types": ["dip"]}, True),
    ("disjoint-subsystems", {"subsystems": ["industrial/*"]}, {"subsystems": ["network/*"]}, False),
    ("type-and-subsystem", {"anomaly_types": ["spike"]}, {"subsystems": ["industrial/cooling"]}, True),
    ("disjoint-severities", {"severities": ["low"]}, {"severities": ["high", "critical"]}, False),
    ("shared-severity", {"severities": ["low", "high"]}, {"severities": ["high"]}, True),
    ("disjoint-label", {"labels": {"metric": "disk_*"}}, {"labels": {"metric": "machine_*"}}, False),
    ("label-one-side", {"labels": {"metric": "disk_*"}}, {}, True),
    ("different-label-names", {"labels": {"site": "north"}}, {"labels": {"metric": "disk_used"}}, True),
    ("catch-alls", {}, {}, True),
]


@pytest.mark.parametrize(
    ("first", "second", "overlap"), [case[1:] for case in MATCH_OVERLAP], ids=[case[0] for case in MATCH_OVERLAP]
)
def test_matches_may_overlap(first: dict[str, Any], second: dict[str, Any], overlap: bool) -> None:
    assert matches_may_overlap(Match.model_validate(first), Match.model_validate(second)) is overlap


def tie_document(policy_id: str, **match: Any) -> PolicyDocument:
    return parse_policy(policy_data(id=policy_id, match=match), f"{policy_id}.yaml")


# (case, first match clause, second match clause), each pair with the same specificity and disjoint
NO_TIE_CASES = [
    ("different-subsystems", {"subsystems": ["industrial/*"]}, {"subsystems": ["network/*"]}),
    ("disjoint-severities", {"anomaly_types": ["spike"], "severities": ["low", "medium"]},
     {"anomaly_types": ["spike"], "severities": ["high", "critical"]}),
    ("disjoint-types", {"anomaly_types": ["spike"]}, {"anomaly_types": ["dip"]}),
    ("disjoint-labels", {"labels": {"metric": "disk_used"}}, {"labels": {"metric": "machine_temperature"}}),
]


@pytest.mark.parametrize(
    ("first", "second"), [case[1:] for case in NO_TIE_CASES], ids=[case[0] for case in NO_TIE_CASES]
)
def test_no_tie_when_disjoint(first: dict[str, Any], second: dict[str, Any]) -> None:
    documents = [tie_document("first", **first), tie_document("second", **second)]

    assert documents[0].match.specificity() == documents[1].match.specificity()
    check_ties(documents, {"first": "first.yaml", "second": "second.yaml"})


def test_no_tie_when_more_specific() -> None:
    documents = [tie_document("general", anomaly_types=["spike"]),
                 tie_document("specific", anomaly_types=["spike"], subsystems=["industrial/cooling"])]

    check_ties(documents, {"general": "general.yaml", "specific": "specific.yaml"})


def tie_error(sources: dict[str, str]) -> PolicyError:
    documents = [tie_document("spike-b", anomaly_types=["spike"]),
                 tie_document("cooling-a", subsystems=["industrial/cooling"])]
    with pytest.raises(PolicyError) as caught:
        check_ties(documents, sources)
    return caught.value


def test_tie_error_field() -> None:
    assert tie_error({"cooling-a": "a.yaml", "spike-b": "b.yaml"}).field == "match"


def test_tie_error_names_first_file() -> None:
    assert tie_error({"cooling-a": "a.yaml", "spike-b": "b.yaml"}).source == "a.yaml"


def test_tie_error_blames_file_over_topic() -> None:
    error = tie_error({"cooling-a": "policies topic", "spike-b": "b.yaml"})

    assert error.source == "b.yaml"


def test_tie_error_text() -> None:
    error = tie_error({"cooling-a": "a.yaml", "spike-b": "b.yaml"})

    assert error.detail == (
        "policy 'cooling-a' can match the same signals as policy 'spike-b' (b.yaml) with the same specificity, "
        "so neither would win; make one of them more specific, for example with a label or a narrower subsystem"
    )


def test_policy_set_tie_raises(tmp_path: Path) -> None:
    first = write_policy_data(tmp_path, "a.yaml", policy_data(id="cooling-a", match={"subsystems": ["industrial/*"]}))
    write_policy_data(tmp_path, "b.yaml", policy_data(id="cooling-b", match={"subsystems": ["industrial/c*"]}))

    with pytest.raises(PolicyError) as caught:
        load_policy_set([tmp_path])

    assert caught.value.source == str(first)
    assert caught.value.field == "match"
    assert str(caught.value).startswith(f"{first}: match: policy 'cooling-a' can match the same signals as policy "
                                        "'cooling-b' ")


def test_policy_set_returns_sources(tmp_path: Path) -> None:
    first = write_policy_data(tmp_path, "a.yaml", policy_data(id="first"))
    second = write_policy_data(tmp_path, "b.yml", policy_data(id="second", match={"subsystems": ["network/*"]}))

    _, sources = load_policy_set([tmp_path])

    assert sources == {"first": str(first), "second": str(second)}


def test_shipped_policies_no_ties() -> None:
    documents, sources = load_policy_set([POLICY_DIR])

    check_ties(documents, sources)
