"""Bearer-token lookup: map a presented token to its owner without timing leaks."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from pydantic import SecretStr

# The two ways a write is refused with 401 (WriteGuard, and require_owner behind it).
NO_CREDENTIALS = "missing credentials: send Authorization: Bearer <token>"
REFUSED_CREDENTIALS = "invalid token"
# Where WriteGuard leaves the owner it found, in the request's scope["state"]: require_owner
# takes it from there instead of comparing the token with every configured one again.
OWNER_STATE_KEY = "owner"


def owner_for_token(tokens: Mapping[str, SecretStr], presented: str) -> str | None:
    """Return the owner whose token equals `presented`, or None.

    Every configured token is compared with hmac.compare_digest, with no early exit, so the
    response time does not reveal which token (or how much of one) matched.
    """
    presented_bytes = presented.encode("utf-8")
    match: str | None = None
    for owner, token in tokens.items():
        if hmac.compare_digest(token.get_secret_value().encode("utf-8"), presented_bytes):
            match = owner
    return match
