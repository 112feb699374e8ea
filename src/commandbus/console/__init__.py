"""The operator console: a server-rendered web app (extra ``[console]``).

``commandbus console --port 8080`` runs it; ``create_app`` makes it to mount in your own
ASGI app. See docs/console.md.
"""

from __future__ import annotations

from commandbus.console.app import create_app
from commandbus.console.auth import ConsoleUsers, Role, User

__all__ = ["ConsoleUsers", "Role", "User", "create_app"]
