"""The Flask app the benchmark workers run under (``flask --app benchmarks/bench_app.py klaviyo
worker``), as a merchant would: flask-klaviyo imported once in the worker, settings from the
``KLAVIYO_*`` environment."""

from __future__ import annotations

import os

from flask import Flask

from flask_klaviyo import Klaviyo

app = Flask(__name__)
app.config["SECRET_KEY"] = "bench"
app.config.update({k: v for k, v in os.environ.items() if k.startswith("KLAVIYO_")})
Klaviyo(app)
