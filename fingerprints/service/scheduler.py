"""The aggregation scheduler: an asyncio task of the app lifespan.

It runs queued jobs one at a time in a worker thread (queries keep answering meanwhile) and,
every ``aggregation_interval`` seconds, queues a sweep of whatever is stale. A job is claimed
under a lease that a heartbeat renews while it runs; a job whose replica died (or a crash left
``running``) is claimed again once its lease runs out, and a job whose lease was lost stops at
its next chunk. A graceful stop gives the running job's lease up at once.
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

    async def _run_leased(self, job_id: str) -> None:
        """Run one claimed job while a heartbeat thread renews its lease; the job stops at its
        next chunk when the service stops or the lease is lost."""
        job_stop = threading.Event()
        finished = threading.Event()

        def heartbeat() -> None:
            every = self.svc.settings.job_lease_seconds / 3
            next_renewal = time.monotonic() + every
            while not finished.wait(0.1):
                if self.stopping.is_set():
                    job_stop.set()
                if time.monotonic() >= next_renewal:
                    next_renewal = time.monotonic() + every
                    try:
                        renewed = aggregation.renew_lease(self.svc, job_id)
                    except Exception:  # noqa: BLE001 - try again at the next beat
                        log.exception("aggregation job %s: lease renewal failed", job_id)
                        continue
                    if not renewed:
                        log.warning("aggregation job %s: lease lost to another replica; stopping", job_id)
                        job_stop.set()
                        return

        beat = threading.Thread(target=heartbeat, name=f"fingerprints-lease-{job_id}", daemon=True)
        beat.start()
        try:
            await call(aggregation.run_job, self.svc, job_id, stopping=job_stop)
        finally:
            finished.set()
            await call(beat.join)
        if self.stopping.is_set():
            await call(aggregation.release_lease, self.svc, job_id)

    async def _run(self) -> None:
        assert self._wake is not None
        last_sweep = time.monotonic()
        while not self.stopping.is_set():
            try:
                job_id = await call(aggregation.claim_next_job, self.svc)
                if job_id is not None:
                    await self._run_leased(job_id)
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
