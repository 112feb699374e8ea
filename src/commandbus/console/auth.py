"""Who may use the console, and what they may do.

No anonymous access: every request but the static files must authenticate, with HTTP
Basic credentials (``name:password``) or a bearer token, each bound to a user with a role.
``operator`` may act (retry, cancel, complete, replay); ``viewer`` sees everything and may
act on nothing. Secrets are compared in constant time and never appear in a URL.

CSRF: a browser sends Basic credentials to any page that asks, also from another site's
form, so every POST must also carry the user's CSRF token (a form field ``csrf_token`` or
the ``X-CSRF-Token`` header that htmx sends): an HMAC of the user's name under a secret
of the console process, which another site cannot know.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from commandbus.errors import ValidationError

__all__ = ["ConsoleUsers", "Role", "User", "parse_user"]


class Role(StrEnum):
    OPERATOR = "operator"
    VIEWER = "viewer"


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def can_act(self) -> bool:
        return self.role is Role.OPERATOR


@dataclass(frozen=True)
class _Credential:
    user: User
    secret: str


def parse_user(spec: str) -> tuple[str, str, Role]:
    """``name:password[:role]`` (role ``operator`` when left out) as the CLI and the
    environment give it; raises ``ValidationError`` saying what is wrong."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise ValidationError(
            f"a console user is NAME:PASSWORD or NAME:PASSWORD:ROLE, got {spec.split(':')[0]!r}…"
        )
    role = parts[2] if len(parts) == 3 else Role.OPERATOR.value
    try:
        return parts[0], parts[1], Role(role)
    except ValueError:
        raise ValidationError(
            f"console user {parts[0]!r}: role must be one of {[r.value for r in Role]}"
        ) from None


class ConsoleUsers:
    """The console's users: Basic-auth passwords and bearer tokens, each with a role."""

    def __init__(
        self,
        passwords: Mapping[str, tuple[str, Role]] | None = None,
        tokens: Mapping[str, User] | None = None,
        *,
        csrf_secret: bytes | None = None,
    ) -> None:
        self._passwords = {
            name: _Credential(User(name, role), secret)
            for name, (secret, role) in (passwords or {}).items()
        }
        self._tokens = [_Credential(user, token) for token, user in (tokens or {}).items()]
        if not self._passwords and not self._tokens:
            raise ValidationError(
                "the console needs at least one user or token (no anonymous access): "
                "give --user NAME:PASSWORD[:ROLE] or --token, or COMMANDBUS_CONSOLE_USERS "
                "/ COMMANDBUS_CONSOLE_TOKEN"
            )
        self._csrf_secret = csrf_secret or secrets.token_bytes(32)

    @classmethod
    def from_specs(
        cls,
        users: Iterable[str] = (),
        token: str | None = None,
        viewer_token: str | None = None,
    ) -> ConsoleUsers:
        passwords = {}
        for spec in users:
            name, password, role = parse_user(spec)
            passwords[name] = (password, role)
        tokens = {}
        if token:
            tokens[token] = User("token", Role.OPERATOR)
        if viewer_token:
            tokens[viewer_token] = User("viewer-token", Role.VIEWER)
        return cls(passwords, tokens)

    def authenticate(self, authorization: str | None) -> User | None:
        """The user an ``Authorization`` header names, or None."""
        if not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self._by_token(value.strip())
        if scheme != "basic":
            return None
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, sep, password = decoded.partition(":")
        if not sep:
            return None
        credential = self._passwords.get(name)
        if credential is not None and _same(credential.secret, password):
            return credential.user
        # A token also works as a Basic password (any name), for tools without bearer.
        return self._by_token(password)

    def _by_token(self, token: str) -> User | None:
        found = None
        for credential in self._tokens:  # every token compared: no early exit to time
            if _same(credential.secret, token):
                found = credential.user
        return found

    def csrf_token(self, user: User) -> str:
        return hmac.new(self._csrf_secret, user.name.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, user: User, token: str | None) -> bool:
        return token is not None and _same(self.csrf_token(user), token)


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())
