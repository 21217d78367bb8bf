"""``make run``: the demo store with everything it needs, stopped together by Ctrl-C.

Starts the embedded Redis (under the instance folder), an RQ worker (``flask klaviyo worker``),
and — unless ``KLAVIYO_PRIVATE_API_KEY`` is set, in which case events go to that Klaviyo — the
local Klaviyo stand-in, whose inspector shows what Klaviyo would have received. With the
stand-in, the store's catalog is synced to it (``flask klaviyo catalog sync``) in a background
process while the store starts: a slow or failing sync never holds the store up or stops it
(its output says what happened). Against a real Klaviyo, sync by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

STORE_HOST = "127.0.0.1"
STORE_PORT = 5000
STANDIN_PORT = 5001
STANDIN_KEY = "pk_local_standin_key"


def main() -> int:
    from flask_klaviyo.embedded import stop_embedded_redis

    from . import create_app

    env = dict(os.environ)
    standin = None
    if not env.get("KLAVIYO_PRIVATE_API_KEY"):
        from flask_klaviyo.testing import FakeKlaviyo

        port = int(env.get("KLAVIYO_STANDIN_PORT", STANDIN_PORT))
        standin = FakeKlaviyo(api_key=STANDIN_KEY, port=port).start()
        env["KLAVIYO_PRIVATE_API_KEY"] = STANDIN_KEY
        env["KLAVIYO_API_URL"] = standin.url
        os.environ.update(KLAVIYO_PRIVATE_API_KEY=STANDIN_KEY, KLAVIYO_API_URL=standin.url)

    app = create_app()
    with app.app_context():
        redis_url = app.extensions["klaviyo"].redis_url  # starts the embedded Redis if unset
    app.config["KLAVIYO_REDIS_URL"] = redis_url
    env["KLAVIYO_REDIS_URL"] = redis_url

    flask = [sys.executable, "-m", "flask", "--app", "example_store", "klaviyo"]
    worker = subprocess.Popen([*flask, "worker"], env=env)
    sync = subprocess.Popen([*flask, "catalog", "sync"], env=env) if standin else None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    port = int(env.get("STORE_PORT", STORE_PORT))
    print(f"\n  Store:              http://{STORE_HOST}:{port}")
    if standin is not None:
        print(f"  Klaviyo stand-in:   {standin.url}/  (inspector: what Klaviyo would receive)")
        print("  Catalog:            syncing to the stand-in in the background")
    else:
        print(f"  Sending to Klaviyo: {env.get('KLAVIYO_API_URL', 'https://a.klaviyo.com')}")
    if "klaviyo_inspector" in app.blueprints:  # KLAVIYO_INSPECTOR (auto: with the stand-in)
        inspector = f"http://{STORE_HOST}:{port}/_klaviyo/inspector/"
        print(f"  Store inspector:    {inspector}  (tracked, parked, released, sent)")
    print(f"  Redis:              {redis_url}\n  Ctrl-C stops everything.\n", flush=True)
    try:
        app.run(host=STORE_HOST, port=port, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        if sync is not None and sync.poll() is None:
            sync.terminate()
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
        if standin is not None:
            standin.stop()
        if not os.environ.get("KLAVIYO_REDIS_URL"):
            stop_embedded_redis(app.instance_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
