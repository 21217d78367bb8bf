"""``python -m flask_klaviyo.testing --port 5001 --api-key pk_test`` (inspector at ``/``)."""

import sys

from .cli import main

sys.exit(main())
