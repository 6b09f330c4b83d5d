"""The dashboard's client against a real HTTP server that is not the sfmlops API."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from sfmlops.ui.client import ApiClient, ApiError

PAGE = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"


class HtmlHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 404 if self.path.startswith("/missing") else 200
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture
def html_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HtmlHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("prefix", "status"), [("", "200"), ("/missing", "404")])
def test_an_html_page_is_reported_with_url_and_status_not_its_body(
    html_server: str, prefix: str, status: str
) -> None:
    with ApiClient(html_server + prefix) as client, pytest.raises(ApiError) as raised:
        client.status()
    message = str(raised.value)
    assert html_server in message
    assert status in message
    assert "HTML page" in message
    assert "SFMLOPS_API_URL" in message
    assert "nginx" not in message
    assert "<" not in message


class StatusHandler(http.server.BaseHTTPRequestHandler):
    """Answers /v1/status with JSON missing the fields named by the path's last part."""

    def do_GET(self) -> None:
        status = {
            "as_of": None,
            "latest_sales_date": None,
            "sales_rows": 0,
            "stores": 0,
            "sales_ingested_last_day": 0,
            "dead_letters_last_day": 0,
            "champion_version": None,
        }
        missing = int(self.path.split("/")[1])
        body = json.dumps(dict(list(status.items())[missing:])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@pytest.mark.parametrize(("missing", "worded"), [(1, "1 field does not"), (3, "3 fields do not")])
def test_an_answer_of_another_shape_counts_its_fields_in_the_right_number(
    missing: int, worded: str
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{missing}"
        with ApiClient(url) as client, pytest.raises(ApiError) as raised:
            client.status()
    finally:
        server.shutdown()
        server.server_close()
    assert worded in str(raised.value)
    assert "(s)" not in str(raised.value)
