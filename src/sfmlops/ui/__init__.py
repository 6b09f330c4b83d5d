"""The dashboard: a Streamlit app that reads everything through the forecast API.

`sfmlops ui` runs `streamlit_app.py` with Streamlit; `client.py` is its only way to the data.
"""
