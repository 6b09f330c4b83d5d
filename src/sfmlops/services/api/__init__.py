"""The forecast API (FastAPI): `create_app(settings)` builds it; `sfmlops serve` runs it."""

from sfmlops.services.api.app import create_app

__all__ = ["create_app"]
