"""The dashboard pages, each a script Streamlit runs (see `sfmlops.ui.streamlit_app`)."""
