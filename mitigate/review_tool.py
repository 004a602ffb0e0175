"""`mitigate review`: list, inspect and answer review requests, and follow new ones.

The tool reads the state of each request from the review topic (the latest
message of a review id is its state), sends verdicts to reviews.verdicts and
then waits for the pipeline's answer on the decisions topic: the record that
names the verdict says whether it was applied or why it was rejected.

Exit status: 0 when the pipeline applied the verdict (or recorded an approval
towards a quorum), 1 when it rejected it or something failed, 2 for a usage
error, 3 when the verdict was sent but no answer came in time.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from mitigate import __version__
from mitigate.arguments import duration_argument, positive_int
from mitigate.codec import AvroCodec
from mitigate.enrichment import TRACE_HEADER
from mitigate.errors import DecodeError, MitigateError
from mitigate.kafka import client_config, create_producer, flush_or_raise
from mitigate.models import SEVERITIES, DecisionRecord, ReviewRequest, ReviewVerdict, VerdictKind
from mitigate.policy import format_duration
from mitigate.review import ChangeError, apply_changes
from mitigate.topology import Topology

EXIT_REJECTED = 1
EXIT_NO_ANSWER = 3
# A prefix must be at least this long to stand for a review id.
MIN_PREFIX = 6
# Accepted verdicts: the record codes that mean the verdict was applied.
APPLIED = ("review-approved", "review-modified", "review-vetoed", "review-approval-recorded")
SORT_KEYS = ("newest", "oldest", "risk", "deadline")


class ReviewToolError(MitigateError):
    """A request was not found, is ambiguous, or a verdict cannot be sent."""


# Reading the requests


def latest_states(requests: Iterable[ReviewRequest]) -> dict[str, ReviewRequest]:
    """Keep the latest state of each review id, given the messages in topic order per partition."""
    states: dict[str, ReviewRequest] = {}
    for request in requests:
        states[request.review_id] = request
    return states


def read_requests(bootstrap_servers: str, topology: Topology, codec: AvroCodec) -> dict[str, ReviewRequest]:
    from mitigate.catalog import read_topic

    def decoded() -> Iterator[ReviewRequest]:
        for _key, value in read_topic(bootstrap_servers, topology.review_requests):
            request = _decode_request(codec, value)
            if request is not None:
                yield request

    return latest_states(decoded())


def _decode_request(codec: AvroCodec, value: bytes | None) -> ReviewRequest | None:
    if value is None:
        return None
    try:
        return ReviewRequest.model_validate(codec.decode(value, "ReviewRequest").record)
    except (DecodeError, ValueError) as exc:
        print(f"mitigate: warning: skipped a review request that cannot be read: {exc}", file=sys.stderr)
        return None


def find(states: dict[str, ReviewRequest], identifier: str) -> ReviewRequest:
    """Find a request by review id, a unique prefix of one, or an incident id (its newest request)."""
    if identifier in states:
        return states[identifier]
    by_incident = [state for state in states.values() if state.incident_id == identifier]
    if by_incident:
        return max(by_incident, key=lambda state: state.created_at)
    if len(identifier) < MIN_PREFIX:
        raise ReviewToolError(f"{identifier!r} is too short to find a review request; give the full id or at least "
                              f"{MIN_PREFIX} characters of it (`mitigate review list` shows the first 8)")
    matches = sorted(review_id for review_id in states if review_id.startswith(identifier))
    if not matches:
        raise ReviewToolError(f"no review request {identifier!r}; `mitigate review list --status all` lists them")
    if len(matches) > 1:
        raise ReviewToolError(f"{identifier!r} matches {len(matches)} review requests ({', '.join(matches[:5])}); "
                              "give more characters")
    return states[matches[0]]


@dataclass(frozen=True, slots=True)
class Selection:
    """Filters and order of `review list` and `review watch`."""

    statuses: tuple[str, ...] = ("pending",)  # empty: every status
    subsystem: str | None = None
    severities: tuple[str, ...] = ()
    min_age: float | None = None  # seconds
    max_age: float | None = None
    sort: str = "newest"
    limit: int | None = None

    def matches(self, request: ReviewRequest, now: datetime) -> bool:
        if self.statuses and request.status not in self.statuses:
            return False
        if self.subsystem is not None and not fnmatch.fnmatchcase(request.subsystem, self.subsystem):
            return False
        if self.severities and request.severity not in self.severities:
            return False
        age = (now - request.created_at).total_seconds()
        if self.min_age is not None and age < self.min_age:
            return False
        return self.max_age is None or age <= self.max_age

    def apply(self, states: Iterable[ReviewRequest], now: datetime) -> list[ReviewRequest]:
        chosen = [request for request in states if self.matches(request, now)]
        if self.sort == "risk":
            chosen.sort(key=lambda request: (-request.risk_score, -SEVERITIES.index(request.severity),
                                             -request.created_at.timestamp()))
        elif self.sort == "deadline":
            chosen.sort(key=lambda request: request.deadline)
        else:
            chosen.sort(key=lambda request: request.created_at, reverse=self.sort == "newest")
        return chosen[:self.limit] if self.limit else chosen


# Presenting requests


def as_json(request: ReviewRequest, now: datetime) -> dict[str, Any]:
    """Convert the request to plain JSON for scripts, without the embedded binary decision record."""
    data: dict[str, Any] = request.model_dump(mode="json", exclude={"decision"})
    data["age_s"] = round((now - request.created_at).total_seconds(), 3)
    data["overdue"] = request.status == "pending" and now >= request.deadline
    return data


def _relative(moment: datetime, now: datetime) -> str:
    seconds = (moment - now).total_seconds()
    span = _span(abs(seconds))
    return f"in {span}" if seconds >= 0 else f"{span} ago"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{int(seconds // 86400)}d{int(seconds % 86400 // 3600):02d}h"


def _short(identifier: str) -> str:
    return identifier[:8]


def _approvals(request: ReviewRequest) -> str:
    return f"{len(request.approvals)}/{request.quorum}"


def _deadline(request: ReviewRequest, now: datetime) -> str:
    if request.status != "pending":
        return request.status
    if now >= request.deadline:
        return f"overdue {_span((now - request.deadline).total_seconds())}"
    return _relative(request.deadline, now)


TABLE_COLUMNS = ("REVIEW", "AGE", "SEVERITY", "RISK", "SUBSYSTEM", "ENTITY", "TYPE", "WHY", "APPROVALS", "DEADLINE")


def table(requests: list[ReviewRequest], now: datetime) -> str:
    rows = [TABLE_COLUMNS] + [
        (_short(request.review_id), _span((now - request.created_at).total_seconds()), request.severity,
         f"{request.risk_score:.2f}", request.subsystem, request.entity, request.anomaly_type, request.reason_code,
         _approvals(request), _deadline(request, now))
        for request in requests
    ]
    widths = [max(len(row[index]) for row in rows) for index in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def describe(request: ReviewRequest, now: datetime) -> str:
    """Format the full picture of one request for a terminal."""
    lines = [
        f"Review    {request.review_id}  revision {request.revision}",
        f"Status    {request.status}" + (f": {request.status_reason}" if request.status_reason else ""),
        f"Approvals {_approvals(request)}"
        + "".join(f"\n          {approval.operator} at {approval.approved_at:%Y-%m-%d %H:%M:%S} UTC"
                  for approval in request.approvals),
        f"Deadline  {request.deadline:%Y-%m-%d %H:%M:%S} UTC ({_deadline(request, now)}); "
        f"without a verdict: {'no action, escalated' if request.on_expiry == 'escalate' else 'no action, closed'}",
        "",
        f"Incident  {request.incident_id or '-'}",
        f"          {request.severity} {request.anomaly_type} on {request.entity} ({request.subsystem}), "
        f"confidence {request.confidence:.2f}, score {request.score:g}",
    ]

    seen = ""
    if request.first_seen is not None and request.last_seen is not None:
        seen = f", first seen {request.first_seen:%Y-%m-%d %H:%M:%S}, last seen {request.last_seen:%Y-%m-%d %H:%M:%S} UTC"
    lines.append(f"          {request.signal_count} signal{'s' if request.signal_count != 1 else ''}{seen}")
    lines += ["", f"Why       {request.reason_code}: {request.reason}"]
    if request.gates:
        width = max(len(gate.name) for gate in request.gates)
        for index, gate in enumerate(request.gates):
            head = "Gates     " if index == 0 else "          "
            lines.append(f"{head}{'ok    ' if gate.passed else 'FAILED'} {gate.name.ljust(width)}  {gate.value} "
                         f"(needs {gate.threshold})")

    policy = f"{request.policy_id} v{request.policy_version}" if request.policy_id else "none covers the signal"
    lines += ["", f"Policy    {policy}; quorum {request.quorum}"]
    inputs = request.risk_inputs
    if inputs:
        lines.append(f"Risk      {request.risk_score:.2f} = severity {inputs.get('severity', '?')} "
                     f"({inputs.get('severity_weight', '?')}) x criticality {inputs.get('criticality', '?')} "
                     f"({inputs.get('criticality_weight', '?')})")
    else:
        lines.append(f"Risk      {request.risk_score:.2f}")

    lines += ["", "Plan" + ("      none: approving runs nothing" if not request.steps else "")]
    for number, step in enumerate(request.steps, 1):
        parameters = " ".join(f"{name}={value}" for name, value in sorted(step.parameters.items()))
        lines.append(f"  {number}. {step.step_id}: {step.executor}/{step.action} on {step.target}"
                     + (f"  {parameters}" if parameters else ""))
        details = [f"timeout {format_duration(step.timeout_ms / 1000)}"]
        if step.retries:
            details.append(f"{step.retries} retr{'ies' if step.retries > 1 else 'y'}")
        if step.depends_on:
            details.append(f"after {', '.join(step.depends_on)}")
        if step.preconditions:
            details.append("only if " + ", ".join(f"{name}={value}" for name, value in sorted(step.preconditions.items())))
        if step.compensate is not None:
            details.append(f"undone by {step.compensate.executor}/{step.compensate.action}")
        lines.append(f"     {'; '.join(details)}")

    if request.predicted_impact:
        lines += ["", "Impact"] + [f"  - {line}" for line in request.predicted_impact]
    if request.status == "pending":
        short = _short(request.review_id)
        lines += ["", "Answer    mitigate review approve " + short]
        if request.steps:
            lines.append(f"          mitigate review modify {short} --drop STEP --set STEP.NAME=VALUE")
        lines.append(f"          mitigate review veto {short} --reason TEXT")
    return "\n".join(lines)


def watch_line(request: ReviewRequest, now: datetime) -> str:
    if request.status == "pending" and request.revision == 1 and not request.approvals:
        return (f"{request.created_at:%H:%M:%S} new     {_short(request.review_id)} {request.severity} "
                f"risk {request.risk_score:.2f} {request.anomaly_type} on {request.entity} ({request.subsystem}): "
                f"{request.reason_code}; deadline {_relative(request.deadline, now)}")
    moment = request.updated_at or now
    return (f"{moment:%H:%M:%S} {request.status:<7} {_short(request.review_id)} revision {request.revision}, "
            f"approvals {_approvals(request)}: {request.status_reason}")


# Verdicts


def parse_changes(drops: list[str], sets: list[str], unsets: list[str]) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Turn --drop STEP, --set STEP.NAME=VALUE and --unset STEP.NAME into a verdict's changes."""
    parameters: dict[str, dict[str, str]] = {}
    for text in sets:
        target, equals, value = text.partition("=")
        step_id, dot, name = target.partition(".")
        if not equals or not dot or not step_id or not name or value == "":
            raise ReviewToolError(f"invalid --set {text!r}; write STEP.NAME=VALUE, for example "
                                  "rollback-config.to_version=v1 (use --unset STEP.NAME to remove a parameter)")
        parameters.setdefault(step_id, {})[name] = value
    for text in unsets:
        step_id, dot, name = text.partition(".")
        if not dot or not step_id or not name or "=" in name:
            raise ReviewToolError(f"invalid --unset {text!r}; write STEP.NAME, for example open-ticket.queue")
        parameters.setdefault(step_id, {})[name] = ""
    return list(dict.fromkeys(drops)), parameters


def build_verdict(request: ReviewRequest, kind: VerdictKind, operator: str, reason: str, *, revision: int | None,
                  drops: list[str], parameters: dict[str, dict[str, str]], now: datetime) -> ReviewVerdict:
    if kind == "modify":
        try:
            apply_changes(list(request.steps), drops, parameters)
        except ChangeError as exc:
            raise ReviewToolError(f"cannot modify review {request.review_id}: {exc}") from exc
    return ReviewVerdict(
        verdict_id=str(uuid.uuid4()), review_id=request.review_id, incident_id=request.incident_id or request.event_id,
        revision=revision or request.revision, kind=kind, operator=operator, issued_at=now, reason=reason,
        drop_steps=drops, parameters=parameters,
        client=f"mitigate-review {__version__} on {socket.gethostname()}",
    )


class OutcomeWatch:
    """Reads the decisions topic from its current end, to find the record that answers one verdict."""

    def __init__(self, bootstrap_servers: str, topology: Topology, codec: AvroCodec) -> None:
        self.codec = codec
        self.consumer = Consumer(client_config(
            bootstrap_servers,
            **{"group.id": f"mitigate-review-{uuid.uuid4()}", "enable.auto.commit": False},
        ))
        topic = topology.decisions
        try:
            metadata = self.consumer.list_topics(topic, timeout=10.0).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise ReviewToolError(f"topic {topic} not found; run `mitigate topics create` first")
            # Positions are fixed now, before the verdict is sent, so its answer cannot be missed.
            assignment = []
            for partition in metadata.partitions:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10.0)
                assignment.append(TopicPartition(topic, partition, high))
            self.consumer.assign(assignment)
        except KafkaException as exc:
            self.consumer.close()
            raise ReviewToolError(f"reading {topic} failed: {exc}") from exc

    def wait_for(self, verdict_id: str, timeout_s: float) -> DecisionRecord | None:
        for value in poll_values(self.consumer, time.monotonic() + timeout_s):
            try:
                record = DecisionRecord.model_validate(self.codec.decode(value, "DecisionRecord").record)
            except (DecodeError, ValueError):
                continue
            if record.verdict_id == verdict_id:
                return record
        return None

    def close(self) -> None:
        self.consumer.close()


def send_verdict(bootstrap_servers: str, topology: Topology, codec: AvroCodec, verdict: ReviewVerdict,
                 trace_id: str) -> None:
    producer = create_producer(bootstrap_servers)
    producer.produce(topology.review_verdicts, key=(verdict.incident_id or verdict.review_id).encode(),
                     value=codec.encode("ReviewVerdict", verdict.to_avro()),
                     headers=[(TRACE_HEADER, trace_id.encode())])
    flush_or_raise(producer, 30.0)


def report_outcome(verdict: ReviewVerdict, record: DecisionRecord | None, timeout_s: float, as_json_output: bool,
                   out: TextIO, err: TextIO) -> int:
    if as_json_output:
        applied = record is not None and record.reason_code in APPLIED
        out.write(json.dumps({
            "verdict": verdict.model_dump(mode="json"),
            "answered": record is not None,
            "applied": applied,
            "record": record.model_dump(mode="json") if record is not None else None,
        }, indent=2) + "\n")
        if applied:
            return 0
        return EXIT_NO_ANSWER if record is None else EXIT_REJECTED
    if record is None:
        err.write(f"mitigate: verdict {verdict.verdict_id} was sent, but the pipeline recorded no answer within "
                  f"{timeout_s:g} s; is the worker running? `mitigate review show {verdict.review_id}` shows the "
                  "request's state\n")
        return EXIT_NO_ANSWER
    if record.reason_code not in APPLIED:
        err.write(f"mitigate: error: {record.reason}\n")
        return EXIT_REJECTED
    out.write(f"{record.reason_code}: {record.reason}\n")
    return 0


# Command line


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    review = commands.add_parser("review", help="list, inspect, approve, modify or veto review requests")
    actions = review.add_subparsers(dest="action", required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="list review requests, pending ones by default")
    _add_filters(listing)
    listing.add_argument("--status", type=_statuses, default=("pending",),
                         help="comma-separated statuses to list, or all (default pending); statuses: pending, "
                              "approved, modified, vetoed, expired, closed, superseded")
    listing.add_argument("--sort", choices=SORT_KEYS, default="newest",
                         help="order: newest (default), oldest, risk (riskiest first) or deadline (soonest first)")
    listing.add_argument("--limit", type=positive_int, default=None, metavar="N", help="list at most N requests")
    listing.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    listing.set_defaults(handler=run_list)

    show = actions.add_parser("show", help="print the full picture of one request")
    show.add_argument("review", metavar="ID", help="review id, a unique prefix of one, or an incident id")
    show.add_argument("--json", action="store_true", help="print the request as JSON")
    show.set_defaults(handler=run_show)

    for kind, help_text in (("approve", "approve the recommended plan; it runs once the quorum is met"),
                            ("modify", "change parameters or drop steps, and approve the changed plan"),
                            ("veto", "stop the request: nothing runs and the incident closes without action")):
        parser = actions.add_parser(kind, help=help_text)
        parser.add_argument("review", metavar="ID", help="review id, a unique prefix of one, or an incident id")
        parser.add_argument("--operator", default=None,
                            help="operator name of the verdict; default MITIGATE_OPERATOR, else the login name")
        parser.add_argument("--reason", default="", required=kind == "veto",
                            help="why" + (" (required)" if kind == "veto" else " (optional)"))
        parser.add_argument("--revision", type=positive_int, default=None, metavar="N",
                            help="the revision being answered (default: the current one); scripts pass the "
                                 "revision they showed, so that a change in between is rejected")
        parser.add_argument("--timeout", type=duration_argument, default=30.0, metavar="DURATION",
                            help="how long to wait for the worker's record of the verdict (default 30s)")
        parser.add_argument("--no-wait", action="store_true", help="send the verdict and return without waiting")
        parser.add_argument("--json", action="store_true", help="print the verdict and the worker's record of it as JSON")
        if kind == "modify":
            parser.add_argument("--drop", action="append", default=[], metavar="STEP",
                                help="remove a step from the plan (repeatable)")
            parser.add_argument("--set", action="append", default=[], metavar="STEP.NAME=VALUE",
                                help="set a parameter of a step (repeatable)")
            parser.add_argument("--unset", action="append", default=[], metavar="STEP.NAME",
                                help="remove a parameter of a step (repeatable)")
        parser.set_defaults(handler=run_verdict, kind=kind, usage_error=parser.error)

    watch = actions.add_parser("watch", help="print new requests and changes of state as they arrive")
    _add_filters(watch)
    watch.add_argument("--new-only", action="store_true", help="print only new requests, not later states")
    watch.add_argument("--for", dest="duration", type=duration_argument, default=None, metavar="DURATION",
                       help="stop after this long (default: until Ctrl-C)")
    watch.add_argument("--max", type=positive_int, default=None, metavar="N", help="stop after N lines")
    watch.add_argument("--json", action="store_true", help="print one JSON object per line")
    watch.set_defaults(handler=run_watch)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subsystem", default=None, metavar="PATTERN",
                        help="only this subsystem (shell-style pattern, for example 'industrial/*')")
    parser.add_argument("--severity", type=_severities, default=(), metavar="SEVERITY[,SEVERITY]",
                        help="only these severities: low, medium, high, critical")
    parser.add_argument("--min-age", type=duration_argument, default=None, metavar="DURATION",
                        help="only requests at least this old, for example 10m")
    parser.add_argument("--max-age", type=duration_argument, default=None, metavar="DURATION",
                        help="only requests at most this old, for example 1h")


def _severities(text: str) -> tuple[str, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [value for value in values if value not in SEVERITIES]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"unknown severity {', '.join(unknown) or text!r}; use {', '.join(SEVERITIES)}")
    return values


def _statuses(text: str) -> tuple[str, ...]:
    if text == "all":
        return ()
    known = ("pending", "approved", "modified", "vetoed", "expired", "closed", "superseded")
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [value for value in values if value not in known]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"unknown status {', '.join(unknown) or text!r}; use all or "
                                         f"{', '.join(known)}")
    return values


def _client(args: argparse.Namespace) -> tuple[str, Topology, AvroCodec]:
    from mitigate.cli import _codec, _kafka_settings

    settings = _kafka_settings(args)
    return settings.bootstrap_servers, settings.topology(), _codec(settings)


def _selection(args: argparse.Namespace, statuses: tuple[str, ...]) -> Selection:
    return Selection(statuses=statuses, subsystem=args.subsystem, severities=args.severity,
                     min_age=args.min_age, max_age=args.max_age, sort=getattr(args, "sort", "newest"),
                     limit=getattr(args, "limit", None))


def run_list(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    bootstrap_servers, topology, codec = _client(args)
    now = datetime.now(UTC)
    chosen = _selection(args, args.status).apply(read_requests(bootstrap_servers, topology, codec).values(), now)
    if args.json:
        out.write(json.dumps([as_json(request, now) for request in chosen], indent=2) + "\n")
    elif not chosen:
        out.write(f"no review requests match ({describe_filters(args)})\n")
    else:
        out.write(table(chosen, now) + "\n")
    return 0


def describe_filters(args: argparse.Namespace) -> str:
    parts = [f"status {', '.join(args.status)}" if args.status else "any status"]
    if args.subsystem:
        parts.append(f"subsystem {args.subsystem}")
    if args.severity:
        parts.append(f"severity {', '.join(args.severity)}")
    if args.min_age is not None:
        parts.append(f"at least {format_duration(args.min_age)} old")
    if args.max_age is not None:
        parts.append(f"at most {format_duration(args.max_age)} old")
    return ", ".join(parts)


def run_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    bootstrap_servers, topology, codec = _client(args)
    now = datetime.now(UTC)
    request = find(read_requests(bootstrap_servers, topology, codec), args.review)
    out.write((json.dumps(as_json(request, now), indent=2) if args.json else describe(request, now)) + "\n")
    return 0


def run_verdict(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    from mitigate.cli import _default_author

    if args.operator is not None and not args.operator.strip():
        args.usage_error("argument --operator: the operator name is empty")
    operator = args.operator or os.environ.get("MITIGATE_OPERATOR") or _default_author()
    if args.kind == "veto" and not args.reason.strip():
        args.usage_error("argument --reason: a veto needs a reason")
    try:
        drops, parameters = parse_changes(getattr(args, "drop", []), getattr(args, "set", []),
                                          getattr(args, "unset", []))
    except ReviewToolError as exc:
        args.usage_error(str(exc))
    if args.kind == "modify" and not drops and not parameters:
        args.usage_error("name a change with --drop, --set or --unset")
    bootstrap_servers, topology, codec = _client(args)
    request = find(read_requests(bootstrap_servers, topology, codec), args.review)
    verdict = build_verdict(request, args.kind, operator, args.reason, revision=args.revision, drops=drops,
                            parameters=parameters, now=datetime.now(UTC))
    if args.no_wait:
        send_verdict(bootstrap_servers, topology, codec, verdict, request.trace_id)
        out.write(f"sent {args.kind} verdict {verdict.verdict_id} for review {request.review_id} "
                  f"revision {verdict.revision} as {operator}\n")
        return 0
    watch = OutcomeWatch(bootstrap_servers, topology, codec)
    try:
        send_verdict(bootstrap_servers, topology, codec, verdict, request.trace_id)
        record = watch.wait_for(verdict.verdict_id, args.timeout)
    finally:
        watch.close()
    return report_outcome(verdict, record, args.timeout, args.json, out, err)


def run_watch(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    bootstrap_servers, topology, codec = _client(args)
    selection = _selection(args, ())
    consumer = Consumer(client_config(
        bootstrap_servers, **{"group.id": f"mitigate-review-watch-{uuid.uuid4()}", "enable.auto.commit": False}))
    topic = topology.review_requests
    try:
        metadata = consumer.list_topics(topic, timeout=10.0).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ReviewToolError(f"topic {topic} not found; run `mitigate topics create` first")
        consumer.assign([TopicPartition(topic, partition, OFFSET_END) for partition in metadata.partitions])
        if not args.json:
            out.write(f"watching {topic} for review requests; stop with Ctrl-C\n")
            out.flush()
        printed = 0
        stop_at = time.monotonic() + args.duration if args.duration else None
        for request in _follow(consumer, codec, stop_at):
            now = datetime.now(UTC)
            is_new = request.status == "pending" and request.revision == 1 and not request.approvals
            if (args.new_only and not is_new) or not selection.matches(request, now):
                continue
            out.write((json.dumps(as_json(request, now)) if args.json else watch_line(request, now)) + "\n")
            out.flush()
            printed += 1
            if args.max is not None and printed >= args.max:
                break
    except KafkaException as exc:
        raise ReviewToolError(f"following {topic} failed: {exc}") from exc
    finally:
        consumer.close()
    return 0


def _follow(consumer: Consumer, codec: AvroCodec, stop_at: float | None) -> Iterator[ReviewRequest]:
    for value in poll_values(consumer, stop_at):
        request = _decode_request(codec, value)
        if request is not None:
            yield request


# Errors the consumer reports while its brokers are down or restarting.
RECONNECTING = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})


def poll_values(consumer: Consumer, stop_at: float | None) -> Iterator[bytes | None]:
    """Yield the value of each message the consumer reads until `stop_at` (time.monotonic), or forever if None.

    A lost connection to the brokers is waited out, not raised: a watch or a
    wait for a verdict's record goes on across a broker restart.
    """
    warned = False
    while stop_at is None or time.monotonic() < stop_at:
        wait = 0.5 if stop_at is None else min(0.5, max(0.0, stop_at - time.monotonic()))
        message = consumer.poll(wait)
        if message is None:
            continue
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            if error.code() in RECONNECTING:
                # librdkafka reconnects on its own and resumes from the same position.
                if not warned:
                    sys.stderr.write(f"mitigate: lost the connection to Kafka ({error.str()}); waiting for it\n")
                    warned = True
                continue
            raise ReviewToolError(f"consuming {message.topic()} failed: {error.str()}")
        if warned:
            sys.stderr.write("mitigate: reading from Kafka again\n")
            warned = False
        yield message.value()

