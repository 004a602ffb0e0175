"""Blast-radius limits: budgets per subsystem, run caps per fingerprint and target, the circuit breaker.

Each limit is a list of (time, count) entries within a sliding window, stored
as JSON in a table, so that a restarted worker recovers it from the changelog.
Times are epoch milliseconds of the signals' event time, so that a replay
(see `mitigate simulate`) counts exactly as the live run did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import logging

import orjson

from mitigate.automation import Budgets, CircuitBreaker
from mitigate.models import GateResult
from mitigate.policy import ActivePolicy, RunCap, format_duration

logger = logging.getLogger(__name__)

Entries = list[list[int]]  # [[epoch ms, count], ...], oldest first


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _load(store: MutableMapping[str, bytes], key: str) -> Entries:
    raw = store.get(key)
    return orjson.loads(raw) if raw else []


def _within(entries: list[list[Any]], now_ms: int, window_s: float) -> list[list[Any]]:
    start = now_ms - int(window_s * 1000)
    return [entry for entry in entries if entry[0] > start]


def _total(entries: Iterable[list[Any]]) -> int:
    return sum(entry[1] for entry in entries)


class Budget:
    """Automated commands per subsystem within a sliding window."""

    def __init__(self, settings: Budgets, store: MutableMapping[str, bytes]) -> None:
        self.settings = settings
        self.store = store

    def gate(self, subsystem: str, commands: int, now: datetime) -> GateResult:
        used = _total(_within(_load(self.store, subsystem), epoch_ms(now), self.settings.window))
        limit = self.settings.limit_for(subsystem)
        return GateResult(
            name="subsystem-budget",
            passed=used + commands <= limit,
            value=f"{used} + {commands} commands in {format_duration(self.settings.window)}",
            threshold=f"<= {limit}",
        )

    def spend(self, subsystem: str, commands: int, now: datetime) -> None:
        now_ms = epoch_ms(now)
        entries = _within(_load(self.store, subsystem), now_ms, self.settings.window)
        entries.append([now_ms, commands])
        self.store[subsystem] = orjson.dumps(entries)


class RunCaps:
    """How often each policy's plan ran for one fingerprint and for one target."""

    def __init__(self, store: MutableMapping[str, bytes]) -> None:
        self.store = store

    @staticmethod
    def _keys(policy: ActivePolicy, fingerprint: str, target: str) -> list[tuple[str, str, list[RunCap]]]:
        limits = policy.document.limits
        return [
            ("fingerprint", f"{policy.policy_id}|fingerprint|{fingerprint}", limits.per_fingerprint),
            ("target", f"{policy.policy_id}|target|{target}", limits.per_target),
        ]

    def gates(self, policy: ActivePolicy, fingerprint: str, target: str, now: datetime) -> list[GateResult]:
        now_ms = epoch_ms(now)
        results = []
        for scope, key, caps in self._keys(policy, fingerprint, target):
            entries = _load(self.store, key)
            for cap in caps:
                runs = _total(_within(entries, now_ms, cap.window))
                results.append(GateResult(
                    name=f"run-cap-{scope}",
                    passed=runs < cap.runs,
                    value=f"{runs} runs in {format_duration(cap.window)}",
                    threshold=f"< {cap.runs}",
                ))
        return results

    def record(self, policy: ActivePolicy, fingerprint: str, target: str, now: datetime) -> None:
        now_ms = epoch_ms(now)
        for _, key, caps in self._keys(policy, fingerprint, target):
            if not caps:
                continue
            longest = max(cap.window for cap in caps)
            entries = _within(_load(self.store, key), now_ms, longest)
            entries.append([now_ms, 1])
            self.store[key] = orjson.dumps(entries)


class Breaker(Protocol):
    """The global circuit breaker, as the decide stage uses it."""

    def gate(self, now: datetime) -> GateResult: ...

    def record_commands(self, count: int, now: datetime) -> None: ...


@dataclass(frozen=True, slots=True)
class BreakerShard:
    """One writer's share of the breaker's counts: commands sent and results seen."""

    commands: Entries
    results: list[list[Any]]  # [[epoch ms, 1 if failed else 0, command id], ...]
    tripped_at: int | None

    def dump(self) -> bytes:
        return orjson.dumps({"commands": self.commands, "results": self.results, "tripped_at": self.tripped_at})

    @classmethod
    def load(cls, raw: bytes | None) -> BreakerShard:
        if not raw:
            return cls([], [], None)
        data = orjson.loads(raw)
        return cls(data["commands"], data["results"], data["tripped_at"])


class ShardedBreaker:
    """A circuit breaker whose counts are spread over shards of one shared table.

    Each writer (a partition of an agent) owns one shard and is the only one to
    write it; every reader adds all shards up. In the worker the table is a
    global table, so every worker reads every shard.
    """

    def __init__(self, settings: CircuitBreaker, store: MutableMapping[str, bytes], shard: str) -> None:
        self.settings = settings
        self.store = store
        self.shard = shard

    def state(self, now: datetime) -> tuple[int, int, int, int | None]:
        """Return (commands, results, failures, tripped_at) over all shards."""
        now_ms = epoch_ms(now)
        commands = results = failures = 0
        tripped: int | None = None
        for raw in list(self.store.values()):
            shard = BreakerShard.load(raw)
            commands += _total(_within(shard.commands, now_ms, self.settings.window))
            recent = _within(shard.results, now_ms, self.settings.window)
            results += len(recent)
            failures += _total(recent)
            if shard.tripped_at is not None and (tripped is None or shard.tripped_at > tripped):
                tripped = shard.tripped_at
        return commands, results, failures, tripped

    def gate(self, now: datetime) -> GateResult:
        now_ms = epoch_ms(now)
        commands, results, failures, tripped = self.state(now)
        cool_down_ms = int(self.settings.cool_down * 1000)
        if tripped is not None and now_ms - tripped < cool_down_ms:
            remaining = format_duration(round((cool_down_ms - (now_ms - tripped)) / 1000))
            return GateResult(name="circuit-breaker", passed=False, value=f"open, {remaining} of cool-down left",
                              threshold="closed")
        reason = self._trip_reason(commands, results, failures)
        if reason:
            logger.warning("circuit breaker tripped: %s; automation is review-only for %s",
                           reason, format_duration(self.settings.cool_down))
            self._write(lambda shard: BreakerShard(shard.commands, shard.results, now_ms))
            return GateResult(name="circuit-breaker", passed=False, value=f"tripped now: {reason}",
                              threshold="closed")
        return GateResult(name="circuit-breaker", passed=True,
                          value=f"closed: {commands} commands, {failures}/{results} failed "
                                f"in {format_duration(self.settings.window)}",
                          threshold=f"< {self.settings.max_commands} commands, failure rate "
                                    f"<= {self.settings.max_failure_rate:g}")

    def _trip_reason(self, commands: int, results: int, failures: int) -> str | None:
        window = format_duration(self.settings.window)
        if commands >= self.settings.max_commands:
            return f"{commands} commands in {window} (limit {self.settings.max_commands})"
        if results >= self.settings.min_results and failures / results > self.settings.max_failure_rate:
            return f"{failures} of {results} results failed in {window} (limit {self.settings.max_failure_rate:g})"
        return None

    def record_commands(self, count: int, now: datetime) -> None:
        now_ms = epoch_ms(now)
        self._write(lambda shard: BreakerShard(
            [*_within(shard.commands, now_ms, self.settings.window), [now_ms, count]], shard.results, shard.tripped_at
        ))

    def record_result(self, failed: bool, now: datetime, command_id: str | None = None) -> None:
        """Count one result; a result seen before for the same command id is not counted again.

        Executors publish a stored result again when a command is redelivered,
        so the same result can arrive more than once.
        """
        now_ms = epoch_ms(now)
        shard = BreakerShard.load(self.store.get(self.shard))
        recent = _within(shard.results, now_ms, self.settings.window)
        if command_id is not None and any(len(entry) > 2 and entry[2] == command_id for entry in recent):
            return
        entry: list[Any] = [now_ms, int(failed)] if command_id is None else [now_ms, int(failed), command_id]
        self.store[self.shard] = BreakerShard(shard.commands, [*recent, entry], shard.tripped_at).dump()

    def _write(self, change: Callable[[BreakerShard], BreakerShard]) -> None:
        self.store[self.shard] = change(BreakerShard.load(self.store.get(self.shard))).dump()
