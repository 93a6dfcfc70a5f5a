"""API keys: how they are made, hashed, and recognised.

Keys are 256-bit random tokens from :mod:`secrets`, so the gateway stores only
their SHA-256. A slow password hash (bcrypt, argon2) exists to make guessing
*low-entropy* secrets expensive after a leak of the hashes; nobody can guess
among 2**256 keys however fast the hash is, and a fast hash keeps checking a
request's key to a microsecond.

A presented key is hashed once and compared with :func:`hmac.compare_digest`
against every configured hash, the admin's included, without stopping at the
first match, so the time taken says nothing about which key (if any) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from gateway.settings import AuthSettings, ClientKey

#: Marks a string as one of ours (and lets secret scanners recognise leaked keys).
KEY_PREFIX = "hgw_"
_HASH_PREFIX = "sha256:"


def new_key() -> str:
    """A fresh client or admin key: the prefix and 43 URL-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str | bytes) -> str:
    """``sha256:<hex>``, the form the settings take."""
    data = key.encode() if isinstance(key, str) else key
    return _HASH_PREFIX + hashlib.sha256(data).hexdigest()


def _digest(key_hash: str) -> bytes:
    return bytes.fromhex(key_hash.removeprefix(_HASH_PREFIX))


@dataclass(frozen=True)
class Principal:
    """Who a request is from: a client key, the admin, or anyone (auth disabled)."""

    kind: Literal["client", "admin", "open"]
    #: the client key's id (never the key); None for the admin and for open access
    key_id: str | None = None


OPEN = Principal("open")
ADMIN = Principal("admin")


class KeyRing:
    """The configured client keys and admin key, by hash."""

    def __init__(self, settings: AuthSettings) -> None:
        self.disabled = settings.disabled
        self.keys: tuple[ClientKey, ...] = settings.client_keys()
        self._digests = tuple(_digest(key.hash) for key in self.keys)
        admin = settings.admin_key_hash
        self._admin = _digest(admin) if admin is not None else None

    @property
    def has_admin(self) -> bool:
        return self._admin is not None

    def identify(self, token: bytes) -> Principal | None:
        """The principal a presented key belongs to, or None."""
        presented = hashlib.sha256(token).digest()
        found: Principal | None = None
        for key, digest in zip(self.keys, self._digests, strict=True):
            # Every comparison runs; only the assignment depends on the outcome.
            if hmac.compare_digest(presented, digest):
                found = Principal("client", key.id)
        if self._admin is not None and hmac.compare_digest(presented, self._admin):
            found = ADMIN
        return found


class AuthConfigurationError(Exception):
    """Authentication is on but cannot let anyone in (no client keys)."""


def check_configuration(settings: AuthSettings) -> None:
    """Refuse a gateway nobody could use, saying how to fix it."""
    if settings.disabled or settings.client_keys():
        return
    raise AuthConfigurationError(
        "authentication is on, but no client API keys are configured. Create one with "
        "`hybrid-gateway keys create --id NAME` and put the printed entry in "
        "GATEWAY_AUTH__KEYS (a JSON list) or in the file named by GATEWAY_AUTH__KEYS_FILE. "
        "For local development only, GATEWAY_AUTH__DISABLED=true runs without keys."
    )
