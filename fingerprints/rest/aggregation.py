"""Aggregation jobs and statistics (spec §6.2)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from fingerprints.auth import require_admin
from fingerprints.rest.responses import ORJSONResponse, read_json
from fingerprints.rest.routes import principal_of, services_of
from fingerprints.service import aggregation, stats
from fingerprints.service.aggregation import Job
from fingerprints.service.base import call
from fingerprints.service.inputs import check_keys


def job_json(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "status": job.status,
        "feature_type_id": job.feature_type_id,
        "entity_types": [e.value for e in job.entity_types],
        "force": job.force,
        "progress": {"processed": job.processed, "total": job.total, "percent": job.percent},
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "errors": job.errors,
    }


async def trigger(request: Request) -> ORJSONResponse:
    require_admin(principal_of(request))
    body = await read_json(request)
    check_keys(body, ("feature_type_id", "entity_types", "force"))
    job = await call(aggregation.trigger_aggregation, services_of(request), **body)
    return ORJSONResponse(
        {"job_id": job.id, "status": job.status, "estimated_entities": job.total}, status_code=202
    )


async def job_status(request: Request) -> ORJSONResponse:
    require_admin(principal_of(request))
    job = await call(aggregation.get_job, services_of(request), job_id=request.path_params["job_id"])
    return ORJSONResponse(job_json(job))


async def fingerprint_stats(request: Request) -> ORJSONResponse:
    require_admin(principal_of(request))
    result = await call(stats.fingerprint_stats, services_of(request))
    return ORJSONResponse(
        {
            "feature_types": {
                type_id: {
                    entity_type.value: {
                        "total": c.total,
                        "with_feature": c.with_feature,
                        "outdated": c.outdated,
                    }
                    for entity_type, c in coverage.items()
                }
                for type_id, coverage in result.feature_types.items()
            },
            "storage_bytes": result.storage_bytes,
            "index_status": result.index_status,
            "index": result.index,
            "last_aggregation": result.last_aggregation,
        }
    )


routes = [
    Route("/v1/admin/fingerprints/aggregate", trigger, methods=["POST"]),
    Route("/v1/admin/fingerprints/aggregate/{job_id}", job_status, methods=["GET"]),
    Route("/v1/admin/fingerprints/stats", fingerprint_stats, methods=["GET"]),
]
