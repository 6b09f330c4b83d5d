"""The sfmlops forecast API as the DAG tasks use it (HTTP, bearer token)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx
from airflow.sdk.exceptions import AirflowFailException

API_CONNECTION_ID = "sfmlops_api"
TIMEOUT_SECONDS = 30.0


class ApiUnavailableError(RuntimeError):
    """The API could not be reached or answered with a server error (worth a retry)."""


class ApiRequestError(AirflowFailException):
    """The API refused the request (4xx): failed at once, a retry would be refused the same way."""


@dataclass(frozen=True)
class SfmlopsApi:
    """A client for the endpoints the DAGs call.

    Attributes:
        url: Base URL, e.g. http://127.0.0.1:4242.
        token: Bearer token for write endpoints, or None where the API needs none.
    """

    url: str
    token: str | None = None

    @classmethod
    def from_airflow(cls) -> SfmlopsApi:
        """The API the Airflow connection `sfmlops_api` names, else SFMLOPS_API_URL/_TOKEN.

        The connection's host is a URL (http://host:port) or a host name with schema and
        port; its password is the token. Called in tasks, never at parse time.
        """
        from airflow.sdk import BaseHook  # noqa: PLC0415 - run time only
        from airflow.sdk.exceptions import AirflowNotFoundException  # noqa: PLC0415

        try:
            connection = BaseHook.get_connection(API_CONNECTION_ID)
        except AirflowNotFoundException:
            return cls.from_environment()
        host = connection.host or ""
        url = host if "://" in host else f"{connection.schema or 'http'}://{host}"
        if connection.port and "://" not in host:
            url += f":{connection.port}"
        return cls(url=url.rstrip("/"), token=connection.password or None)

    @classmethod
    def from_environment(cls) -> SfmlopsApi:
        """SFMLOPS_API_URL (default http://127.0.0.1:4242) and SFMLOPS_API_TOKEN."""
        return cls(
            url=os.environ.get("SFMLOPS_API_URL", "http://127.0.0.1:4242").rstrip("/"),
            token=os.environ.get("SFMLOPS_API_TOKEN") or None,
        )

    def submit_training_job(
        self, stores: list[int] | None, reason: str, models: list[str] | None = None
    ) -> dict[str, Any]:
        """POST /v1/training-jobs, saying why; returns the queued job (id, status, ...).

        `models`: the model set (None: the API's default); the API refuses unknown names.
        """
        body: dict[str, Any] = {"stores": stores or "all", "reason": reason}
        if models:
            body["models"] = models
        return self._request("POST", "/v1/training-jobs", json=body)

    def training_job(self, job_id: str) -> dict[str, Any]:
        """GET /v1/training-jobs/{id}: status, progress, model_version, error."""
        return self._request("GET", f"/v1/training-jobs/{job_id}")

    def champion(self) -> dict[str, Any] | None:
        """GET /v1/models/champion (version, trained_at, metrics), or None when there is none."""
        return self._request("GET", "/v1/models/champion", missing_ok=True)

    def _request(self, method: str, path: str, json: Any = None, missing_ok: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.request(
                method, self.url + path, json=json, headers=headers, timeout=TIMEOUT_SECONDS
            )
        except httpx.TransportError as error:
            raise ApiUnavailableError(
                f"cannot reach the sfmlops API at {self.url} ({method} {path}): "
                f"{type(error).__name__}: {error}"
            ) from error
        if response.status_code == httpx.codes.NOT_FOUND and missing_ok:
            return None
        if response.is_server_error:
            raise ApiUnavailableError(
                f"sfmlops API {method} {path} answered {response.status_code}: {_detail(response)}"
            )
        if response.is_client_error:
            raise ApiRequestError(
                f"sfmlops API refused {method} {path} ({response.status_code}): {_detail(response)}"
            )
        return response.json()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]
