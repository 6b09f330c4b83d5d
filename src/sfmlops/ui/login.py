"""Who is using the dashboard: a password login, or the user a sign-in proxy vouches for.

Two set-ups, chosen by configuration:
- SFMLOPS_UI_PASSWORD set: every browser session signs in with that password first.
- A sign-in proxy in front (oauth2-proxy in the chart): the dashboard listens on loopback
  behind it and reads the signed-in user from the headers the proxy adds.
Without either, the dashboard is only for this machine (`sfmlops ui` refuses other addresses).
"""

from __future__ import annotations

import hmac

import streamlit as st

from sfmlops.settings import Settings

SIGNED_IN_KEY = "signed_in_user"
PASSWORD_USER = "dashboard-password"  # the shared password names no person
# What oauth2-proxy passes upstream with --pass-user-headers / --set-xauthrequest.
PROXY_USER_HEADERS = ("X-Forwarded-Email", "X-Forwarded-User", "X-Auth-Request-Email")


def signed_in_user() -> str | None:
    """Who this browser session acts as (sent to the API with writes), or None when unknown."""
    user = st.session_state.get(SIGNED_IN_KEY)
    if user:
        return str(user)
    for header in PROXY_USER_HEADERS:
        value = st.context.headers.get(header)
        if value:
            return value
    return None


def require_login(settings: Settings) -> None:
    """With a dashboard password configured, show the sign-in form until it is given."""
    if settings.ui_password is None or st.session_state.get(SIGNED_IN_KEY):
        return
    st.title("sfmlops forecasts")
    with st.form("sign-in"):
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in", icon=":material/login:")
    if submitted:
        expected = settings.ui_password.get_secret_value().encode()
        if hmac.compare_digest(password.encode(), expected):
            st.session_state[SIGNED_IN_KEY] = PASSWORD_USER
            st.rerun()
        st.error("Wrong password.", icon=":material/lock:")
    st.stop()
