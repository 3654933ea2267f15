"""Who is calling: admin by bearer token, a user by ``X-User-Id``. Replaceable by a real token check."""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fingerprints.errors import Forbidden, Unauthenticated


@dataclass(frozen=True, slots=True)
class Principal:
    is_admin: bool = False
    user_id: int | None = None
    presented_token: bool = False

    def can_see_playlist(self, owner_id: int) -> bool:
        return self.is_admin or (self.user_id is not None and self.user_id == owner_id)


ANONYMOUS = Principal()
ADMIN = Principal(is_admin=True, presented_token=True)


class Authenticator(Protocol):
    def authenticate(self, headers: Mapping[str, str]) -> Principal: ...


class TokenAuthenticator:
    """Admin: ``Authorization: Bearer <admin token>``. User: ``X-User-Id: <integer>``."""

    def __init__(self, admin_token: str) -> None:
        self._admin_token = admin_token.encode()

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        presented = scheme.lower() == "bearer" and bool(token.strip())
        is_admin = presented and hmac.compare_digest(token.strip().encode(), self._admin_token)
        raw_user = headers.get("x-user-id", "").strip()
        user_id = int(raw_user) if raw_user.lstrip("-").isdigit() else None
        return Principal(is_admin=is_admin, user_id=user_id, presented_token=presented)


def require_admin(principal: Principal) -> None:
    """401 when no bearer token was sent, 403 when it is not the admin token."""
    if not principal.presented_token:
        raise Unauthenticated("admin operations need 'Authorization: Bearer <admin token>'")
    if not principal.is_admin:
        raise Forbidden("the bearer token is not the admin token")


def load_or_create_admin_token(configured: str | None, data_dir: Path) -> tuple[str, Path | None]:
    """The configured token, else the one in ``<data-dir>/admin-token`` (created, mode 0600)."""
    if configured:
        return configured, None
    path = data_dir / "admin-token"
    if path.exists():
        return path.read_text().strip(), path
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, path
