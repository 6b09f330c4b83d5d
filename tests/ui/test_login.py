"""The dashboard's sign-in form when SFMLOPS_UI_PASSWORD is set."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from sfmlops.cli.dashboard import APP
from tests.support.dashboard_harness import APP_TIMEOUT_SECONDS

pytestmark = pytest.mark.integration
PASSWORD = "correct-horse-battery"


@pytest.fixture
def dashboard(unreachable_url: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("SFMLOPS_API_URL", unreachable_url)
    monkeypatch.setenv("SFMLOPS_UI_PASSWORD", PASSWORD)
    return AppTest.from_file(str(APP), default_timeout=APP_TIMEOUT_SECONDS).run()


def test_nothing_shows_before_signing_in(dashboard: AppTest) -> None:
    assert [field.label for field in dashboard.text_input] == ["Password"]
    assert not dashboard.selectbox  # no store picker, no data
    assert not dashboard.error  # and no call to the API yet


def test_a_wrong_password_is_refused(dashboard: AppTest) -> None:
    dashboard.text_input[0].input("wrong-password-here")
    dashboard.button[0].click().run()

    assert [e.value for e in dashboard.error] == ["Wrong password."]
    assert "signed_in_user" not in dashboard.session_state


def test_the_right_password_opens_the_pages(dashboard: AppTest) -> None:
    dashboard.text_input[0].input(PASSWORD)
    dashboard.button[0].click().run()

    assert dashboard.session_state["signed_in_user"] == "dashboard-password"
    assert not dashboard.text_input or dashboard.text_input[0].label != "Password"
    # Past the form, the store page asks the (here unreachable) API for its stores.
    assert any("not reachable" in e.value for e in dashboard.error)
