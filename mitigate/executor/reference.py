"""The reference executors shipped with mitigate, by name."""

from __future__ import annotations

from pathlib import Path

from mitigate.executor.config import ExecutorsConfig
from mitigate.executor.demo_target import DemoTarget
from mitigate.executor.handler import Handler
from mitigate.executor.shell import ShellRunbooks
from mitigate.executor.ticket import TicketTracker
from mitigate.executor.webhook import Webhooks

REFERENCE_EXECUTORS: tuple[str, ...] = ("demo-target", "shell", "ticket", "webhook")


def create_handler(name: str, config: ExecutorsConfig, state_dir: Path) -> Handler:
    """Create the handler of reference executor `name`; raise ConfigurationError when its settings cannot work."""
    if name == "demo-target":
        return DemoTarget(config.demo_target, state_dir)
    if name == "shell":
        return ShellRunbooks(config.shell, state_dir)
    if name == "ticket":
        return TicketTracker(config.ticket, state_dir)
    if name == "webhook":
        return Webhooks(config.webhook, state_dir)
    raise ValueError(f"unknown reference executor {name!r}; known: {', '.join(REFERENCE_EXECUTORS)}")
