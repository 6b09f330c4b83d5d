"""The API's tests: the bearer tokens of the apps they create."""

from __future__ import annotations

TOKEN = "api-test-token-not-a-secret-0123456789"
READ_TOKEN = "api-test-read-token-not-a-secret-012345"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
