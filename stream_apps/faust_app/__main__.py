"""``python -m stream_apps.faust_app --config FILE.json``: one engine worker (see ``worker``)."""

import sys

from .worker import main

sys.exit(main())
