"""Agent and admin credentials: random bearer tokens, stored as SHA-256 only.

A token is "aios_" + 32 random bytes in URL-safe base64 (43 characters). Its
entropy makes a plain (unsalted) SHA-256 safe to store and to look up by.
"""

from __future__ import annotations

import hashlib
import re
import secrets

PREFIX = "aios_"
_FORMAT = re.compile(r"^aios_[A-Za-z0-9_-]{43}$")


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def well_formed(token: str) -> bool:
    return bool(_FORMAT.match(token))
