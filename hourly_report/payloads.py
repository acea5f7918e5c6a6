"""The exact HTTP requests the tool sends, built as plain data (no I/O).

Shared by the API client (which sends them) and ``--dry-run`` (which prints them),
so what a dry run shows is byte for byte what a real run sends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from hourly_report.config import ReportSettings
from hourly_report.windows import Window, api_time

TOKEN_PATH = "/tenancy/auth/oauth/token"  # noqa: S105 - a path, not a password
REDACTED = "***"


@dataclass(frozen=True)
class PlannedRequest:
    """A request as ``--dry-run`` prints it."""

    method: str
    url: str
    body: str

    def render(self) -> str:
        return f"{self.method} {self.url}\n{self.body}\n"


def token_url(base_url: str) -> str:
    return base_url + TOKEN_PATH


def analyses_url(base_url: str, tenant_id: str) -> str:
    return f"{base_url}/reporting/api/v3/tenants/{quote(tenant_id, safe='')}/analyses"


def analysis_url(base_url: str, tenant_id: str, analysis_id: str) -> str:
    return f"{analyses_url(base_url, tenant_id)}/{quote(analysis_id, safe='')}"


def token_form(client_id: str, client_secret: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    }


def analysis_body(window: Window, tenant_id: str, report: ReportSettings) -> dict[str, Any]:
    """The create-analysis JSON body for one window, as the design fixes it."""
    return {
        "name": window.name,
        "tenantId": tenant_id,
        "appId": report.app_id,
        "format": list(report.formats),
        "parameters": {
            "method": list(report.methods),
            "metrics": list(report.metrics),
            "startTime": api_time(window.start),
            "endTime": api_time(window.end),
            "options": ["resource.id", "resource.name"],
            "opsqlQuery": [{"groupBy": [], "filterCriteria": report.filter_criteria}],
            "displayMode": report.display_mode,
            "queryConfig": report.query_config,
            "analysisPeriod": "Specific Period",
            "client": tenant_id,
        },
    }


def planned_token(base_url: str, client_id: str) -> PlannedRequest:
    body = urlencode(token_form(client_id, REDACTED), safe="*")
    return PlannedRequest("POST", token_url(base_url), body)


def planned_create(base_url: str, tenant_id: str, body: dict[str, Any]) -> PlannedRequest:
    return PlannedRequest("POST", analyses_url(base_url, tenant_id), json.dumps(body, indent=2))


def planned_delete(base_url: str, tenant_id: str, analysis_id: str) -> PlannedRequest:
    return PlannedRequest("DELETE", analysis_url(base_url, tenant_id, analysis_id), "")
