"""A settings module for a plain ``rq worker``: ``rq worker -c flask_klaviyo.rq_settings klaviyo``.

RQ reads the UPPERCASE names of the module ``-c`` names. This one turns ``KLAVIYO_REDIS_URL``
(``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://``) into RQ's ``REDIS_URL`` or
``SENTINEL`` setting, so a plain worker follows a Sentinel failover like ``flask klaviyo worker``.
Your own settings module can do the same in two lines (README, "Running in production").
"""

from __future__ import annotations

import os

from .connection import rq_settings

globals().update(rq_settings(os.environ.get("KLAVIYO_REDIS_URL")))
