"""Who may call the API: bearer tokens checked before any route runs.

With a token configured (SFMLOPS_API_TOKEN, SFMLOPS_API_READ_TOKEN), every request except the
probes and the Prometheus scrape needs one: the read token opens reads, the API token opens
reads and writes. With none configured the API is open, which `sfmlops serve` only allows on
loopback. The check is a middleware, not a per-route dependency, so that an endpoint added later
is guarded from its first line (and /docs and /openapi.json with it); a request is a write unless
it is a GET, HEAD or OPTIONS, or one of the POSTs that only compute (`READ_POSTS`), so a new
POST is a write until someone says otherwise.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Final

from fastapi import status
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from sfmlops.settings import Settings

log = logging.getLogger("sfmlops.api.auth")

PUBLIC_PATHS: Final = frozenset({"/health", "/ready", "/metrics"})
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
READ_POSTS: Final = frozenset({"/v1/forecast"})  # POST with a body, but computes only
USER_HEADER: Final = "x-sfmlops-user"  # the person a write-token holder (the dashboard) acts for
MAX_USER_CHARS: Final = 128

WRITER: Final = "api-token"
READER: Final = "read-token"
LOOPBACK: Final = "loopback"  # no token configured: the API only listens on this machine


@dataclass(frozen=True)
class Caller:
    """Who made a request, as the audit log and the rate limits know them.

    Attributes:
        credential: Which credential was shown: `api-token`, `read-token` or `loopback`.
        user: The person the caller acts for (the dashboard's signed-in user), if it said.
    """

    credential: str
    user: str | None = None

    @property
    def name(self) -> str:
        """`alice@example.com via api-token`, or just the credential."""
        return f"{self.user} via {self.credential}" if self.user else self.credential


class TokenAuth:
    """ASGI middleware that refuses requests without the right bearer token.

    The caller is left in `request.state.caller` for handlers that record who wrote.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self._tokens: dict[str, bytes] = {}
        if settings.api_token is not None:
            self._tokens[WRITER] = settings.api_token.get_secret_value().encode()
        if settings.api_read_token is not None:
            self._tokens[READER] = settings.api_read_token.get_secret_value().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        path = _route_path(scope)
        credential = self._credential(headers.get(b"authorization", b""))
        user = _user(headers.get(USER_HEADER.encode(), b"")) if credential == WRITER else None
        scope.setdefault("state", {})["caller"] = Caller(credential or "anonymous", user)
        if path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        if credential is None:
            await _refuse(scope, receive, send, status.HTTP_401_UNAUTHORIZED, _missing_message())
            return
        method = scope["method"]
        is_read = method in READ_METHODS or (method == "POST" and path in READ_POSTS)
        if not is_read and credential == READER:
            log.warning("write refused to the read token: %s %s", method, path)
            await _refuse(
                scope,
                receive,
                send,
                status.HTTP_403_FORBIDDEN,
                "the read-only token cannot write; use SFMLOPS_API_TOKEN",
            )
            return
        await self.app(scope, receive, send)

    def _credential(self, authorization: bytes) -> str | None:
        """The name of the token shown, `loopback` when none is configured, else None."""
        if not self._tokens:
            return LOOPBACK
        scheme, _, given = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not given:
            return None
        found = None
        # Every token is compared, in constant time, whichever matches.
        for name, token in self._tokens.items():
            if hmac.compare_digest(given.strip(), token):
                found = name
        return found


def _route_path(scope: Scope) -> str:
    # Behind a proxy that keeps its prefix the path still starts with the root path.
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


def _user(raw: bytes) -> str | None:
    user = raw.decode("utf-8", "replace").strip()[:MAX_USER_CHARS]
    return user if user.isprintable() and user else None


def _missing_message() -> str:
    return "missing or invalid bearer token (Authorization: Bearer <SFMLOPS_API_TOKEN>)"


async def _refuse(scope: Scope, receive: Receive, send: Send, code: int, message: str) -> None:
    headers = {"WWW-Authenticate": "Bearer"} if code == status.HTTP_401_UNAUTHORIZED else None
    await JSONResponse({"detail": message}, status_code=code, headers=headers)(scope, receive, send)
