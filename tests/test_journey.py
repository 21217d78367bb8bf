"""End to end: a product page in the demo store, a real worker process, the stand-in.

The worker runs as its own process, as in production, seeing the store's settings through the
``KLAVIYO_*`` environment: once as ``flask klaviyo worker --burst`` and once as plain
``rq worker klaviyo --burst``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from example_store import create_app

API_KEY = "pk_test_private_key"
EMAIL = "sarah.mason@klaviyo-demo.com"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


@pytest.fixture
def store_env(redis_url: str, fake: Any, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update(
        SECRET_KEY="journey-secret",
        KLAVIYO_REDIS_URL=redis_url,
        KLAVIYO_API_URL=fake.url,
        KLAVIYO_PRIVATE_API_KEY=API_KEY,
        STORE_DATABASE=str(tmp_path / "worker-store.sqlite3"),
        KLAVIYO_ACTIVE_ON_SITE="false",  # one product view, nothing else, is the journey
    )
    return env


@pytest.fixture
def store(store_env: dict[str, str], tmp_path: Path) -> Any:
    config = {k: v for k, v in store_env.items() if k.startswith(("KLAVIYO_", "SECRET_KEY"))}
    return create_app({**config, "instance_path": str(tmp_path / "instance")})


def view_a_product_as_a_known_visitor(store: Any) -> tuple[str, str]:
    """Log in, open the first product; return (product id, the unique_id the page carries)."""
    client = store.test_client()
    client.post("/login", data={"email": EMAIL})
    catalog = client.get("/").get_data(as_text=True)
    product_id = re.search(r'href="/products/([^"]+)"', catalog).group(1)  # type: ignore[union-attr]
    page = client.get(f"/products/{product_id}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    blob = html.split('id="klaviyo-bridge-data">', 1)[1].split("</script>", 1)[0]
    [tracked] = json.loads(blob)["events"]
    assert tracked["metric"] == "Viewed Product"
    return product_id, tracked["unique_id"]


def assert_one_viewed_product(fake: Any, openapi: Any, product_id: str, unique_id: str) -> None:
    [event] = fake.events
    assert event["metric"] == "Viewed Product"
    assert event["unique_id"] == unique_id
    assert event["profile"]["email"] == EMAIL
    assert event["properties"]["ProductID"] == product_id
    assert isinstance(event["properties"]["Price"], int | float)
    [request] = [r for r in fake.requests if r["path"].startswith("/api/")]
    openapi.validate("create_event", request["body"])


def test_product_view_reaches_klaviyo_through_flask_klaviyo_worker(
    store: Any, store_env: dict[str, str], fake: Any, openapi: Any
) -> None:
    product_id, unique_id = view_a_product_as_a_known_visitor(store)
    assert fake.events == []  # nothing is sent from the request itself
    done = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "example_store", "klaviyo", "worker", "--burst"],
        env=store_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert_one_viewed_product(fake, openapi, product_id, unique_id)
    assert API_KEY not in done.stdout + done.stderr


def test_plain_rq_worker_delivers_with_settings_from_the_environment(
    store: Any, store_env: dict[str, str], fake: Any, openapi: Any, redis_url: str
) -> None:
    product_id, unique_id = view_a_product_as_a_known_visitor(store)
    done = subprocess.run(
        [str(VENV_BIN / "rq"), "worker", "klaviyo", "--burst", "--url", redis_url],
        env=store_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert_one_viewed_product(fake, openapi, product_id, unique_id)


def test_status_command_reports_the_queue(store_env: dict[str, str], store: Any) -> None:
    view_a_product_as_a_known_visitor(store)
    done = subprocess.run(
        [str(VENV_BIN / "flask"), "--app", "example_store", "klaviyo", "status", "--json"],
        env=store_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert status["waiting"] == 1 and status["waiting_by_kind"]["event"]["count"] == 1
    assert status["queued_jobs"] == 1  # one drain job, however many events
    assert status["oldest_waiting_seconds"] is not None
    assert status["dead_letters"] == 0
