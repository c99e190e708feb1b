"""Signed stored tasks: with a signing key, a worker runs only what a holder of the key wrote.

Anyone who can write to the store (a Redis without ACLs, a shared database) could
otherwise add a task calling any registered function with arguments of their
choosing. With ``Runner(signing_key=...)`` (or ``BACKBEAT_SIGNING_KEY`` in the
environment) every stored task carries an HMAC-SHA256 of its id, its name and its
arguments, appended to the arguments document as ``"sig"``; a worker with the key
dead-letters a task whose signature is missing or does not match, saying so.
"""

from __future__ import annotations

import hashlib
import hmac
import os

_MARK = ',"sig":"'
_DIGEST_LENGTH = 64  # hex characters of a SHA-256


def signing_key(given: str | bytes | None) -> bytes | None:
    """The key from the option, else from ``BACKBEAT_SIGNING_KEY``; None: no signing."""
    if given is None:
        given = os.environ.get("BACKBEAT_SIGNING_KEY") or None
    if given is None:
        return None
    key = given.encode() if isinstance(given, str) else bytes(given)
    if len(key) < 16:
        raise ValueError("signing_key must be at least 16 bytes (use a random secret)")
    return key


def _digest(key: bytes, task_id: str, name: str, payload: str) -> str:
    message = f"{task_id}\n{name}\n{payload}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign(key: bytes, task_id: str, name: str, payload: str) -> str:
    """The arguments document with its signature (`payload` ends with ``}``)."""
    return f'{payload[:-1]}{_MARK}{_digest(key, task_id, name, payload)}"}}'


def verified(key: bytes, task_id: str, name: str, payload: str) -> str:
    """The document as it was signed; ValueError if the signature is missing or wrong."""
    tail = len(_MARK) + _DIGEST_LENGTH + 2
    if len(payload) < tail or payload[-tail : -_DIGEST_LENGTH - 2] != _MARK:
        raise ValueError("the task is not signed, and this worker runs signed tasks only")
    original = payload[:-tail] + "}"
    expected = _digest(key, task_id, name, original)
    if not hmac.compare_digest(expected, payload[-_DIGEST_LENGTH - 2 : -2]):
        raise ValueError(
            "its signature does not match (the task was changed or written without the key)"
        )
    return original
