"""API-key checks: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``, compared in constant time."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers

_BLANKS = " \t"  # what HTTP allows around a header value; other whitespace is part of the key


def presented_key(headers: Headers) -> str | None:
    """The key a request presents, without the spaces and tabs around it: its ``X-API-Key`` if it has one (the
    header repeated with one value counts once; differing values present no key), else the key of its one
    ``Bearer`` ``Authorization`` header (two ``Authorization`` headers present none). Which of two differing keys
    would count is not for the server to guess."""
    keys = {value.strip(_BLANKS) for value in headers.getlist("x-api-key")}
    if keys:
        return keys.pop() if len(keys) == 1 else None
    authorizations = headers.getlist("authorization")
    if len(authorizations) != 1:
        return None
    scheme, _, credentials = authorizations[0].strip(_BLANKS).partition(" ")
    credentials = credentials.strip(_BLANKS)
    return credentials if scheme.lower() == "bearer" and credentials else None


def key_matches(presented: str | None, expected: str) -> bool:
    """Whether ``presented`` equals ``expected``, in time independent of where they differ."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))
