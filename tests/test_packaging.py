"""The wheel carries static/ as flask_klaviyo/static and the py.typed marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_packages_the_bridge_script_and_py_typed(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = tmp_path.glob("flask_klaviyo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "flask_klaviyo/static/klaviyo-bridge.js" in names
    assert "flask_klaviyo/py.typed" in names
    assert "flask_klaviyo/testing/__init__.py" in names
    assert "flask_klaviyo/delivery/kinds.py" in names and "flask_klaviyo/events/bulk.py" in names
    # the demo store and the tests are not part of the library
    assert not any(name.startswith(("tests/", "example_store/")) for name in names)
