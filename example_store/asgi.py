"""The store as an ASGI app, for uvicorn and friends: ``uvicorn example_store.asgi:app``.

Flask is a WSGI framework; asgiref's ``WsgiToAsgi`` runs each request in a worker thread, so the
extension works unchanged (its after-request hook still runs once the response exists). For
gunicorn, use the factory directly: ``gunicorn 'example_store:create_app()'``.

``app`` is a ``WsgiToAsgi`` that starts every request in a fresh ``contextvars.Context``. Plain
``WsgiToAsgi`` (asgiref 3.13) fails about one request in four on a kept-alive uvicorn
connection with ``RuntimeError: CurrentThreadExecutor already quit or is broken``: its
``send()`` runs in a task created from the worker thread's context, which holds that request's
``CurrentThreadExecutor``; uvicorn starts the connection's next request from inside that
``send()``, so the next request inherits an executor that has already quit.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from asgiref.wsgi import WsgiToAsgi

from . import create_app

__all__ = ["FreshContextWsgiToAsgi", "app", "flask_app"]


class FreshContextWsgiToAsgi(WsgiToAsgi):
    """``WsgiToAsgi`` whose requests never inherit context from the previous one."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = super().__call__(scope, receive, send)
        # Awaiting the task also propagates a cancellation (client gone) into it.
        await asyncio.get_running_loop().create_task(request, context=contextvars.Context())


flask_app = create_app()
app = FreshContextWsgiToAsgi(flask_app)
