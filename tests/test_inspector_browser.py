"""The inspector in a real headless Chromium (Debian's ``chromium``), as a new shopper sees it.

The demo store runs on a loopback port against the running stand-in (so the inspector is on by
``auto``). An anonymous visitor views a product and adds it to the cart; the inspector, opened
in the same browser, shows their events parked. They give an email at checkout; the inspector
then shows the events released to that profile and, once a worker has drained the outbox,
received by the stand-in. No page logs a console error.

Without ``/usr/bin/chromium`` these tests are skipped, except under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_store import create_app
from example_store.catalog import SEED_PRODUCTS

pytestmark = pytest.mark.browser

EMAIL = "new.shopper@shop.test"


@pytest.fixture
def store(tmp_path: Path, redis_url: str, fake: Any) -> Flask:
    """The demo store as ``make run`` starts it: the stand-in, an outside Redis."""
    return create_app(
        {
            "instance_path": str(tmp_path / "instance"),
            "SECRET_KEY": "inspector-browser",
            "KLAVIYO_REDIS_URL": redis_url,
            "KLAVIYO_API_URL": fake.url,
            "KLAVIYO_PRIVATE_API_KEY": fake.api_key,
        }
    )


def console(message: Any) -> str:
    """A console error with the URL it is about."""
    return f"{message.text} at {message.location.get('url', '')}"


def text(page: Any) -> str:
    return re.sub(r"\s+", " ", page.inner_text("body"))


def test_a_new_shopper_sees_events_parked_then_released_and_received(
    browser: Any,
    store: Flask,
    fake: Any,
    drain: Callable[[Flask], None],
    live_server: Callable[[Flask], contextlib.AbstractContextManager[str]],
) -> None:
    product = SEED_PRODUCTS[0]
    errors: list[str] = []
    with live_server(store) as url:
        context = browser.new_context()
        page = context.new_page()
        page.on("console", lambda msg: msg.type == "error" and errors.append(console(msg)))
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        try:
            page.goto(f"{url}/products/{product.id}")
            page.click("form.add-to-cart button[type=submit]")
            page.wait_for_load_state()

            # The footer links the inspector; it names this browser's parked events.
            page.click("footer a[href='/_klaviyo/inspector/']")
            overview = text(page)
            assert "This browser is anonymous visitor" in overview
            parked = int(re.search(r"(\d+) event\(s\) parked", overview)[1])  # type: ignore[index]
            assert parked >= 2  # Viewed Product, Added to Cart
            assert "Viewed Product" in overview and "Added to Cart" in overview
            assert fake.events == []  # nothing reached Klaviyo: an orphan profile otherwise
            page.click("p.note a")  # this visitor's page
            assert "Parked now for" in text(page)

            # The chart switches stage with the page's own script (CSP allows only it).
            page.goto(f"{url}/_klaviyo/inspector/")
            assert page.is_visible("div.chart[data-stage=parked]") or page.is_visible(
                "div.chart[data-stage=queued]"
            )
            page.select_option("#stage", "parked")
            assert page.is_visible("div.chart[data-stage=parked] svg rect")

            # Checkout as a new shopper: the email makes them known.
            page.goto(f"{url}/checkout")
            page.fill("#checkout-email", EMAIL)
            page.click("form[action$='/checkout/email'] button[type=submit]")
            page.wait_for_load_state()
            drain(store)
            received = fake.wait_for(parked)

            page.goto(f"{url}/_klaviyo/inspector/")
            assert f"This browser is known as {EMAIL}" in text(page)
            page.click(f"a[href='/_klaviyo/inspector/visitor/{EMAIL}']")
            person = text(page)
            assert f"released to {EMAIL}" in person
            assert person.count("released to") >= parked
            assert "Profile in the stand-in" in person
            assert re.search(r"Received by the stand-in \((\d+)\)", person)
            shown = int(re.search(r"Received by the stand-in \((\d+)\)", person)[1])  # type: ignore[index]
            assert shown >= parked and len(received) >= parked
            assert "Parked now" not in person
            assert "sent" in person
        finally:
            context.close()
    # The store's pages have no favicon (its templates are not the inspector's): Chromium's
    # 404 for /favicon.ico is left out; any other error counts.
    assert [e for e in errors if not e.endswith("/favicon.ico")] == []


def test_the_replay_button_sends_a_dead_letter_again_from_the_browser(
    browser: Any,
    store: Flask,
    fake: Any,
    drain: Callable[[Flask], None],
    live_server: Callable[[Flask], contextlib.AbstractContextManager[str]],
) -> None:
    errors: list[str] = []
    with live_server(store) as url:
        context = browser.new_context()
        page = context.new_page()
        page.on("console", lambda msg: msg.type == "error" and errors.append(console(msg)))
        page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        try:
            page.goto(f"{url}/products/{SEED_PRODUCTS[1].id}")
            page.click("form.add-to-cart button[type=submit]")
            page.goto(f"{url}/checkout")
            page.fill("#checkout-email", EMAIL)
            page.click("form[action$='/checkout/email'] button[type=submit]")
            page.wait_for_load_state()
            fake.fail_next(403, code="permission_denied", detail="This key may not send events")
            drain(store)  # a 403 no retry can fix: every event of the batch is a dead letter
            assert fake.events == []

            page.goto(f"{url}/_klaviyo/inspector/")
            assert "This key may not send events" in text(page)
            buttons = page.locator("button[data-letter]")
            dead = buttons.count()
            assert dead >= 2
            buttons.first.click()
            page.wait_for_load_state()
            assert "Replayed: 1 dead letter queued again." in text(page)
            assert page.locator("button[data-letter]").count() == dead - 1
            drain(store)
            assert len(fake.wait_for(1)) == 1  # the replayed one, and only it
            page.reload()
            assert "replayed" in text(page)
        finally:
            context.close()
    assert [e for e in errors if not e.endswith("/favicon.ico")] == []
