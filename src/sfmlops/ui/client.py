"""The dashboard's client of the forecast API: typed answers, domain errors.

Pages never see HTTP: they get response models or one of the errors below, each with a
message fit to show a planner.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from sfmlops.core import columns
from sfmlops.settings import Settings
from sfmlops.ui import responses
from sfmlops.ui.wording import counted

Model = TypeVar("Model", bound=BaseModel)
USER_HEADER = "X-Sfmlops-User"  # whom a write is made for (the API's audit log)
DEFAULT_TIMEOUT_SECONDS = 30.0


class ApiError(Exception):
    """The API answered with an error, or with something the dashboard cannot read.

    Attributes:
        status_code: The HTTP status, or None when no answer came.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ApiUnreachableError(ApiError):
    """No answer from the API: it is down, the address is wrong, or it timed out."""


class NotFoundError(ApiError):
    """404: an unknown store, series or job, or no model trained yet."""


class ModelUnavailableError(ApiError):
    """503: the API has no model loaded to forecast with (or cannot start a job)."""


class ApiClient:
    """Calls the forecast API at `base_url` with the bearer token (reads and writes)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        """A client of SFMLOPS_API_URL with SFMLOPS_API_TOKEN (else the read-only token)."""
        secret = settings.api_token or settings.api_read_token
        token = secret.get_secret_value() if secret else None
        return cls(settings.api_url, token)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def status(self) -> responses.Status:
        """Data freshness and the champion version the API serves."""
        return self._get("/v1/status", responses.Status)

    def stores(self) -> list[responses.Store]:
        """Every store, ordered by id."""
        return self._get("/v1/stores", responses.StoreList).stores

    def store(self, store_id: int) -> responses.StoreDetail:
        """One store with its series. Raises NotFoundError for an unknown store."""
        return self._get(f"/v1/stores/{store_id}", responses.StoreDetail)

    def sales(
        self,
        store_id: int,
        start: dt.date,
        end: dt.date,
        product_id: str = columns.DEFAULT_PRODUCT,
    ) -> responses.SalesHistory:
        """A series' daily sales from `start` to `end`, both included."""
        params = {
            "start": start.isoformat(),
            "end": end.isoformat(),
            columns.PRODUCT_ID: product_id,
        }
        return self._get(f"/v1/stores/{store_id}/sales", responses.SalesHistory, params)

    def forecast(
        self, store_id: int, days: int, product_id: str = columns.DEFAULT_PRODUCT
    ) -> responses.SeriesForecast:
        """The serving model's forecast of the `days` days after the as-of date.

        Raises:
            NotFoundError: Unknown store or series.
            ModelUnavailableError: No model loaded yet.
        """
        params = {"days": str(days), columns.PRODUCT_ID: product_id}
        return self._get(f"/v1/stores/{store_id}/forecast", responses.SeriesForecast, params)

    def champion(
        self, store_id: int | None = None, product_id: str = columns.DEFAULT_PRODUCT
    ) -> responses.ChampionModel:
        """The champion version with every series' backtest, or only one store's.

        Raises:
            NotFoundError: No champion model yet (or an unknown series).
        """
        params = (
            {}
            if store_id is None
            else {columns.STORE_ID: str(store_id), columns.PRODUCT_ID: product_id}
        )
        return self._get("/v1/models/champion", responses.ChampionModel, params)

    def accuracy(self, days: int, store_id: int | None = None) -> responses.Accuracy:
        """Realized accuracy of the forecasts issued for the `days` days up to the as-of date
        (one store's, when given).

        Raises:
            NotFoundError: No sales in the database yet.
        """
        params = {"days": str(days)} | ({} if store_id is None else {"store_id": str(store_id)})
        return self._get("/v1/accuracy", responses.Accuracy, params)

    def stale_stores(self) -> responses.StaleStores:
        """The stores the daily trigger finds stale now (the API's default rule).

        Raises:
            NotFoundError: No sales in the database yet.
        """
        return self._get("/v1/accuracy/stale-stores", responses.StaleStores)

    def training_jobs(self, limit: int = 20) -> list[responses.TrainingJob]:
        """Recent training jobs, newest first."""
        return self._get("/v1/training-jobs", responses.TrainingJobList, {"limit": str(limit)}).jobs

    def training_job(self, job_id: str) -> responses.TrainingJob:
        """One training job with its progress, outcome and error."""
        return self._get(f"/v1/training-jobs/{job_id}", responses.TrainingJob)

    def submit_training_job(
        self,
        stores: Sequence[int] | None,
        user: str | None = None,
        models: Sequence[str] | None = None,
    ) -> responses.TrainingJob:
        """Start a job retraining `stores` (None: every store); returns it queued.

        Args:
            stores: The stores to refit, or None for all.
            user: The signed-in person, for the API's audit log and retrain limit.
            models: The model set to choose among; None: the API's default (for a store
                retrain, the champion's own models).
        """
        body: dict[str, Any] = {"stores": list(stores) if stores is not None else "all"}
        if models:
            body["models"] = list(models)
        headers = {USER_HEADER: user} if user else {}
        response = self._request("POST", "/v1/training-jobs", json=body, headers=headers)
        return _parse(response, responses.TrainingJob)

    def _get(self, path: str, model: type[Model], params: dict[str, str] | None = None) -> Model:
        return _parse(self._request("GET", path, params=params), model)

    def _request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(headers or {})
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException as error:
            raise ApiUnreachableError(
                f"the forecast API at {self.base_url} did not answer in time ({type(error).__name__})"
            ) from error
        except httpx.TransportError as error:
            raise ApiUnreachableError(
                f"cannot reach the forecast API at {self.base_url}: {error}"
            ) from error
        if not _is_json(response):
            # A wrong SFMLOPS_API_URL (a web page, a proxy's error page) answers HTML: name the
            # address and the status, never paste the page into the dashboard.
            kind = "an HTML page" if "html" in _content_type(response) else "a non-JSON answer"
            raise ApiError(
                f"{response.request.url} answered {response.status_code} with {kind}, not the "
                "sfmlops API: is SFMLOPS_API_URL pointing at the API?",
                response.status_code,
            )
        if response.is_success:
            return response
        detail = _detail(response)
        if response.status_code == httpx.codes.NOT_FOUND:
            raise NotFoundError(detail, response.status_code)
        if response.status_code == httpx.codes.SERVICE_UNAVAILABLE:
            raise ModelUnavailableError(detail, response.status_code)
        raise ApiError(
            f"the forecast API refused {method} {path} ({response.status_code}): {detail}",
            response.status_code,
        )


def _content_type(response: httpx.Response) -> str:
    return str(response.headers.get("content-type", "")).lower()


def _is_json(response: httpx.Response) -> bool:
    """Whether the body is JSON (an empty body, e.g. 204, counts as the API's)."""
    return not response.content or "json" in _content_type(response)


def _detail(response: httpx.Response) -> str:
    """The API's `detail` message, or the start of whatever else came back."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    return str(detail if detail is not None else body)[:500]


def _parse(response: httpx.Response, model: type[Model]) -> Model:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as error:
        # A version mismatch between dashboard and API: say so rather than crash a page.
        raise ApiError(
            f"unexpected answer from {response.request.url.path}: "
            f"{counted(error.error_count(), 'field')} "
            f"{'does' if error.error_count() == 1 else 'do'} not match what the dashboard "
            f"expects ({error.errors()[0]['msg']})",
            response.status_code,
        ) from error
