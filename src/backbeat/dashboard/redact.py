"""What a task page shows of its arguments: the default hook hides the values of keys that
look secret (password, secret, token, key, authorization), at any depth."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Redact = Callable[[Any], Any]

SECRET_KEY = re.compile(r"password|passwd|secret|token|key|authorization|cookie", re.IGNORECASE)
HIDDEN = "[redacted]"


def redact_secrets(value: Any) -> Any:
    """The arguments with every value under a secret-looking key replaced by ``[redacted]``."""
    if isinstance(value, dict):
        return {
            key: HIDDEN if SECRET_KEY.search(str(key)) else redact_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact_secrets(item) for item in value]
    return value
