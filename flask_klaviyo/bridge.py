"""``{{ klaviyo_bridge() }}``: what the page needs to agree with the server.

It renders a JSON blob of the events the server tracked for this page (metric + unique_id) for
``static/klaviyo-bridge.js``, which stops a residual browser snippet from counting them twice,
and klaviyo.js for the public key. The JSON is escaped for HTML, so a product name holding
``</script>`` cannot leave its tag; the private key is never part of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app, url_for
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup, escape

if TYPE_CHECKING:
    from .extension import Klaviyo

__all__ = ["DATA_ELEMENT_ID", "bridge_data", "render"]

DATA_ELEMENT_ID = "klaviyo-bridge-data"
KLAVIYO_JS = "https://static.klaviyo.com/onsite/js/klaviyo.js?company_id={}"


def bridge_data(extension: Klaviyo) -> dict[str, Any]:
    """The blob: mode, public key, the server's events for this page."""
    config = current_app.config
    return {
        "mode": config["KLAVIYO_BRIDGE_MODE"],
        "companyId": config["KLAVIYO_PUBLIC_API_KEY"],
        "events": [
            {"metric": event.metric, "unique_id": event.unique_id}
            for event in extension.page_events()
        ],
    }


def render(extension: Klaviyo) -> Markup:
    data = bridge_data(extension)
    blob = htmlsafe_json_dumps(data)  # <, >, & and ' escaped: nothing can close the tag
    parts = [
        f'<script type="application/json" id="{DATA_ELEMENT_ID}">{blob}</script>',
        f'<script src="{escape(url_for("klaviyo.static", filename="klaviyo-bridge.js"))}">'
        "</script>",
    ]
    company_id = data["companyId"]
    if company_id:
        parts.append(f'<script async src="{escape(KLAVIYO_JS.format(company_id))}"></script>')
    return Markup("\n".join(parts))
