"""The app as a server runs it (``gunicorn 'webmap.wsgi:app'``): each server process warms its plan
memory in a background thread, so the first planner to open a city-size plan after a start (or
after the boundaries changed) does not wait while it is read.

``GRIDPLAN_WARM_PLANS=0`` turns the warming off; ``GRIDPLAN_WARM_EVERY`` is how often (seconds)
the stored boundary revision and the recent plans are looked at again (default 30).
"""

from __future__ import annotations

import os
import threading

from layers.plan_documents import prepare
from webmap import create_app

app = create_app()

#: set to stop the warming thread (a daemon thread: it never holds a process open)
stop_warming = threading.Event()

if os.environ.get("GRIDPLAN_WARM_PLANS", "1") != "0":
    threading.Thread(target=app.extensions["gridplan.plans"].keep_warm, name="gridplan-warm-plans",
                     args=(stop_warming, float(os.environ.get("GRIDPLAN_WARM_EVERY", "30")),
                           prepare),  # what a plan page asks for first
                     daemon=True).start()
