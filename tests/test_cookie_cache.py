"""The remembered signature checks of the identity token (``identity/cookies.py``): a good
token is verified once per process, and remembering it never weakens the checks (tampering,
other keys, expiry, key rotation)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from flask_klaviyo.identity import cookies

SECRET = "cache-secret"
MAX_AGE = 3600


def token(data: Any, key: str = SECRET, *, age: float = 0) -> str:
    """A token as the extension signs it, ``age`` seconds old (negative: from the future)."""

    class Signer(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age)

    return URLSafeTimedSerializer(key, salt=cookies.COOKIE_SALT, signer=Signer).dumps(data)


@pytest.fixture
def app() -> Iterator[Flask]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY=SECRET, KLAVIYO_COOKIE_MAX_AGE=MAX_AGE)
    cookies._verified.cache_clear()
    with app.app_context():
        yield app
    cookies._verified.cache_clear()


def remembered() -> int:
    return cookies._verified.cache_info().currsize


def test_a_good_token_is_verified_once_and_read_the_same_every_time(app: Flask) -> None:
    raw = token({"p": {"email": "ann@shop.test"}, "v": [1, 2]})
    first = cookies.read_token(raw)
    hits = cookies._verified.cache_info().hits
    second = cookies.read_token(raw)
    assert first == second == ({"p": {"email": "ann@shop.test"}, "v": [1, 2]}, False)
    assert cookies._verified.cache_info().hits == hits + 1
    assert remembered() == 1


def test_what_a_caller_changes_is_not_remembered(app: Flask) -> None:
    raw = token({"p": {"email": "ann@shop.test"}, "v": [1, 2]})
    data, _ = cookies.read_token(raw)  # type: ignore[misc]
    data["p"]["email"] = "mallory@shop.test"
    data["v"].append(3)
    data["a"] = "0" * 32
    assert cookies.read_token(raw) == ({"p": {"email": "ann@shop.test"}, "v": [1, 2]}, False)


@pytest.mark.parametrize(
    "tamper",
    [
        # the signature (not its last character: base64's padding bits may not change it)
        lambda raw: raw[:-5] + ("A" if raw[-5] != "A" else "B") + raw[-4:],
        lambda raw: raw[:5] + ("x" if raw[5] != "x" else "y") + raw[6:],  # the payload
        lambda raw: raw.rsplit(".", 1)[0],  # no signature
        lambda raw: token({"p": {"email": "mallory@shop.test"}}, key="not-our-key"),
    ],
    ids=["signature", "payload", "unsigned", "other-key"],
)
def test_a_tampered_token_is_refused_and_never_remembered(app: Flask, tamper: Any) -> None:
    good = token({"p": {"email": "ann@shop.test"}})
    assert cookies.read_token(good) is not None
    bad = tamper(good)
    assert bad != good
    for _ in range(2):
        assert cookies.read_token(bad) is None
    info = cookies._verified.cache_info()
    assert info.currsize == 1  # the good one only
    assert cookies.read_token(bad) is None
    assert cookies._verified.cache_info().hits == info.hits  # a refused token never hits


def test_a_remembered_token_still_expires(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = token({"p": {"email": "ann@shop.test"}}, age=MAX_AGE - 10)
    assert cookies.read_token(raw) == ({"p": {"email": "ann@shop.test"}}, True)  # refresh due
    assert remembered() == 1
    later = time.time() + 20
    monkeypatch.setattr(cookies.time, "time", lambda: later)
    assert cookies.read_token(raw) is None  # remembered, but past KLAVIYO_COOKIE_MAX_AGE


def test_a_shorter_max_age_applies_to_remembered_tokens(app: Flask) -> None:
    raw = token({"a": "0" * 32}, age=100)
    assert cookies.read_token(raw) is not None
    app.config["KLAVIYO_COOKIE_MAX_AGE"] = 50
    assert cookies.read_token(raw) is None


def test_a_token_from_the_future_is_refused(app: Flask) -> None:
    assert cookies.read_token(token({"a": "0" * 32}, age=-120)) is None


def test_an_expired_token_is_refused_before_and_after_being_remembered(app: Flask) -> None:
    assert cookies.read_token(token({"a": "0" * 32}, age=MAX_AGE + 5)) is None


def test_a_key_rotation_is_honoured_for_remembered_tokens(app: Flask) -> None:
    raw = token({"p": {"email": "ann@shop.test"}})
    assert cookies.read_token(raw) == ({"p": {"email": "ann@shop.test"}}, False)
    app.config["SECRET_KEY"] = "the-new-key"
    assert cookies.read_token(raw) is None  # remembered under the old key only
    app.config["SECRET_KEY_FALLBACKS"] = [SECRET]
    assert cookies.read_token(raw) == ({"p": {"email": "ann@shop.test"}}, True)  # re-sign it
    app.config["SECRET_KEY_FALLBACKS"] = []
    assert cookies.read_token(raw) is None


def test_the_memory_is_bounded(app: Flask) -> None:
    for n in range(cookies.VERIFIED_TOKENS + 10):
        assert cookies.read_token(token({"n": n})) is not None
    assert remembered() == cookies.VERIFIED_TOKENS
