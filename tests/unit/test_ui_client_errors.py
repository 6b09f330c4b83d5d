"""The dashboard's client against a real HTTP server that is not the sfmlops API."""

from __future__ import annotations

import http.server
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
