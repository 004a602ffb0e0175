"""Keep faust-streaming from skipping a message when it seeks to the committed offsets.

After a rebalance, Faust resumes the stream partitions and then seeks them to
their committed offsets (`Consumer.perform_seek`). While the seek waits for
the broker, the fetch loop goes on handing out the batch it fetched before.
The seek sets each partition's read offset back to the committed one, and a
record of that old batch, a few offsets ahead, then moves the read offset past
the records fetched again from the committed offset. Faust drops records below
the read offset, so one record per partition is never processed and its offset
is committed later with the ones around it.

The fault suite shows this after a worker is killed: one event per anomalies
partition was missing from every output (faust-streaming 0.15.3, the latest
release). The guard stops the flow for the seek: the fetch loop abandons the
old batch, and fetching starts again from the committed offsets. The seek
does not move a stream partition without a committed offset, and its fetch
position is already past the abandoned batch. The guard starts such a
partition over from the beginning. Records handed out before the seek and not yet committed
are delivered again, which the pipeline already tolerates (at-least-once
processing).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from faust.transport.consumer import Consumer

logger = logging.getLogger(__name__)

_GUARDED = "_mitigate_seek_guarded"


def guard_seek() -> None:
    """Wrap Consumer.perform_seek so that no fetched record is handed out while it runs; idempotent."""
    original: Callable[[Any], Awaitable[None]] = Consumer.perform_seek
    if getattr(original, _GUARDED, False):
        return

    @functools.wraps(original)
    async def perform_seek(self: Any) -> None:
        if not self.flow_active:
            await original(self)
            return
        self.stop_flow()
        try:
            await original(self)
            changelogs = self.app.tables.changelog_topics
            for tp in self.assignment():
                if tp.topic not in changelogs and self._committed_offset.get(tp) is None:
                    logger.debug("no committed offset for %s; reading it again from the beginning", tp)
                    await self.seek(tp, 0)
        finally:
            self.resume_flow()

    setattr(perform_seek, _GUARDED, True)
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
