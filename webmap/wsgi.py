"""The app as a server runs it (``gunicorn 'webmap.wsgi:app'``): each server process warms its plan
memory in a background thread, so the first planner to open a city-size plan after a start (or
after the boundaries changed) does not wait while it is read.

It also keeps the district's coverage answers computed for the stored state of the data (a
city's by a job for the worker); ``GRIDPLAN_WARM_COVERAGE=0`` turns that off.

``GRIDPLAN_WARM_PLANS=0`` turns the plan warming off; ``GRIDPLAN_WARM_EVERY`` is how often (seconds)
the stored boundary revision and the recent plans are looked at again (default 30).
"""

from __future__ import annotations

import os
import threading

from layers.plans.documents import prepare
from webmap import create_app

app = create_app()

#: set to stop the warming thread (a daemon thread: it never holds a process open)
stop_warming = threading.Event()

if os.environ.get("GRIDPLAN_WARM_PLANS", "1") != "0":
    threading.Thread(target=app.extensions["gridplan.plans"].keep_warm, name="gridplan-warm-plans",
                     args=(stop_warming, float(os.environ.get("GRIDPLAN_WARM_EVERY", "30")),
                           prepare),  # what a plan page asks for first
                     daemon=True).start()

if os.environ.get("GRIDPLAN_WARM_COVERAGE", "1") != "0":  # the coverage page's answers, computed once
    threading.Thread(target=app.extensions["gridplan.coverage"].keep_warm, name="gridplan-warm-coverage",
                     args=(stop_warming, float(os.environ.get("GRIDPLAN_WARM_EVERY", "30"))),
                     daemon=True).start()
