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


def main() -> None:
    st.set_page_config(page_title="sfmlops forecasts", page_icon=str(FAVICON), layout="wide")
    require_login(page_context.settings())
    pages = [
        st.Page(
            STORE_PAGE, title="Store", icon=":material/storefront:", url_path="store", default=True
        ),
        st.Page(OVERVIEW_PAGE, title="Overview", icon=":material/monitoring:", url_path="overview"),
    ]
    st.navigation(pages).run()


if __name__ == "__main__":
    main()
