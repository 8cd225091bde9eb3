"""SASL PLAIN authentication: who may use the server, checked in constant time.

What lives here: the table of users and the PLAIN exchange (RFC 4616).
What does not: the wire format (``protocol/binary``) or deciding when a
client must authenticate (``connection``).

Passwords are kept only as SHA-256 digests, compared with
``hmac.compare_digest``, and never appear in a repr or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable

MECHANISMS = b"PLAIN"


def _digest(password: bytes) -> bytes:
    return hashlib.sha256(password).digest()


class Authenticator:
    """Checks SASL PLAIN credentials against a fixed set of users."""

    def __init__(self, credentials: Iterable[tuple[str, str]]):
        self._users = {user.encode(): _digest(password.encode()) for user, password in credentials}
        if not self._users:
            raise ValueError("authentication needs at least one user")
        # Compared against when the user is unknown, so that an unknown name
        # costs the same work as a wrong password.
        self._decoy = _digest(b"\0unknown user\0")

    def __repr__(self) -> str:
        return f"<Authenticator {len(self._users)} user(s)>"

    def plain(self, mechanism: bytes, message: bytes) -> str | None:
        """The user a PLAIN message authenticates, or None.

        The message is ``[authzid] NUL authcid NUL password``; an authzid,
        if given, must name the same user.
        """
        if mechanism != b"PLAIN":
            return None
        parts = message.split(b"\0")
        if len(parts) != 3:
            return None
        authzid, user, password = parts
        name = self.check(user, password)
        return name if authzid in (b"", user) else None

    def check(self, user: bytes, password: bytes) -> str | None:
        """The user's name if the password is theirs, else None."""
        expected = self._users.get(user, self._decoy)
        matches = hmac.compare_digest(_digest(password), expected)
        if not matches or user not in self._users:
            return None
        return user.decode("utf-8", "replace")
