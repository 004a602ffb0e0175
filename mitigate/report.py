"""Follow the output topics, print each decision as it arrives, and summarise what they hold."""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from confluent_kafka import Consumer, KafkaException, TopicPartition

from mitigate.codec import AvroCodec
from mitigate.errors import DecodeError, MitigateError
from mitigate.kafka import client_config
from mitigate.models import ActionCommand, DeadLetter, DecisionRecord, MetricsWindow, ReviewRequest
from mitigate.topology import EXECUTORS, Topology

# Watermark queries cost a round trip per partition, so the anomaly count is refreshed at most this often.
ANOMALY_COUNT_INTERVAL_S = 2.0
# Reason codes of the orchestrator's records: they report on a plan, not on one anomaly.
PLAN_PROGRESS = ("plan-", "step-", "compensation-")
# Reason codes of the review stage's records: verdicts, expiry and the end of a request.
REVIEW_PROGRESS = ("review-", "verdict-", "incident-vetoed")


def about_event(reason_code: str) -> bool:
    """Tell a decision about one event from the orchestrate agent's records of plans and reviews."""
    return not reason_code.startswith(PLAN_PROGRESS + REVIEW_PROGRESS)
# Review records that start a plan: approval, and the escalation of an expired request.
REVIEW_PLANS = ("review-approved", "review-modified", "review-expired")
# Reason codes after which a plan sends no further step (a failed plan may still compensate).
PLAN_FINAL = ("plan-completed", "plan-failed", "plan-cancelled")


@dataclass
class MetricsSums:
    """The figures of the metrics topic's windows, added up over all windows and workers."""

    windows: int = 0
    anomalies_in: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    decisions: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    review_requests: int = 0

    def add(self, window: MetricsWindow) -> None:
        self.windows += 1
        self.anomalies_in += window.anomalies_in
        self.dead_letters.update(window.dead_letters)
        self.decisions.update(window.decisions)
        self.commands.update(window.commands)
        self.review_requests += window.review_requests

    def differences(self, tally: Tally) -> list[str]:
        """Name each figure that differs from the count of its topic; empty when all agree."""
        pairs: list[tuple[str, int | Counter[str], int | Counter[str]]] = [
            ("anomalies", self.anomalies_in, tally.anomalies),
            ("dead letters", self.dead_letters, tally.dead_letters),
            ("decisions", self.decisions, tally.decisions),
            ("commands", self.commands, tally.commands),
            ("review requests", self.review_requests, tally.reviews),
        ]
        return [f"{name} {_figure(ours)} in the windows, {_figure(theirs)} on the topics"
                for name, ours, theirs in pairs if ours != theirs]


def _figure(value: int | Counter[str]) -> str:
    return str(value) if isinstance(value, int) else f"({_breakdown(+value)})"


@dataclass
class Tally:
    """Counts of what the output topics hold."""

    plan_records: Counter[str] = field(default_factory=Counter)  # orchestrator progress, by reason code
    review_records: Counter[str] = field(default_factory=Counter)  # verdicts and request ends, by reason code
    review_states: dict[str, str] = field(default_factory=dict)  # review id -> latest status

    anomalies: int = 0
    decisions: Counter[str] = field(default_factory=Counter)
    dead_letters: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    reviews: int = 0
    named_command_ids: set[str] = field(default_factory=set)
    seen_command_ids: set[str] = field(default_factory=set)
    incidents: set[str] = field(default_factory=set)
    # Ids already counted: after a worker crash the same message can be sent again.
    seen_ids: set[str] = field(default_factory=set)
    repeated: int = 0
    plans_started: set[str] = field(default_factory=set)
    plans_finished: dict[str, str] = field(default_factory=dict)  # plan id -> final reason code
    wait_for_plans: bool = False
    check_metrics: bool = False
    metrics: MetricsSums = field(default_factory=MetricsSums)
    undecodable: int = 0

    @property
    def accounted(self) -> int:
        return sum(self.decisions.values()) + sum(self.dead_letters.values())

    def complete(self) -> bool:
        if self.wait_for_plans and not self.plans_started <= self.plans_finished.keys():
            return False
        if self.check_metrics and self.metrics.differences(self):
            return False
        return self.anomalies > 0 and self.accounted >= self.anomalies and self.named_command_ids <= self.seen_command_ids


def count_messages(consumer: Consumer, topic: str, timeout_s: float = 10.0) -> int:
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise MitigateError(f"topic {topic} not found; run `mitigate topics create` first")
    total = 0
    for partition in metadata.partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
        total += high - low
    return total


class Follower:
    """Reads decisions, dead letters, review requests and commands from the beginning."""

    def __init__(self, bootstrap_servers: str, topology: Topology, codec: AvroCodec,
                 on_line: Callable[[str], None] | None = None) -> None:
        self.topology = topology
        self.codec = codec
        self.on_line = on_line or (lambda line: None)
        self.tally = Tally()
        self.consumer = Consumer(client_config(
            bootstrap_servers,
            **{"group.id": f"mitigate-report-{uuid.uuid4()}", "auto.offset.reset": "earliest",
               "enable.auto.commit": False},
        ))
        self._handlers: dict[str, Callable[[bytes], None]] = {
            topology.decisions: self._decision,
            topology.dead_letters: self._dead_letter,
            topology.review_requests: self._review,
            topology.metrics: self._metrics,
        }
        for executor in EXECUTORS:
            self._handlers[topology.actions(executor)] = self._command
        self.consumer.subscribe(list(self._handlers))

    def close(self) -> None:
        self.consumer.close()

    def run(self, *, timeout_s: float) -> bool:
        """Consume until every anomaly is accounted for; return False on timeout."""
        deadline = time.monotonic() + timeout_s
        counted_at = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() - counted_at >= ANOMALY_COUNT_INTERVAL_S:
                self.tally.anomalies = count_messages(self.consumer, self.topology.anomalies)
                counted_at = time.monotonic()
            batch = self.consumer.consume(500, timeout=0.5)
            for message in batch:
                error = message.error()
                if error is not None:
                    raise MitigateError(f"consuming failed: {error.str()}")
                value = message.value()
                topic = message.topic()
                if value is not None and topic is not None:
                    self._handlers[topic](value)
            if self.tally.complete():
                # Count once more: anomalies produced since the last count need their outcomes too.
                self.tally.anomalies = count_messages(self.consumer, self.topology.anomalies)
                counted_at = time.monotonic()
                if self.tally.complete():
                    return True
        return False

    def _decode(self, value: bytes, name: str) -> dict[str, object] | None:
        try:
            return self.codec.decode(value, name).record
        except DecodeError as exc:
            self.tally.undecodable += 1
            self.on_line(f"cannot decode a {name}: {exc}")
            return None

    def _repeat(self, message_id: str) -> bool:
        if message_id in self.tally.seen_ids:
            self.tally.repeated += 1
            return True
        self.tally.seen_ids.add(message_id)
        return False

    def _decision(self, value: bytes) -> None:
        record = self._decode(value, "DecisionRecord")
        if record is None:
            return
        decision = DecisionRecord.model_validate(record)
        if self._repeat(decision.decision_id):
            return
        if decision.reason_code.startswith(REVIEW_PROGRESS):
            self.tally.review_records[decision.reason_code] += 1
            if decision.plan_id and decision.reason_code in REVIEW_PLANS:
                self.tally.plans_started.add(decision.plan_id)
            self.on_line(format_decision(decision))
            return
        if decision.reason_code.startswith(PLAN_PROGRESS):
            self.tally.plan_records[decision.reason_code] += 1
            if decision.plan_id and decision.reason_code in PLAN_FINAL:
                self.tally.plans_finished.setdefault(decision.plan_id, decision.reason_code)
            self.on_line(format_decision(decision))
            return
        if decision.outcome == "auto" and decision.plan_id:
            self.tally.plans_started.add(decision.plan_id)
        self.tally.decisions[decision.outcome] += 1
        if decision.incident_id:
            self.tally.incidents.add(decision.incident_id)
        self.tally.named_command_ids.update(decision.command_ids)
        self.on_line(format_decision(decision))

    def _dead_letter(self, value: bytes) -> None:
        record = self._decode(value, "DeadLetter")
        if record is None:
            return
        letter = DeadLetter.model_validate(record)
        if self._repeat(letter.dead_letter_id):
            return
        self.tally.dead_letters[letter.reason_code] += 1
        self.on_line(
            f"{letter.failed_at:%H:%M:%S} {'dead-letter':<11} "
            f"{letter.source_topic}[{letter.source_partition}]@{letter.source_offset} "
            f"reason={letter.reason_code}: {letter.reason}"
        )

    def _review(self, value: bytes) -> None:
        record = self._decode(value, "ReviewRequest")
        if record is None:
            return
        review_id = str(record["review_id"])
        # Every change of a request is published again under its id; only the latest status counts.
        state = f"{review_id}|{record['revision']}|{record['status']}|{len(record['approvals'])}"  # type: ignore[arg-type]
        if self._repeat(state):
            return
        if review_id not in self.tally.review_states:
            self.tally.reviews += 1
        self.tally.review_states[review_id] = str(record["status"])

    def _metrics(self, value: bytes) -> None:
        record = self._decode(value, "MetricsWindow")
        if record is None:
            return
        window = MetricsWindow.model_validate(record)
        if not self._repeat(f"metrics|{window.worker}|{window.window_start.isoformat()}"):
            self.tally.metrics.add(window)

    def _command(self, value: bytes) -> None:
        record = self._decode(value, "ActionCommand")
        if record is None:
            return
        command = ActionCommand.model_validate(record)
        if self._repeat(command.command_id):
            return
        self.tally.commands[command.executor] += 1
        self.tally.seen_command_ids.add(command.command_id)


def format_decision(decision: DecisionRecord) -> str:
    if decision.policy_id:
        policy = f" [{decision.policy_id} v{decision.policy_version}]"
    else:
        policy = "" if decision.outcome == "suppress" else " [no policy]"
    head = (
        f"{decision.decided_at:%Y-%m-%d %H:%M:%S} {decision.outcome:<11} {decision.entity} {decision.anomaly_type} "
        f"{decision.severity} {decision.signal_status} confidence={decision.confidence:.2f}{policy}"
    )
    return f"{head}\n{'':9}{decision.reason_code}: {decision.reason}"


def _breakdown(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items())) or "none"


def print_summary(tally: Tally, out: TextIO) -> bool:
    """Print the summary; return True when the topics are consistent."""
    decisions = sum(tally.decisions.values())
    dead_letters = sum(tally.dead_letters.values())
    commands = sum(tally.commands.values())

    all_accounted = tally.accounted == tally.anomalies
    commands_consistent = tally.named_command_ids <= tally.seen_command_ids
    later_commands = len(tally.seen_command_ids - tally.named_command_ids)
    expected_reviews = tally.decisions.get("review", 0) + tally.plan_records.get("plan-failed", 0)
    reviews_consistent = tally.reviews == expected_reviews

    lines = [
        "",
        "Summary (counted from the output topics)",
        f"  anomalies read    {tally.anomalies:>6}",
        f"  decisions         {decisions:>6}  ({_breakdown(tally.decisions)})",
        f"  incidents         {len(tally.incidents):>6}",
        f"  plans             {len(tally.plans_started):>6}  ({_plan_breakdown(tally)})",
        f"  plan records      {sum(tally.plan_records.values()):>6}  ({_breakdown(tally.plan_records)})",
        f"  dead letters      {dead_letters:>6}  ({_breakdown(tally.dead_letters)})",
        f"  commands          {commands:>6}  ({_breakdown(tally.commands)})",
        f"  review requests   {tally.reviews:>6}  ({_breakdown(Counter(tally.review_states.values()))})",
        f"  review records    {sum(tally.review_records.values()):>6}  ({_breakdown(tally.review_records)})",
        f"  check: each anomaly has one decision or dead letter: {_verdict(all_accounted)} "
        f"({tally.anomalies} {'=' if all_accounted else '!='} {decisions} + {dead_letters})",
        f"  check: commands named by decisions are on the action topics: {_verdict(commands_consistent)} "
        f"({len(tally.named_command_ids)} named, {len(tally.named_command_ids & tally.seen_command_ids)} found; "
        f"{later_commands} more sent by plans: later steps, retries, compensations)",
        f"  check: one review request per review decision or failed plan: {_verdict(reviews_consistent)} "
        f"({expected_reviews} expected, {tally.reviews} requests)",
    ]

    metrics_consistent = True
    if tally.check_metrics:
        differences = tally.metrics.differences(tally)
        metrics_consistent = not differences
        detail = "; ".join(differences) if differences else (
            f"{tally.metrics.windows} windows; anomalies, dead letters, decisions, commands and review requests agree")
        lines.append(f"  check: the metrics windows add up to the topics: {_verdict(metrics_consistent)} ({detail})")

    if tally.repeated:
        lines.append(f"  messages sent again after a restart, counted once: {tally.repeated}")
    if tally.undecodable:
        lines.append(f"  undecodable output messages: {tally.undecodable}")
    out.write("\n".join(lines) + "\n")
    return (all_accounted and commands_consistent and reviews_consistent and metrics_consistent
            and not tally.undecodable)


def _plan_breakdown(tally: Tally) -> str:
    finished = Counter(tally.plans_finished[plan] for plan in tally.plans_started if plan in tally.plans_finished)
    parts = [f"{code.removeprefix('plan-')} {count}" for code, count in sorted(finished.items())]
    running = len(tally.plans_started - tally.plans_finished.keys())
    if running:
        parts.append(f"still running {running}")
    return ", ".join(parts) or "none"


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISMATCH"


def follow(
    bootstrap_servers: str, topology: Topology, codec: AvroCodec, out: TextIO, *, timeout_s: float,
    quiet: bool = False, wait_for_plans: bool = False, check_metrics: bool = False,
) -> bool:
    """Print decisions as they arrive (unless quiet) until every anomaly is accounted for, then the summary."""
    def emit(line: str) -> None:
        if not quiet:
            out.write(line + "\n")
            out.flush()

    follower = Follower(bootstrap_servers, topology, codec, emit)
    follower.tally.wait_for_plans = wait_for_plans
    follower.tally.check_metrics = check_metrics
    try:
        finished = follower.run(timeout_s=timeout_s)
    except KafkaException as exc:
        raise MitigateError(f"following the output topics failed: {exc}") from exc
    finally:
        follower.close()
    if not finished:
        tally = follower.tally
        if tally.accounted < tally.anomalies:
            reason = (f"with {tally.accounted} of {tally.anomalies} anomalies accounted for; is the worker "
                      "running?")
        elif tally.wait_for_plans and not tally.plans_started <= tally.plans_finished.keys():
            reason = (f"with {len(tally.plans_started - tally.plans_finished.keys())} plans still running; are "
                      "the executors running?")
        else:
            reason = ("waiting for the metrics windows to add up to the topics; a window is published when it "
                      "ends, so wait at least the worker's metrics window (metrics.window in the automation file)")
        print(f"mitigate: error: timed out after {timeout_s:.0f} s {reason}", file=sys.stderr)
    consistent = print_summary(follower.tally, out)
    return finished and consistent
