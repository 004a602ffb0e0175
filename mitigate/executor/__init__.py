"""Executors: services that perform the commands of one `actions.<executor>` topic and report the results.

Write an executor by implementing `Handler` and running it with
`ExecutorService`; docs/executors.md has a complete example and the
guarantees. The reference executors are in `reference.create_handler`.
"""

from mitigate.executor.handler import CommandRejected, Deadline, ExecutorError, Handler, Outcome
from mitigate.executor.processing import CommandProcessor
from mitigate.executor.service import ExecutorService
from mitigate.executor.store import CommandStore, StoredCommand

__all__ = [
    "CommandProcessor",
    "CommandRejected",
    "CommandStore",
    "Deadline",
    "ExecutorError",
    "ExecutorService",
    "Handler",
    "Outcome",
    "StoredCommand",
]
