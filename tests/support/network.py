"""Ports and addresses on this machine for the servers the tests start."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def slow_proxy(target_url: str, path_part: str, delay_seconds: float) -> Iterator[str]:
    """A proxy to `target_url` on 127.0.0.1 that holds requests whose path contains
    `path_part` for `delay_seconds` before forwarding them; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if path_part in self.path:
                time.sleep(delay_seconds)
            length = int(self.headers.get("Content-Length") or 0)
            response = httpx.request(
                self.command,
                f"{target_url}{self.path}",
                headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                content=self.rfile.read(length) if length else None,
                timeout=120,
            )
            self.send_response(response.status_code)
            for name in ("Content-Type", "Retry-After"):
                if name in response.headers:
                    self.send_header(name, response.headers[name])
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        def do_GET(self) -> None:
            self._forward()

        def do_POST(self) -> None:
            self._forward()

        def log_message(self, format: str, *args: object) -> None:
            pass  # the tests' output stays the tests'

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
