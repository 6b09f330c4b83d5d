"""What every dashboard page shares: the API client, the page files, friendly errors."""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import streamlit as st

from sfmlops.settings import Settings
from sfmlops.ui import responses
from sfmlops.ui.client import ApiClient, ApiError, ApiUnreachableError

VIEWS = Path(__file__).parent / "views"
STORE_PAGE = VIEWS / "store.py"
OVERVIEW_PAGE = VIEWS / "overview.py"
STORE_PARAM = "store"  # ?store=12 opens the store page on store 12
PRODUCT_PARAM = "product"
STORE_LIST_SECONDS = 300  # stores change rarely; a new one shows up within five minutes


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The dashboard process's settings, read once from SFMLOPS_* variables."""
    return Settings()


@st.cache_resource(show_spinner=False)
def api_client() -> ApiClient:
    """One client (and connection pool) per dashboard process."""
    return ApiClient.from_settings(settings())


@st.cache_data(ttl=STORE_LIST_SECONDS, show_spinner=False)
def store_list() -> list[responses.Store]:
    """Every store, for pickers and labels."""
    return api_client().stores()


def store_label(store: responses.Store) -> str:
    """'12 · type a · HE', what a picker shows and a planner searches by."""
    parts = [str(store.store_id)]
    if store.store_type:
        parts.append(f"type {store.store_type}")
    if store.state:
        parts.append(store.state)
    return " · ".join(parts)


def stop_on(error: ApiError) -> NoReturn:
    """Show `error` the way a planner can act on, then end this page run."""
    if isinstance(error, ApiUnreachableError):
        st.error(
            f"**The forecast API is not reachable.** {error}. Start it with `sfmlops serve`, "
            "or point SFMLOPS_API_URL at it, then reload this page.",
            icon=":material/cloud_off:",
        )
    else:
        st.error(f"**The forecast API answered with an error.** {error}", icon=":material/error:")
    st.stop()


def show_part_failed(heading: str, error: ApiError) -> None:
    """Show that one part of the page failed: `heading` in bold, then the API's `error`.

    Unlike `stop_on`, the page run goes on, so the parts that did load stay useful.
    """
    st.error(f"**{heading}:** {error}", icon=":material/error:")
