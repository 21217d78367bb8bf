"""Where the store's settings come from: a mapping (tests, embedding) or the environment.

The web process and every worker process (``flask --app example_store klaviyo worker``) build
their app with ``create_app()`` from the same environment, so they agree on every setting; the
one generated setting, ``SECRET_KEY``, is persisted in the instance folder for the same reason.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "BOOL_KEYS",
    "SECRET_KEY_FILE",
    "STORE_KEYS",
    "derived_webhook_secret",
    "load_or_create_secret_key",
    "normalize",
    "settings_from_environ",
]

# Environment values are strings; these keys are read as booleans ...
BOOL_KEYS = frozenset(
    {"KLAVIYO_ENABLED", "KLAVIYO_STRICT", "KLAVIYO_COOKIE_SECURE", "STORE_PAYMENTS_AUTO_CALLBACK"}
)
# ... and these as numbers (flask-klaviyo rejects a timeout or retry count given as a string).
INT_KEYS = frozenset(
    {
        "KLAVIYO_RETRY_MAX",
        "KLAVIYO_COOKIE_MAX_AGE",
        "STORE_WEBHOOK_MAX_BYTES",
        "STORE_WEBHOOK_TOLERANCE",
        "STORE_PASSWORD_RESET_MAX_AGE",
    }
)
FLOAT_KEYS = frozenset({"KLAVIYO_TIMEOUT", "STORE_PAYMENTS_DELAY"})
# Non-KLAVIYO_* variables the store reads from the environment.
STORE_KEYS = (
    "SECRET_KEY",
    "STORE_ADMIN_PASSWORD",
    "STORE_BASE_URL",
    "STORE_DATABASE",
    "STORE_NEWSLETTER_LIST_ID",
    "STORE_PASSWORD_RESET_MAX_AGE",
    "STORE_PAYMENTS_AUTO_CALLBACK",
    "STORE_PAYMENTS_CALLBACK_URL",
    "STORE_PAYMENTS_DELAY",
    "STORE_WEBHOOK_MAX_BYTES",
    "STORE_WEBHOOK_TOLERANCE",
)

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

SECRET_KEY_FILE = "secret_key"


def derived_webhook_secret(secret_key: str | bytes) -> str:
    """The demo's payment-webhook secret when ``KLAVIYO_WEBHOOK_SECRET`` is not set: derived from
    ``SECRET_KEY``, so every process of the store (and its simulated provider) agrees on it
    without another file. A real provider issues its own secret: set it."""
    key = secret_key.encode() if isinstance(secret_key, str) else secret_key
    return hmac.new(key, b"example_store payments webhook secret", hashlib.sha256).hexdigest()


def _convert(name: str, value: Any) -> Any:
    """A string setting as the type the app expects; non-strings are kept as given."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if name in BOOL_KEYS:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(f"{name} must be true/false (or 1/0), got {value!r}")
    try:
        if name in INT_KEYS:
            return int(text)
        if name in FLOAT_KEYS:
            return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    return value


def normalize(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Typed copies of the settings whose type is known (see BOOL_KEYS, INT_KEYS, FLOAT_KEYS)."""
    return {name: _convert(name, value) for name, value in settings.items()}


def settings_from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every ``KLAVIYO_*`` variable plus ``STORE_KEYS``; an empty variable counts as unset."""
    environ = os.environ if environ is None else environ
    settings = {
        name: value
        for name, value in environ.items()
        if (name.startswith("KLAVIYO_") or name in STORE_KEYS) and value.strip() != ""
    }
    return normalize(settings)


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


def load_or_create_secret_key(instance_path: str | os.PathLike[str]) -> str:
    """The key in ``<instance>/secret_key``, created (0600) on first use.

    Publishing the new file with ``os.link`` is atomic and fails if the file already exists, so a
    web process and a worker starting at the same moment still end up with one key between them.
    """
    path = Path(instance_path) / SECRET_KEY_FILE
    key = _read_key(path)
    if key:
        return key
    key = secrets.token_hex(32)
    tmp = path.with_name(f".{SECRET_KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(key + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            existing = _read_key(path)
            if existing:
                return existing  # another process won the race: use its key
            os.replace(tmp, path)  # an empty leftover file: replace it
    finally:
        tmp.unlink(missing_ok=True)
    return key
