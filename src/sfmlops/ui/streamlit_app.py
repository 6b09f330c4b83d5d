"""The dashboard's entry script, run by `sfmlops ui` (`streamlit run` on this file)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from sfmlops.ui import page_context
from sfmlops.ui.login import require_login
from sfmlops.ui.page_context import OVERVIEW_PAGE, STORE_PAGE

# A file, served by the dashboard itself: a ":material/...:" page icon makes the browser fetch
# the favicon from fonts.gstatic.com, and the dashboard must work with no internet access.
FAVICON = Path(__file__).with_name("favicon.png")
OPENED_KEY = "dashboard_opened"


def main() -> None:
    st.set_page_config(page_title="sfmlops forecasts", page_icon=str(FAVICON), layout="wide")
    require_login(page_context.settings())
    # The overview opens the dashboard: is the data fresh, are the forecasts holding up,
    # which stores need a look (each a link to its store page). The store page alone would
    # open on an empty picker: a planner responsible for many stores has none to pick yet.
    overview = st.Page(
        OVERVIEW_PAGE,
        title="Overview",
        icon=":material/monitoring:",
        url_path="overview",
        default=True,
    )
    store = st.Page(STORE_PAGE, title="Store", icon=":material/storefront:", url_path="store")
    page = st.navigation([overview, store])
    if page is overview and _opened_on_a_store_link():
        # Links made when the store page was the root (/?store=12, in alerts and bookmarks)
        # still open that store.
        st.switch_page(store, query_params=st.query_params.to_dict())
    # Marked only by a run that did not redirect: a rerun the browser asks for may replace the
    # redirect's (the last request wins) and land on the overview again, still with ?store=;
    # that run must redirect too, or the link opens the overview.
    st.session_state[OPENED_KEY] = True
    page.run()


def _opened_on_a_store_link() -> bool:
    """Whether no page of this session has run yet and the link names a store."""
    return OPENED_KEY not in st.session_state and page_context.STORE_PARAM in st.query_params


if __name__ == "__main__":
    main()
