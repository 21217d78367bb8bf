"""The settings table: defaults, checks, environment strings, and the README's copy of it."""

from __future__ import annotations

import ast
import logging
import math
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from flask_klaviyo import Klaviyo, KlaviyoConfigError, _checks, _settings
from flask_klaviyo._settings import (
    MAX_DRAIN_CONCURRENCY,
    OTHER_NAMES,
    SETTINGS,
    apply_defaults,
    check,
    from_environ,
    markdown_table,
    parse,
)

ROOT = Path(__file__).resolve().parent.parent
NAMES = [setting.name for setting in SETTINGS]
BY_NAME = {setting.name: setting for setting in SETTINGS}
LIMITS = {"bulk_create_events": ((10, 1.0), (150, 60.0))}

# Every key: an environment string and the value it must become.
GOOD_ENV: dict[str, tuple[str, Any]] = {
    "KLAVIYO_ENABLED": ("False", False),
    "KLAVIYO_STRICT": ("yes", True),
    "KLAVIYO_PRIVATE_API_KEY": ("pk_live_abc", "pk_live_abc"),
    "KLAVIYO_PUBLIC_API_KEY": ("AbC123", "AbC123"),
    "KLAVIYO_API_URL": ("http://127.0.0.1:9", "http://127.0.0.1:9"),
    "KLAVIYO_REVISION": ("2026-07-15.pre", "2026-07-15.pre"),
    "KLAVIYO_TIMEOUT": ("2.5", 2.5),
    "KLAVIYO_CURRENCY": ("EUR", "EUR"),
    "KLAVIYO_REDIS_URL": ("rediss://r.example:6380/1", "rediss://r.example:6380/1"),
    "KLAVIYO_REDIS_MIN_REPLICAS": ("1", 1),
    "KLAVIYO_REDIS_WAIT_TIMEOUT": ("250", 250),
    "KLAVIYO_QUEUE": ("shop", "shop"),
    "KLAVIYO_RETRY_MAX": ("0", 0),
    "KLAVIYO_RATE_LIMITS": ('{"bulk_create_events": [[10, 1], [150, 60]]}', LIMITS),
    "KLAVIYO_DRAIN_CONCURRENCY": ("1", 1),
    "KLAVIYO_DRAIN_BATCH": (" 100 ", 100),
    "KLAVIYO_RETRY_HORIZON": ("90", 90.0),
    "KLAVIYO_RECLAIM_AFTER": ("0.5", 0.5),
    "KLAVIYO_SPOOL_MAX_BYTES": ("0", 0),
    "KLAVIYO_BRIDGE_MODE": ("share", "share"),
    "KLAVIYO_CLIENT_URL": ("https://c.shop.test", "https://c.shop.test"),
    "KLAVIYO_JS_URL": ("/static/k.js", "/static/k.js"),
    "KLAVIYO_COOKIE_NAME": ("kid", "kid"),
    "KLAVIYO_COOKIE_SECURE": ("TRUE", True),
    "KLAVIYO_COOKIE_MAX_AGE": ("3600", 3600),
    "KLAVIYO_COOKIE_DOMAIN": ("shop.test", "shop.test"),
    "KLAVIYO_ID_HEADER": ("None", None),
    "KLAVIYO_PARK_MAX_EVENTS": ("0", 0),
    "KLAVIYO_PARK_TTL": ("60", 60),
    "KLAVIYO_ACTIVE_ON_SITE": ("Auto", "auto"),
    "KLAVIYO_SINGLE_OPT_IN_LISTS": ("Y6nRLr, XyZ123", ("Y6nRLr", "XyZ123")),
    "KLAVIYO_FORGET_HOLD": ("86400", 86400),
    "KLAVIYO_CATALOG_MODE": ("feed", "feed"),
    "KLAVIYO_CATALOG_FEED_PATH": ("/feeds/catalog.json", "/feeds/catalog.json"),
    "KLAVIYO_CATALOG_FEED_TOKEN": ("s3cret-feed-token-1234", "s3cret-feed-token-1234"),
    "KLAVIYO_INSPECTOR": ("off", False),
    "KLAVIYO_METRICS": ("on", True),
    "KLAVIYO_METRICS_TOKEN": ("metrics-token-0123456789", "metrics-token-0123456789"),
    "KLAVIYO_METRICS_PUBLIC": ("no", False),
}

# Every key: an environment string it must refuse, naming the key.
BAD_ENV: dict[str, str] = {
    "KLAVIYO_ENABLED": "sometimes",
    "KLAVIYO_STRICT": "2",
    "KLAVIYO_PRIVATE_API_KEY": "AbC123",
    "KLAVIYO_PUBLIC_API_KEY": "pk_live_abc",
    "KLAVIYO_API_URL": "a.klaviyo.com",
    "KLAVIYO_REVISION": "latest",
    "KLAVIYO_TIMEOUT": "ten",
    "KLAVIYO_CURRENCY": "usd",
    "KLAVIYO_REDIS_URL": "localhost:6379",
    "KLAVIYO_REDIS_MIN_REPLICAS": "-1",
    "KLAVIYO_REDIS_WAIT_TIMEOUT": "0",
    "KLAVIYO_RETRY_MAX": "1.5",
    "KLAVIYO_RATE_LIMITS": '{"bulk_create_events": [[0, 1]]}',
    "KLAVIYO_DRAIN_CONCURRENCY": "65",
    "KLAVIYO_DRAIN_BATCH": "1001",
    "KLAVIYO_RETRY_HORIZON": "0",
    "KLAVIYO_RECLAIM_AFTER": "inf",
    "KLAVIYO_SPOOL_MAX_BYTES": "-1",
    "KLAVIYO_BRIDGE_MODE": "both",
    "KLAVIYO_CLIENT_URL": "javascript:alert(1)",
    "KLAVIYO_JS_URL": "klaviyo.js",
    "KLAVIYO_COOKIE_NAME": "__kla_id",
    "KLAVIYO_COOKIE_SECURE": "maybe",
    "KLAVIYO_COOKIE_MAX_AGE": "400 days",
    "KLAVIYO_COOKIE_DOMAIN": "..",
    "KLAVIYO_ID_HEADER": "X Klaviyo",
    "KLAVIYO_PARK_MAX_EVENTS": "-1",
    "KLAVIYO_PARK_TTL": "1.5",
    "KLAVIYO_ACTIVE_ON_SITE": "sometimes",
    "KLAVIYO_INSPECTOR": "in production",
    "KLAVIYO_METRICS": "prometheus",
    "KLAVIYO_METRICS_TOKEN": "short token",
    "KLAVIYO_METRICS_PUBLIC": "open",
    "KLAVIYO_SINGLE_OPT_IN_LISTS": " , ",
    "KLAVIYO_FORGET_HOLD": "forever",
    "KLAVIYO_CATALOG_MODE": "both",
    "KLAVIYO_CATALOG_FEED_PATH": "feeds/catalog.json",
    "KLAVIYO_CATALOG_FEED_TOKEN": "short",
}


def configured(**values: Any) -> dict[str, Any]:
    config: dict[str, Any] = {"SECRET_KEY": "s", **values}
    apply_defaults(config)
    return config


# -- the table ---------------------------------------------------------------------------------
def test_every_key_has_a_name_default_check_and_one_line_doc() -> None:
    assert len(set(NAMES)) == len(NAMES)
    for setting in SETTINGS:
        assert re.fullmatch(r"KLAVIYO_[A-Z_]+", setting.name)
        assert setting.doc.strip() and "\n" not in setting.doc
        assert callable(setting.check) and callable(setting.env_parse)
        assert parse(setting.name, setting.default) == setting.default  # the default is valid


def test_the_tests_cover_every_key() -> None:
    assert set(GOOD_ENV) == set(NAMES)
    # every non-empty string names a queue (and an empty variable is unset)
    assert set(BAD_ENV) == set(NAMES) - {"KLAVIYO_QUEUE"}


def test_the_webhook_secret_is_not_an_extension_setting() -> None:
    assert "KLAVIYO_WEBHOOK_SECRET" not in NAMES
    assert "KLAVIYO_WEBHOOK_SECRET" in OTHER_NAMES
    assert not OTHER_NAMES & set(NAMES)


@pytest.mark.parametrize("setting", SETTINGS, ids=NAMES)
def test_none_is_accepted_exactly_by_nullable_keys(setting: _settings.Setting) -> None:
    if setting.nullable:
        assert parse(setting.name, None) is None
        assert parse(setting.name, "null") is None
    else:
        with pytest.raises(KlaviyoConfigError) as info:
            parse(setting.name, None)
        assert info.value.key == setting.name


@pytest.mark.parametrize("module", [_settings, _checks], ids=lambda m: m.__name__)
def test_settings_imports_nothing_from_the_package_but_exceptions(module: Any) -> None:
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    local = {
        node.module or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
        for alias in node.names
    }
    absolute = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("flask_klaviyo")
    }
    assert local <= {"exceptions", "_checks"} and not absolute


# -- defaults and checks at init ---------------------------------------------------------------
def test_apply_defaults_fills_every_key_and_keeps_what_is_set() -> None:
    config: dict[str, Any] = {"KLAVIYO_QUEUE": "mine"}
    apply_defaults(config)
    assert set(config) == set(NAMES)
    assert config["KLAVIYO_QUEUE"] == "mine"
    assert config["KLAVIYO_DRAIN_CONCURRENCY"] == _settings.DEFAULT_DRAIN_CONCURRENCY
    assert config["KLAVIYO_STRICT"] is None  # app.debug or app.testing


def test_init_app_applies_the_defaults(redis_url: str, tmp_path: Path) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="s", KLAVIYO_REDIS_URL=redis_url)
    Klaviyo(app)
    for setting in SETTINGS:
        if setting.name != "KLAVIYO_REDIS_URL":
            assert app.config[setting.name] == setting.default, setting.name


def test_the_drain_concurrency_cap_is_one_constant() -> None:
    assert parse("KLAVIYO_DRAIN_CONCURRENCY", MAX_DRAIN_CONCURRENCY) == MAX_DRAIN_CONCURRENCY
    with pytest.raises(KlaviyoConfigError, match=f"from 1 to {MAX_DRAIN_CONCURRENCY}"):
        parse("KLAVIYO_DRAIN_CONCURRENCY", MAX_DRAIN_CONCURRENCY + 1)


def test_a_disabled_extension_checks_nothing_else() -> None:
    config = configured(KLAVIYO_ENABLED="false", KLAVIYO_TIMEOUT="never", SECRET_KEY=None)
    check(config)
    assert config["KLAVIYO_ENABLED"] is False and config["KLAVIYO_TIMEOUT"] == "never"


def test_missing_secret_key_is_named() -> None:
    with pytest.raises(KlaviyoConfigError) as info:
        check(configured(SECRET_KEY=""))
    assert info.value.key == "SECRET_KEY"


# -- environment strings -----------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_each_key_is_read_from_its_environment_string(name: str) -> None:
    text, expected = GOOD_ENV[name]
    assert from_environ({name: text}) == {name: expected}


@pytest.mark.parametrize("name", list(BAD_ENV))
def test_a_bad_environment_string_names_the_key(name: str) -> None:
    with pytest.raises(KlaviyoConfigError) as info:
        from_environ({name: BAD_ENV[name]})
    assert info.value.key == name
    assert str(info.value).startswith(f"{name}: ")


@pytest.mark.parametrize(
    "name", [s.name for s in SETTINGS if s.typed and s.name != "KLAVIYO_RATE_LIMITS"]
)
def test_an_unparsable_string_gets_the_error_of_a_wrong_typed_value(name: str) -> None:
    with pytest.raises(KlaviyoConfigError) as as_string:
        parse(name, "garbage")
    with pytest.raises(KlaviyoConfigError) as as_object:
        parse(name, [1])
    assert str(as_string.value) == str(as_object.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[("true", True), ("TRUE", True), (" Yes ", True), ("1", True), ("on", True)],
        *[("false", False), ("No", False), ("0", False), ("OFF", False)],
    ],
)
def test_booleans_are_read_case_insensitively(text: str, expected: bool) -> None:
    assert from_environ({"KLAVIYO_ENABLED": text}) == {"KLAVIYO_ENABLED": expected}


def test_none_words_and_empty_variables() -> None:
    assert from_environ({"KLAVIYO_STRICT": "none", "KLAVIYO_DRAIN_BATCH": "NULL"}) == {
        "KLAVIYO_STRICT": None,
        "KLAVIYO_DRAIN_BATCH": None,
    }
    assert from_environ({"KLAVIYO_QUEUE": "", "KLAVIYO_TIMEOUT": "  "}) == {}  # unset
    with pytest.raises(KlaviyoConfigError) as info:
        from_environ({"KLAVIYO_TIMEOUT": "none"})  # not nullable
    assert info.value.key == "KLAVIYO_TIMEOUT"


def test_from_environ_reads_only_klaviyo_settings(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "PATH": "/bin",
        "DRAIN_CONCURRENCY": "x",
        "KLAVIYO_WEBHOOK_SECRET": "demo",
        "KLAVIYO_DRAIN_CONCURENCY": "2",  # a typo: warned about, with the likely key
        "KLAVIYO_QUEUE": "shop",
    }
    _settings._warned.clear()
    with caplog.at_level(logging.WARNING, logger="flask_klaviyo._settings"):
        assert from_environ(environ) == {"KLAVIYO_QUEUE": "shop"}
        from_environ(environ)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "flask-klaviyo: KLAVIYO_DRAIN_CONCURENCY is not a setting; ignored; "
        "did you mean KLAVIYO_DRAIN_CONCURRENCY?"
    ]


def test_from_environ_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAVIYO_DRAIN_CONCURRENCY", "3")
    assert from_environ()["KLAVIYO_DRAIN_CONCURRENCY"] == 3


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_an_integer_string_is_read_like_the_integer(number: int) -> None:
    for setting in SETTINGS:
        if setting.env_parse is _checks.as_int or setting.env_parse is _checks.as_float:
            assert _outcome(setting.name, str(number)) == _outcome(setting.name, number)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_number_string_is_read_like_the_number(number: float) -> None:
    for name in ("KLAVIYO_TIMEOUT", "KLAVIYO_RETRY_HORIZON", "KLAVIYO_RECLAIM_AFTER"):
        got, want = _outcome(name, repr(number)), _outcome(name, number)
        assert got == want or (math.isnan(number) and got[0] == want[0] == "error")


def _outcome(name: str, raw: Any) -> tuple[str, Any]:
    try:
        return ("ok", parse(name, raw))
    except KlaviyoConfigError as exc:
        return ("error", str(exc))


# -- app.config filled from the environment ----------------------------------------------------
def config_strings() -> dict[str, str]:
    """GOOD_ENV as strings a merchant copies into app.config (the keys that take strings)."""
    return {name: text for name, (text, _) in GOOD_ENV.items() if not BY_NAME[name].typed_only} | {
        "KLAVIYO_ENABLED": "true"
    }


def test_strings_in_app_config_become_typed_values() -> None:
    config = configured(**config_strings())
    check(config)
    for name, text in config_strings().items():
        assert config[name] == parse(name, text) == from_environ({name: text})[name]
    assert config["KLAVIYO_DRAIN_CONCURRENCY"] == 1  # refused as a string before the table
    assert config["KLAVIYO_RATE_LIMITS"] == LIMITS


def test_a_bad_string_in_app_config_is_the_typed_error() -> None:
    with pytest.raises(KlaviyoConfigError) as info:
        check(configured(KLAVIYO_DRAIN_CONCURRENCY="four"))
    assert str(info.value) == "KLAVIYO_DRAIN_CONCURRENCY: must be a whole number from 1 to 64"


def test_typed_only_keys_refuse_strings_in_app_config_but_not_the_environment() -> None:
    for setting in SETTINGS:
        if setting.typed_only:
            text, expected = GOOD_ENV[setting.name]
            assert from_environ({setting.name: text}) == {setting.name: expected}
            with pytest.raises(KlaviyoConfigError):
                check(configured(**{setting.name: text}))


def test_from_prefixed_env_gives_what_the_environment_gives(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path
) -> None:
    environ = config_strings() | {"KLAVIYO_REDIS_URL": redis_url}
    for name, text in environ.items():
        monkeypatch.setenv(f"FLASK_{name}", text)
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config.update(SECRET_KEY="s")
    app.config.from_prefixed_env()
    Klaviyo(app)
    assert {name: app.config[name] for name in environ} == from_environ(environ)


# -- the README --------------------------------------------------------------------------------
def test_the_readme_configuration_table_is_the_settings_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", readme, re.S)
    assert block is not None, "README.md lacks the <!-- settings:start/end --> markers"
    assert block.group(1) == markdown_table(), (
        "README.md's configuration table differs from flask_klaviyo/_settings.py; paste "
        "`python -c 'from flask_klaviyo._settings import markdown_table as m; print(m())'`"
    )
    listed = re.findall(r"^\| `(KLAVIYO_[A-Z_]+)` \|", block.group(1), re.M)
    assert listed == NAMES
