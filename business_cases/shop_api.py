"""Stand-in HTTP APIs for the blueprint examples: a shop's scheduling and job API, a supplier and a catalog.

Like real APIs that can be retried safely, the write endpoints dedupe by ``Idempotency-Key``: a request
with a key seen before gets the first answer and changes nothing. ``ShopApi.calls`` records every request
(path, key), so tests can check what was sent and how often.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse


class ShopApi:
    """State of the stand-in APIs. ``failures``: path -> how many more requests to it answer 503 first."""

    def __init__(self, *, token: str = "shop-demo-token", lead_time_s: float = 0.5) -> None:
        self.token = token
        self.lead_time_s = lead_time_s
        self.failures: dict[str, int] = {}
        self.calls: list[tuple[str, str | None]] = []
        self.jobs: dict[str, dict[str, Any]] = {}  # job_id -> job
        self.catalog: dict[str, list[dict[str, Any]]] = {}  # feed -> products
        self._answers: dict[str, Any] = {}  # Idempotency-Key -> first answer
        self._lock = threading.Lock()

    def app(self) -> FastAPI:
        app = FastAPI(title="Stageflow example APIs")

        @app.middleware("http")
        async def record_and_fail(request: Request, call_next: Any) -> Any:
            with self._lock:
                self.calls.append((request.url.path, request.headers.get("idempotency-key")))
                left = self.failures.get(request.url.path, 0)
                if left:
                    self.failures[request.url.path] = left - 1
            if left:
                return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
            return await call_next(request)

        @app.get("/schedule")
        async def schedule(order_id: str, date: str) -> dict[str, Any]:
            hour = 8 + sum(order_id.encode()) % 9
            start = datetime.fromtimestamp(time.time() + self.lead_time_s, UTC)
            return {"slot": f"{date}T{hour:02d}:00", "start_at": start.isoformat()}

        @app.post("/jobs", status_code=201)
        async def create_job(body: dict[str, Any], authorization: str | None = Header(None),
                             idempotency_key: str | None = Header(None)) -> Any:
            if authorization != f"Bearer {self.token}":
                raise HTTPException(401, "bad token")
            if not body.get("slot"):
                raise HTTPException(422, "slot is required")
            return self._once(idempotency_key, lambda: self._new_job(body))

        @app.get("/feed/{feed}")
        async def feed(feed: str) -> dict[str, Any]:
            return {"feed": feed, "items": [
                {"sku": "ABC-001", "name": "desk lamp", "price_cents": 2599},
                {"sku": "ABC-002", "name": "office chair", "price_cents": 14900},
                {"sku": "bad sku", "name": "no sku", "price_cents": 100},
                {"sku": "ABC-003", "name": "", "price_cents": 500},
                {"sku": "ABC-004", "name": "monitor arm", "price_cents": 4500},
            ]}

        @app.post("/enrich")
        async def enrich(body: dict[str, Any]) -> dict[str, Any]:
            return {"categories": {sku: ("lighting" if sku.endswith("1") else "furniture") for sku in body["skus"]}}

        @app.put("/catalog/{feed}")
        async def store(feed: str, body: dict[str, Any], idempotency_key: str | None = Header(None)) -> Any:
            def write() -> dict[str, Any]:
                self.catalog[feed] = body["products"]
                return {"stored": len(body["products"])}

            return self._once(idempotency_key, write)

        return app

    def _new_job(self, body: dict[str, Any]) -> dict[str, Any]:
        job_id = f"JOB-{uuid.uuid4().hex[:12]}"
        self.jobs[job_id] = {"order_id": body.get("order_id"), "slot": body["slot"]}
        return {"job_id": job_id}

    def _once(self, key: str | None, make: Any) -> Any:
        with self._lock:
            if key is not None and key in self._answers:
                return self._answers[key]
            answer = make()
            if key is not None:
                self._answers[key] = answer
            return answer
