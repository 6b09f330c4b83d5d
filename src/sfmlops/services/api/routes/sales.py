"""Sales ingestion."""

from __future__ import annotations

from fastapi import APIRouter, Request

from sfmlops.services import ingestion
from sfmlops.services.api import schemas
from sfmlops.services.api.deps import MetricsDep, SettingsDep, WriteEngineDep, record_write

router = APIRouter(prefix="/v1/sales", tags=["sales"])
SOURCE = "api"


@router.post(
    "",
    response_model=schemas.IngestResponse,
    responses={
        # OpenAPI links: where a client (or a stateful API test) reads back what it wrote.
        200: {
            "links": {
                "StoreOfFirstRecord": {
                    "operationRef": "#/paths/~1v1~1stores~1{store_id}/get",
                    "parameters": {"store_id": "$request.body#/records/0/store_id"},
                },
                "SalesOfFirstRecord": {
                    "operationRef": "#/paths/~1v1~1stores~1{store_id}~1sales/get",
                    "parameters": {"store_id": "$request.body#/records/0/store_id"},
                },
            }
        },
        401: {"model": schemas.ErrorBody},
        403: {"model": schemas.ErrorBody},
        413: {"model": schemas.ErrorBody},
    },
    summary="Ingest a batch of sales records",
)
def ingest_sales(
    batch: schemas.SalesBatch,
    request: Request,
    engine: WriteEngineDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> schemas.IngestResponse:
    """Validate each record with the same rules as file loading and upsert the valid ones.

    Rejected records are kept in `ingest_dead_letters` with their reasons and listed in the
    response by position; the rest are stored (an idempotent upsert on store, product, date).
    """
    limits = ingestion.sales_limits(settings)
    result = ingestion.ingest_records(engine, batch.records, source=SOURCE, limits=limits)
    record_write(
        request,
        engine,
        "sales.ingest",
        {
            "records": len(batch.records),
            "accepted": result.accepted,
            "rejected": len(result.rejected),
        },
    )
    metrics.sales_ingested.labels(SOURCE).inc(result.accepted)
    metrics.sales_rejected.labels(SOURCE).inc(len(result.rejected))
    metrics.dead_letters.labels(SOURCE).inc(len(result.rejected))
    outcome = (
        "accepted" if not result.rejected else ("rejected" if result.accepted == 0 else "partial")
    )
    return schemas.IngestResponse(
        status=outcome,
        accepted=result.accepted,
        rejected=[schemas.RejectedRecord(index=r.index, reason=r.reason) for r in result.rejected],
    )
