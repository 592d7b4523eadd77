"""Health: liveness, readiness (Kafka, ClickHouse and the in-process sink) and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.dependencies import AppSettings, History, Live
from api.models import Health, NotReady, Ready
from api.responses import errors, json_response
from api.store import BackendUnavailableError
from mbo_core.settings import Settings

#: Readiness probes must answer quickly even when a backend hangs.
PROBE_TIMEOUT_S = 3.0

#: Open to every caller (no token), but the Host check applies to every route.
router = APIRouter(responses=errors(400))


@router.get("/healthz", summary="Process alive", response_model=Health)
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get(
    "/readyz",
    summary="Kafka and ClickHouse reachable",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "What is down, and why."}},
)
async def readyz(request: Request, state: Live, store: History, settings: AppSettings) -> Response:
    down: dict[str, str] = {}
    kafka, clickhouse = await asyncio.gather(
        _probe(lambda: _kafka_probe(settings)), _probe(store.ping)
    )
    if kafka:
        down["kafka"] = kafka
    if clickhouse:
        down["clickhouse"] = clickhouse
    if request.app.state.sink_error:
        down["sink"] = request.app.state.sink_error
    if down:
        return json_response(
            {"status": "unavailable", "unavailable": sorted(down), "errors": down}, 503
        )
    return json_response({"status": "ready", "live_caught_up": state.caught_up.is_set()})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def _probe(check: Callable[[], Any]) -> str | None:
    try:
        await asyncio.wait_for(check(), PROBE_TIMEOUT_S)
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    except BackendUnavailableError as exc:
        return exc.message
    except Exception as exc:  # any failure to reach the backend is "not ready"
        return " ".join(str(exc).split())[:300] or type(exc).__name__
    return None


async def _kafka_probe(settings: Settings) -> None:
    from mbo_core.kafka.clients import make_admin  # noqa: PLC0415

    admin = make_admin(settings, "api-ready")
    try:
        await admin.start()
        await admin.list_topics()
    finally:
        await admin.close()
