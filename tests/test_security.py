"""The private key never leaks; shoppers' emails and phones are masked in logs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask, render_template_string

from flask_klaviyo import Klaviyo, KlaviyoAuthError, KlaviyoConfigError, tracks
from flask_klaviyo.client import KlaviyoClient
from flask_klaviyo.delivery.deadletters import DeadLetters

SECRET = "pk_super_secret_private_key_0123456789"
EMAIL = "sarah.mason@klaviyo-demo.com"
PHONE = "+15005550006"


@pytest.fixture
def app(make_app: Callable[..., Flask], fake: Any) -> Flask:
    app = make_app(
        fake=fake,
        identity={"email": EMAIL, "phone_number": PHONE},
        KLAVIYO_PRIVATE_API_KEY=SECRET,  # not the stand-in's key: every send is a 401
        KLAVIYO_PUBLIC_API_KEY="AbC123",
        KLAVIYO_STRICT=False,
    )
    klaviyo = app.extensions["klaviyo"].extension

    @app.get("/p")
    @tracks("Viewed Product")
    def page() -> str:
        return render_template_string(
            "{{ product.name }}{{ klaviyo_bridge() }}",
            product={"id": "1", "name": "Mug", "price": 5.0},
        )

    @app.get("/bad")
    def bad() -> str:
        klaviyo.track("Custom", {"x": 1}, value="oops")  # type: ignore[arg-type]
        return "ok"

    return app


def test_the_key_appears_nowhere_and_contacts_are_masked(
    app: Flask,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    drain: Callable[[Flask], None],
) -> None:
    caplog.set_level(logging.DEBUG)
    client = app.test_client()
    page = client.get("/p").get_data(as_text=True)
    client.get("/bad")
    drain(app)
    dead = DeadLetters(redis_client).all()
    assert {r["reason"] for r in dead} == {"invalid", "rejected"}  # 401 and a bad value
    everything = page + caplog.text + repr(dead)
    for key in redis_client.scan_iter():
        kind = redis_client.type(key)
        if kind == b"string":
            everything += repr(redis_client.get(key))
        elif kind == b"hash":
            everything += repr(redis_client.hgetall(key))
        elif kind == b"stream":
            everything += repr(redis_client.xrange(key))
    assert SECRET not in everything
    flask_klaviyo_logs = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("flask_klaviyo")
    )
    assert flask_klaviyo_logs  # something was logged about these failures
    assert EMAIL not in flask_klaviyo_logs
    assert PHONE not in flask_klaviyo_logs


def test_errors_and_reprs_never_carry_the_key(fake: Any) -> None:
    with KlaviyoClient(SECRET, base_url=fake.url) as client:
        assert SECRET not in repr(client)
        with pytest.raises(KlaviyoAuthError) as info:
            client.create_event({"data": {}})
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.errors)


def test_a_private_key_configured_as_public_is_refused_without_echoing_it(
    redis_url: str, tmp_path: Any
) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="s", KLAVIYO_REDIS_URL=redis_url, KLAVIYO_PUBLIC_API_KEY=SECRET)
    with pytest.raises(KlaviyoConfigError) as info:
        Klaviyo(app)
    assert SECRET not in str(info.value)
