"""The dashboard's API client against real API servers: answers and domain errors."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator

import pytest

from sfmlops.core import columns
from sfmlops.ui.client import (
    ApiClient,
    ApiError,
    ApiUnreachableError,
    ModelUnavailableError,
    NotFoundError,
)
from tests.support.cli_processes import TOKEN
from tests.support.dashboard_harness import (
    STORE_WITHOUT_SALES,
    TRAINED_STORES,
    RunningApi,
    api_get,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def trained(trained_api: RunningApi) -> Iterator[ApiClient]:
    client = ApiClient(trained_api.url, TOKEN)
    yield client
    client.close()


@pytest.fixture
def untrained(untrained_api: RunningApi) -> Iterator[ApiClient]:
    client = ApiClient(untrained_api.url, TOKEN)
    yield client
    client.close()


def test_reads_stores_sales_forecasts_and_the_champion(
    trained: ApiClient, trained_api: RunningApi
) -> None:
    stores = trained.stores()
    status = trained.status()
    assert status.as_of is not None
    sales = trained.sales(1, status.as_of - dt.timedelta(days=6), status.as_of)
    forecast = trained.forecast(1, 5)
    champion = trained.champion()
    one = trained.champion(1)

    assert [store.store_id for store in stores] == [*range(1, 21), STORE_WITHOUT_SALES]
    assert [s.product_id for s in trained.store(1).series] == [columns.DEFAULT_PRODUCT]
    assert [day.sales_date for day in sales.days] == [
        status.as_of - dt.timedelta(days=back) for back in range(6, -1, -1)
    ]
    assert forecast.start == status.as_of + dt.timedelta(days=1)
    assert [day.date for day in forecast.forecast] == [
        forecast.start + dt.timedelta(days=ahead) for ahead in range(5)
    ]
    raw = api_get(trained_api, "/v1/stores/1/forecast", days=5)["forecast"]
    assert [day.model_dump(mode="json") for day in forecast.forecast] == raw
    assert champion.version == status.champion_version == forecast.model_version
    assert {s.store_id for s in champion.stores} >= set(TRAINED_STORES)
    assert [s.store_id for s in one.stores] == [1]
    assert champion.version == api_get(trained_api, "/v1/models/champion")["version"]


def test_unknown_things_raise_not_found_with_the_apis_reason(trained: ApiClient) -> None:
    with pytest.raises(NotFoundError, match="unknown store 99999") as error:
        trained.store(99999)
    assert error.value.status_code == 404
    with pytest.raises(NotFoundError):
        trained.training_job("no-such-job")
    with pytest.raises(NotFoundError, match="unknown store 10"):
        trained.forecast(10, 7)


def test_no_model_yet_is_not_found_for_the_champion_and_unavailable_for_forecasts(
    untrained: ApiClient,
) -> None:
    with pytest.raises(NotFoundError, match="no champion model yet"):
        untrained.champion()
    with pytest.raises(ModelUnavailableError) as error:
        untrained.forecast(1, 7)
    assert error.value.status_code == 503


def test_writes_carry_the_token_and_a_wrong_one_is_refused(trained_api: RunningApi) -> None:
    with ApiClient(trained_api.url, "wrong-token") as client, pytest.raises(ApiError) as error:
        client.submit_training_job([STORE_WITHOUT_SALES])
    assert error.value.status_code == 401
    assert "missing or invalid bearer token" in str(error.value)
    with ApiClient(trained_api.url, TOKEN) as client:
        job = client.submit_training_job([STORE_WITHOUT_SALES])
        assert client.training_job(job.id).stores == [STORE_WITHOUT_SALES]


def test_an_unknown_model_in_a_job_s_model_set_is_refused_with_its_name(
    trained: ApiClient,
) -> None:
    with pytest.raises(ApiError, match=r"\(422\): body.models: .*unknown model 'arima'") as error:
        trained.submit_training_job([STORE_WITHOUT_SALES], models=["gbm", "arima"])
    assert error.value.status_code == 422


def test_bad_input_is_an_api_error_with_its_detail(trained: ApiClient) -> None:
    with pytest.raises(ApiError, match=r"\(422\)") as error:
        trained.forecast(1, 0)
    assert not isinstance(error.value, NotFoundError | ModelUnavailableError)
    assert "days" in str(error.value)


def test_no_server_is_unreachable(unreachable_url: str) -> None:
    with ApiClient(unreachable_url) as client, pytest.raises(ApiUnreachableError) as error:
        client.status()
    assert unreachable_url in str(error.value)
    assert error.value.status_code is None


def test_a_server_that_never_answers_is_unreachable_after_the_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with ApiClient(url, timeout=0.5) as client, pytest.raises(ApiUnreachableError) as error:
            client.status()
    assert "did not answer in time" in str(error.value)
