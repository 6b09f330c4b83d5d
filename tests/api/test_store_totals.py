"""Store totals across products, and any horizon within the calibrated one, from memory.

The API serves a real seasonal-naive champion trained on a synthetic multi-product dataset
(`sfmlops synth`'s code: 2 stores x 3 products derived from the test slice), so no store
has a `total` series of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from sfmlops.adapters.db.engine import make_engine, migrate
from sfmlops.core import columns
from sfmlops.services import loading
from sfmlops.services.api import create_app, serving
from sfmlops.services.synthetic_data import write_synthetic_dataset
from sfmlops.settings import Settings
from tests.support.api_tokens import AUTH, TOKEN
from tests.support.model_registry import train_champion

pytestmark = pytest.mark.integration

PRODUCTS = ("P001", "P002", "P003")


@pytest.fixture(scope="module")
def products_api(
    tmp_path_factory: pytest.TempPathFactory, rossmann_slice: Path
) -> Iterator[TestClient]:
    """An API serving a champion of 2 stores x 3 products (history up to 2015-06-13)."""
    folder = tmp_path_factory.mktemp("products")
    write_synthetic_dataset(rossmann_slice, folder / "data", stores=2, products=3, days=90, seed=1)
    home = folder / "home"
    engine = make_engine(f"sqlite:///{home / 'sfmlops.db'}")
    migrate(engine)
    loading.load_folder(engine, folder / "data")
    settings = Settings(
        _env_file=None, home=home, api_token=SecretStr(TOKEN), model_poll_seconds=3600
    )
    train_champion(settings, engine, None)
    with TestClient(
        create_app(settings, engine=engine), raise_server_exceptions=False, headers=AUTH
    ) as client:
        yield client
    engine.dispose()


def forecast(client: TestClient, product_id: str | None = None, **params: Any) -> dict[str, Any]:
    if product_id is not None:
        params["product_id"] = product_id
    response = client.get("/v1/stores/2/forecast", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@contextmanager
def predictions_counted(bundle: Any) -> Iterator[list[int]]:
    """The rows of each frame `bundle` predicts inside the block (it still predicts)."""
    calls: list[int] = []
    predict = bundle.predict

    def counted(future: Any) -> Any:
        calls.append(len(future))
        return predict(future)

    bundle.predict = counted
    try:
        yield calls
    finally:
        del bundle.predict


def summed(bodies: list[dict[str, Any]], name: str) -> list[float]:
    return [
        round(sum(body["forecast"][day][name] for body in bodies), 2)
        for day in range(len(bodies[0]["forecast"]))
    ]


@pytest.mark.parametrize(
    "params",
    [
        {},  # the default horizon
        {"start": "2015-06-20", "days": 30},  # a slice of the calibrated horizon
        {"start": "2015-07-30", "days": 5},  # beyond it: predicted, then summed
    ],
)
def test_a_store_total_is_the_sum_of_its_products(
    products_api: TestClient, params: dict[str, Any]
) -> None:
    total = forecast(products_api, **params)
    products = [forecast(products_api, product, **params) for product in PRODUCTS]

    assert (total["store_id"], total["product_id"]) == (2, columns.DEFAULT_PRODUCT)
    assert [day["date"] for day in total["forecast"]] == [
        day["date"] for day in products[0]["forecast"]
    ]
    assert total["beyond_calibrated_horizon"] == products[0]["beyond_calibrated_horizon"]
    for name in columns.FORECAST_VALUES:
        assert [day[name] for day in total["forecast"]] == pytest.approx(
            summed(products, name), abs=0.011
        )
    assert sum(day[columns.YHAT] for day in total["forecast"]) > 0


def test_a_store_total_with_caller_covariates_sums_its_products_forecasts(
    products_api: TestClient,
) -> None:
    covariates = [{"date": "2015-06-15", "open": 1, "promo": 1}]

    def batch(product_id: str) -> dict[str, Any]:
        response = products_api.post(
            "/v1/forecast",
            json=[{"store_id": 2, "product_id": product_id, "dates": ["2015-06-15"],
                   "covariates": covariates}],
        )  # fmt: skip
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()["forecasts"][0]
        return body

    total = batch(columns.DEFAULT_PRODUCT)
    products = [batch(product) for product in PRODUCTS]

    assert total["forecast"][0]["covariate_sources"]["promo"] == "caller"
    assert [total["forecast"][0][columns.YHAT]] == pytest.approx(
        summed(products, columns.YHAT), abs=0.011
    )


def test_the_champion_of_a_store_total_lists_its_products(products_api: TestClient) -> None:
    response = products_api.get("/v1/models/champion", params={"store_id": 2})

    assert response.status_code == 200, response.text
    listed = [(entry["store_id"], entry["product_id"]) for entry in response.json()["stores"]]
    assert listed == [(2, product) for product in PRODUCTS]


def test_an_unknown_product_is_still_404(products_api: TestClient) -> None:
    response = products_api.get("/v1/stores/2/forecast", params={"product_id": "P009"})

    assert response.status_code == 404
    assert "no product 'P009'" in response.json()["detail"]


def test_any_start_and_length_within_the_calibrated_horizon_is_not_predicted(
    products_api: TestClient,
) -> None:
    cache = products_api.app.state.model_cache  # type: ignore[attr-defined]
    with predictions_counted(cache.state.model.bundle) as calls:
        within = forecast(products_api, "P002", start="2015-07-01", days=31)
        beyond = forecast(products_api, "P002", start="2015-07-01", days=32)
    assert within["forecast"][-1]["date"] == "2015-07-31"
    assert within["beyond_calibrated_horizon"] is False
    assert beyond["beyond_calibrated_horizon"] is True
    assert calls == [32]  # only the request that leaves the horizon was predicted
    assert [day[columns.YHAT] for day in beyond["forecast"][:31]] == pytest.approx(
        [day[columns.YHAT] for day in within["forecast"]], abs=0.011
    )


def test_a_store_total_of_sales_is_the_sum_of_its_products(products_api: TestClient) -> None:
    params = {"start": "2015-06-01", "end": "2015-06-13"}

    def sales(product_id: str | None = None) -> dict[str, Any]:
        query = params | ({"product_id": product_id} if product_id else {})
        response = products_api.get("/v1/stores/2/sales", params=query)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    total = sales()
    products = [sales(product) for product in PRODUCTS]

    assert total["product_id"] == columns.DEFAULT_PRODUCT
    assert len(total["days"]) == 13
    # Products launched late or discontinued have no row on some days.
    by_day = [{day["sales_date"]: day for day in product["days"]} for product in products]
    for day in total["days"]:
        rows = [days[day["sales_date"]] for days in by_day if day["sales_date"] in days]
        assert day["sales"] == pytest.approx(sum(row["sales"] for row in rows))
        assert day["open"] == max(row["open"] for row in rows)
    assert sum(day["sales"] for day in total["days"]) > 0
    missing = products_api.get("/v1/stores/2/sales", params={"product_id": "P009"})
    assert missing.status_code == 404


def test_the_api_serves_the_horizon_its_training_job_saved(products_api: TestClient) -> None:
    state = products_api.app.state  # type: ignore[attr-defined]
    served = state.model_cache.state.model
    folder = state.settings.home / "models" / "versions" / served.version

    saved = serving.HorizonForecasts.load(folder)

    # Saved by the training job with the bundle (and signed with it), taken as it is at
    # load, and equal to what the API would compute from the bundle itself.
    assert saved is not None
    computed = serving.horizon_forecasts(served.bundle, {})
    for horizon in (served.horizon_forecasts, saved):
        assert horizon.rows == computed.rows
        np.testing.assert_array_equal(horizon.values, computed.values)
        np.testing.assert_array_equal(horizon.flags, computed.flags)
        np.testing.assert_array_equal(horizon.state_holidays, computed.state_holidays)
    assert (2, columns.DEFAULT_PRODUCT) in saved.rows
    # Loading a champion with it predicts nothing (no plan changed since training).
    with predictions_counted(served.bundle) as calls:
        again = serving.prepare(
            served.bundle,
            served.version,
            served.run_id,
            served.registered_at,
            served.default_start,
            earlier=saved,
        )
    assert calls == []
    assert again.default_bodies == served.default_bodies
