"""The aggregation scheduler: an asyncio task of the app lifespan.

It runs queued jobs one at a time in a worker thread (queries keep answering meanwhile) and,
every ``aggregation_interval`` seconds, queues a sweep of whatever is stale. Jobs a crash left
``running`` are queued again at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

from fingerprints.service import aggregation
from fingerprints.service.base import Services, call

log = logging.getLogger(__name__)

IDLE_POLL = 1.0  # seconds between looks at the queue when nothing woke us


class Scheduler:
    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.stopping = threading.Event()  # read by running jobs between chunks
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="fingerprints-scheduler")

    def wake(self) -> None:
        """Look at the queue now (callable from any thread)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        self.stopping.set()
        self.wake()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        assert self._wake is not None
        await call(aggregation.requeue_interrupted, self.svc)
        last_sweep = time.monotonic()
        while not self.stopping.is_set():
            try:
                job_id = await call(aggregation.claim_next_job, self.svc)
                if job_id is not None:
                    await call(aggregation.run_job, self.svc, job_id, stopping=self.stopping)
                    continue
                interval = self.svc.settings.aggregation_interval
                if interval > 0 and time.monotonic() - last_sweep >= interval:
                    last_sweep = time.monotonic()
                    if await call(aggregation.sweep_stale, self.svc) is not None:
                        continue
            except Exception:  # noqa: BLE001 - the scheduler outlives one bad job
                log.exception("aggregation scheduler step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=IDLE_POLL)
            self._wake.clear()
