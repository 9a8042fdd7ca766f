"""API-key checks: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents, from ``X-API-Key`` or a ``Bearer`` ``Authorization`` header."""
    key = headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, credentials = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def key_matches(presented: str | None, expected: str) -> bool:
    """Whether ``presented`` equals ``expected``, in time independent of where they differ."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
