"""Subscription resolvers (graphql-transport-ws)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import strawberry

from fingerprints.auth import require_admin
from fingerprints.schema.context import Info
from fingerprints.schema.types import AggregationJob
from fingerprints.service import aggregation
from fingerprints.service.base import call

POLL_SECONDS = 0.2


async def aggregation_job(info: Info, id: strawberry.ID) -> AsyncGenerator[AggregationJob, None]:
    """The job's state now, then whenever it changes, until it has finished (admin only)."""
    require_admin(info.context.principal)
    last = None
    while True:
        job = await call(aggregation.get_job, info.context.services, job_id=str(id))
        state = (job.status, job.processed, job.total)
        if state != last:
            last = state
            yield AggregationJob.of(job)
        if job.done:
            return
        await asyncio.sleep(POLL_SECONDS)
