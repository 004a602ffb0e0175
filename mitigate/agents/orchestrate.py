"""The orchestrate agent: plan controls, action results, review requests and verdicts, keyed by incident id.

A timer sends ticks for plan deadlines, retries and review deadlines.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import faust
from pydantic import ValidationError

from mitigate.agents.anomalies import Sender
from mitigate.agents.reference import TextKeyStore
from mitigate.codec import AvroCodec
from mitigate.errors import DecodeError
from mitigate.limits import epoch_ms
from mitigate.models import ActionResult, DecisionRecord, PlanControl, ReviewRequest, ReviewVerdict
from mitigate.orchestration import Effects, Orchestrator
from mitigate.pipeline import Outgoing, Processed, encode_message
from mitigate.review import IncidentBook, ReviewDesk, SentOutputs, StoredMessage
from mitigate.telemetry import Telemetry
from mitigate.topology import Topology

logger = logging.getLogger(__name__)

TICK_INTERVAL_S = 1.0
# Finished plans are kept this long, so that late or duplicate results find them.
FINISHED_RETENTION_MS = 24 * 3600 * 1000
# Outputs of this many inputs are kept per incident. Inputs are delivered again only
# back to the last offset commit, a few seconds of one incident's traffic.
SENT_KEPT = 32


class PlanAgent:
    """Runs the orchestrator and the review desk for the incidents of this worker's partitions."""

    def __init__(
        self, app: faust.App, topology: Topology, orchestrator: Orchestrator, desk: ReviewDesk, codec: AvroCodec,
        sender: Sender, plans: TextKeyStore, partitions: int, telemetry: Telemetry,
    ) -> None:
        self.app = app
        self.telemetry = telemetry
        self.topology = topology
        self.orchestrator = orchestrator
        self.desk = desk
        self.codec = codec
        self.sender = sender
        self.plans = plans
        self.grace_ms = int(orchestrator.settings.result_grace * 1000)
        self.verdict_wait_ms = int(desk.settings.verdict_wait * 1000)
        # When each incident next needs a tick, with the partition of its plans, so the timer
        # does not decode every stored plan each second. Filled from the table on first use
        # (after a start or restart) and kept up to date by _store.
        self._due: dict[str, tuple[int, int]] | None = None
        self._active: set[int] = set()
        self._source = ""  # coordinates of the input being processed
        source = app.topic(topology.plans, topology.action_results, topology.review_requests,
                           topology.review_verdicts, key_serializer="raw", value_serializer="raw",
                           partitions=partitions)
        app.agent(source, name="orchestrate")(self._run)
        app.timer(TICK_INTERVAL_S, name="orchestrate-timer")(self._send_ticks)

    async def _run(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            now = datetime.now(UTC)
            self._source = f"{message.topic}[{message.partition}]@{message.offset}"
            try:
                if message.topic == self.topology.plans:
                    processed = self._control(message.value, message.partition, now)
                elif message.topic == self.topology.action_results:
                    processed = self._result(message.value, now)
                elif message.topic == self.topology.review_requests:
                    processed = self._request(message.value, message.partition, now)
                else:
                    processed = self._verdict(message.value, message.partition, now)
            except DecodeError as exc:
                # A plan whose stored decision record cannot be read any more must not
                # stop the partition: the message is skipped and the error logged.
                logger.error("orchestrate skipped source=%s[%d]@%d: %s",
                             message.topic, message.partition, message.offset, exc,
                             extra={"source": f"{message.topic}[{message.partition}]@{message.offset}"})
                continue
            if processed is not None:
                self.sender.send(processed)

    @staticmethod
    def _log(effects: Effects) -> None:
        for record in effects.records:
            if record.verdict_id is not None:
                continue  # _verdict logs the verdict's outcome
            level = logging.WARNING if record.outcome == "review" else logging.INFO
            logger.log(level, "plan %s incident=%s plan=%s trace_id=%s: %s", record.reason_code, record.incident_id,
                       record.plan_id, record.trace_id, record.reason,
                       extra={"incident_id": record.incident_id, "plan_id": record.plan_id,
                              "trace_id": record.trace_id, "review_id": record.review_id})

    def _load(self, incident_id: str) -> IncidentBook:
        raw = self.plans.get(incident_id)
        return IncidentBook.model_validate_json(raw) if raw else IncidentBook()

    def _sent_before(self, book: IncidentBook) -> Processed | None:
        """Return the messages the current input produced before, when a crash made Kafka deliver it again."""
        for entry in book.sent:
            if entry.source == self._source:
                logger.info("input delivered again source=%s: sending its %d messages again", self._source,
                            len(entry.messages), extra={"source": self._source})
                return Processed(tuple(Outgoing(item.topic, item.key, item.value, tuple(item.headers))
                                       for item in entry.messages))
        return None

    def _store(self, incident_id: str, book: IncidentBook, now: datetime) -> None:
        now_ms = epoch_ms(now)
        book.plans = {
            plan_id: plan for plan_id, plan in book.plans.items()
            if plan.state == "running" or now_ms - plan.updated_ms < FINISHED_RETENTION_MS
        }
        book.reviews = {
            review_id: state for review_id, state in book.reviews.items()
            if state.request.status == "pending" or state.request.updated_at is None
            or now_ms - epoch_ms(state.request.updated_at) < FINISHED_RETENTION_MS
        }
        self.plans[incident_id] = book.model_dump_json().encode()
        if self._due is not None:
            self._note_due(incident_id, book)

    def _note_due(self, incident_id: str, book: IncidentBook) -> None:
        assert self._due is not None
        times = [(plan.partition, due) for plan in book.plans.values()
                 if (due := plan.due_ms(self.grace_ms)) is not None]
        review_due = self.desk.due_ms(book, self.verdict_wait_ms)
        if review_due is not None:
            partition = next((state.partition for state in book.reviews.values()),
                             next((item.partition for item in book.waiting), 0))
            times.append((partition, review_due))
        if times:
            self._due[incident_id] = min(times, key=lambda item: item[1])
        else:
            self._due.pop(incident_id, None)

    def _control(self, value: bytes | None, partition: int, now: datetime) -> Processed | None:
        try:
            control = PlanControl.model_validate(self.codec.decode(value, "PlanControl").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("plan control ignored partition=%d: %s", partition, exc)
            return None
        book = self._load(control.incident_id)
        if (again := self._sent_before(book)) is not None:
            return again
        effects = Effects()
        if control.kind == "start":
            if control.plan_id in book.plans:
                return None  # a redelivered start; the plan runs already
            if book.veto is not None:
                effects = self.desk.reject_vetoed_plan(book, control, now)
                logger.warning("plan not started incident=%s plan=%s: vetoed by %s", control.incident_id,
                               control.plan_id, book.veto.operator)
                self._log(effects)
                return self._messages(effects)
            effects = self.desk.plan_started(book, control, now)
            plan, started = self.orchestrator.start(control, partition, now)
            effects.extend(started)
            book.plans[control.plan_id] = plan
            if control.decision is not None:
                lineage = DecisionRecord.model_validate(
                    self.codec.decode(control.decision, "DecisionRecord").record).lineage
                self.telemetry.plan_started(control, lineage.event_time, lineage.ingest_time, now)
            logger.info("plan started incident=%s plan=%s steps=%d trace_id=%s",
                        control.incident_id, control.plan_id, len(control.steps), control.trace_id,
                        extra={"incident_id": control.incident_id, "plan_id": control.plan_id,
                               "trace_id": control.trace_id})
        elif control.kind == "cancel":
            # The incident resolved: every plan it started stops, not only the one the control names,
            # and its pending review requests close.
            for running in book.plans.values():
                effects.extend(self.orchestrator.cancel(running, control, now))
            effects.extend(self.desk.incident_resolved(book, control, now))
        else:
            for plan in book.plans.values():
                effects.extend(self.orchestrator.tick(plan, now))
            effects.extend(self.desk.expire(book, now))
        return self._finish(control.incident_id, book, effects, partition, now)

    def _finish(self, incident_id: str, book: IncidentBook, effects: Effects, partition: int, now: datetime,
                opened: int = 0) -> Processed:
        """Take new review requests into the book, keep the outputs in it, store it; return the outputs."""
        opened += self._open_new_reviews(book, effects, partition, now)
        self._log(effects)
        processed = self._messages(effects)
        if processed.messages:
            kept = SentOutputs(source=self._source, messages=[
                StoredMessage(topic=item.topic, key=item.key, value=item.value, headers=list(item.headers))
                for item in processed.messages])
            book.sent = [*book.sent[-(SENT_KEPT - 1):], kept]
        self._store(incident_id, book, now)
        for command in effects.commands:
            self.telemetry.command(command)
        ended = sum(1 for review in effects.reviews if review.status != "pending")
        self.telemetry.reviews_pending_change(opened, ended)
        for record in effects.records:
            plan = book.plans.get(record.plan_id or "") if record.reason_code == "plan-completed" else None
            if plan is not None and plan.control.origin != "escalation":
                changed = any(run.status == "succeeded" for run in plan.runs.values())
                self.telemetry.plan_completed(plan.control.origin, changed)
        return processed

    def _open_new_reviews(self, book: IncidentBook, effects: Effects, partition: int, now: datetime) -> int:
        """Take review requests the orchestrator just raised (a failed plan) into the book; return how many."""
        opened = 0
        for review in list(effects.reviews):
            if review.review_id not in book.reviews and review.status == "pending":
                effects.extend(self.desk.open(book, review, partition, now))
                self.telemetry.review_request(review)
                opened += 1
        return opened

    def _request(self, value: bytes | None, partition: int, now: datetime) -> Processed | None:
        try:
            request = ReviewRequest.model_validate(self.codec.decode(value, "ReviewRequest").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("review request ignored partition=%d: %s", partition, exc)
            return None
        if request.status != "pending" or request.revision != 1 or request.approvals:
            return None  # a later state this agent published, read back; only new requests open a review
        incident_id = request.incident_id or request.event_id
        book = self._load(incident_id)
        if (again := self._sent_before(book)) is not None:
            return again
        if request.review_id in book.reviews:
            return None  # delivered again
        if request.decision is None:
            logger.warning("review request %s has no decision record (written by an older version); "
                           "verdicts on it cannot be applied", request.review_id)
            return None
        effects = self.desk.open(book, request, partition, now)
        return self._finish(incident_id, book, effects, partition, now, opened=int(request.review_id in book.reviews))

    def _verdict(self, value: bytes | None, partition: int, now: datetime) -> Processed | None:
        try:
            verdict = ReviewVerdict.model_validate(self.codec.decode(value, "ReviewVerdict").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("review verdict ignored partition=%d: %s", partition, exc)
            return None
        if verdict.incident_id is None:
            logger.error("review verdict %s ignored: it names no incident", verdict.verdict_id)
            return None
        book = self._load(verdict.incident_id)
        if (again := self._sent_before(book)) is not None:
            return again
        if verdict.review_id not in book.reviews:
            logger.warning("verdict waits for its review request review=%s verdict=%s operator=%s",
                           verdict.review_id, verdict.verdict_id, verdict.operator)
        effects = self.desk.on_verdict(book, verdict, partition, now)
        for record in effects.records:
            if record.verdict_id == verdict.verdict_id:
                logger.info("verdict %s review=%s operator=%s incident=%s: %s", record.reason_code,
                            verdict.review_id, verdict.operator, verdict.incident_id, record.reason,
                            extra={"incident_id": verdict.incident_id, "review_id": verdict.review_id,
                                   "verdict_id": verdict.verdict_id, "operator": verdict.operator,
                                   "trace_id": record.trace_id})
                ended = next((review for review in effects.reviews if review.review_id == verdict.review_id
                              and review.status != "pending"), None)
                self.telemetry.verdict(verdict.kind, record.reason_code != "verdict-rejected", verdict.incident_id,
                                       ended, now)
        return self._finish(verdict.incident_id, book, effects, partition, now)

    def _result(self, value: bytes | None, now: datetime) -> Processed | None:
        try:
            result = ActionResult.model_validate(self.codec.decode(value, "ActionResult").record)
        except (DecodeError, ValidationError) as exc:
            logger.error("action result ignored by the orchestrator: %s", exc)
            return None
        if result.incident_id is None:
            return None
        book = self._load(result.incident_id)
        if (again := self._sent_before(book)) is not None:
            return again
        plan = book.plans.get(result.decision_id)
        if plan is None:
            logger.warning("result for an unknown plan ignored incident=%s decision=%s command=%s",
                           result.incident_id, result.decision_id, result.command_id)
            return None
        effects = self.orchestrator.on_result(plan, result, now)
        if result.status == "succeeded" and plan.contained_ms is None and plan.control.origin != "escalation":
            plan.contained_ms = epoch_ms(now)
            if plan.control.first_seen is not None:
                self.telemetry.contained(result.incident_id, plan.control.first_seen, now)
        return self._finish(result.incident_id, book, effects, plan.partition, now)

    def _messages(self, effects: Effects) -> Processed:
        messages = []
        for command in effects.commands:
            messages.append(encode_message(self.codec, self.topology.actions(command.executor),
                                           command.target.encode(), command, command.trace_id))
        for review in effects.reviews:
            key = (review.incident_id or review.event_id).encode()
            messages.append(encode_message(self.codec, self.topology.review_requests, key, review, review.trace_id))
        for record in effects.records:
            messages.append(encode_message(self.codec, self.topology.decisions, record.entity.encode(), record,
                                           record.trace_id))
        return Processed(tuple(messages))

    async def _send_ticks(self) -> None:
        """Ask the agent to check plans whose deadline or retry time has come.

        The timer only reads the table: a RocksDB table can be changed only while
        processing a message of its partition, so the tick goes through the plans
        topic, keyed by incident id like everything else the agent changes.
        """
        active = {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.topology.plans}
        if self._due is None or active != self._active:
            # First tick, or a rebalance moved partitions: read the plans this worker now owns.
            self._active = active
            self._due = {}
            pending = 0
            for incident_id in list(self.plans):
                book = self._load(incident_id)
                self._note_due(incident_id, book)
                pending += sum(1 for state in book.reviews.values() if state.request.status == "pending")
            self.telemetry.set_pending_reviews(pending)
        now = datetime.now(UTC)
        now_ms = epoch_ms(now)
        for incident_id, (partition, due_ms) in list(self._due.items()):
            if partition not in active or due_ms > now_ms:
                continue
            tick = PlanControl(kind="tick", incident_id=incident_id, plan_id=incident_id, trace_id=incident_id,
                               issued_at=now)
            self.sender.produce(self.topology.plans, incident_id.encode(), self.codec.encode("PlanControl", tick.to_avro()))
