"""One router per resource; :func:`closedpaw.api.app.create_app` includes them all."""

from closedpaw.api.routes import (
    actions,
    audit,
    channels,
    conversations,
    events,
    secrets,
    status,
)

__all__ = ["ROUTERS"]

ROUTERS = (status.router, actions.router, audit.router, events.router, secrets.router,
           conversations.router, channels.router)
