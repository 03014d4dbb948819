"""The HTTP API: ``create_app(settings)`` (FastAPI, lifespan-managed) and ``serve``."""

from closedpaw.api.app import create_app
from closedpaw.api.server import check_host, serve

__all__ = ["check_host", "create_app", "serve"]
