"""A stand-in CRM for the lead-sync example: ``GET /leads?segment=...`` exports the segment's leads.

Each export has its own ``export_id`` (the lead sync records which export wrote each lead). Like a real
CRM it holds a few malformed records (no e-mail, a broken address), which the blueprint's ``validate``
step sets aside. New leads sign up between syncs: ``new_per_export`` after each export, or ``add_leads``.
``exports`` counts the exports served.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from fastapi import FastAPI, Header, HTTPException

_COMPANIES = ("Acme GmbH", "Globex AG", "Initech SE", "Umbrella KG", None)
MALFORMED = [
    {"id": "L-900001", "email": None, "name": "no e-mail", "company": "Acme GmbH"},
    {"id": "L-900002", "email": "not an address", "name": "broken e-mail", "company": None},
]


class CrmApi:
    """State of the stand-in CRM: ``count`` well-formed leads of segment ``b2b`` plus the malformed ones."""

    def __init__(self, *, count: int = 40, new_per_export: int = 0, token: str = "crm-demo-token") -> None:
        self.token = token
        self.new_per_export = new_per_export
        self.exports = 0
        self._leads: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.add_leads(count)

    def add_leads(self, count: int) -> list[str]:
        """``count`` new well-formed leads; returns their ids."""
        with self._lock:
            start = len(self._leads) + 1
            new = [_lead(n) for n in range(start, start + count)]
            self._leads.update((lead["id"], lead) for lead in new)
        return [lead["id"] for lead in new]

    def valid_leads(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {lead_id: dict(lead) for lead_id, lead in self._leads.items()}

    def app(self) -> FastAPI:
        app = FastAPI(title="Stageflow example CRM")

        @app.get("/leads")
        async def leads(segment: str, authorization: str | None = Header(None)) -> dict[str, Any]:
            if authorization != f"Bearer {self.token}":
                raise HTTPException(401, "bad token")
            if segment != "b2b":
                return {"export_id": f"EXP-{uuid.uuid4().hex[:10]}", "leads": []}
            with self._lock:
                self.exports += 1
                exported = [*self._leads.values(), *MALFORMED]
            self.add_leads(self.new_per_export)
            return {"export_id": f"EXP-{uuid.uuid4().hex[:10]}", "leads": exported}

        return app


def _lead(n: int) -> dict[str, Any]:
    return {"id": f"L-{n:06d}", "email": f"lead{n}@example.com", "name": f"Lead {n}",
            "company": _COMPANIES[n % len(_COMPANIES)]}
