"""A real city's data as it arrives, on a page: ``GET /api/topology/communities`` (the overlaps,
gaps and outside pieces of the communities as GeoJSON, for the map). The commands that load,
clean, code and build it are in :mod:`webmap.commands.onboarding`.
"""

from __future__ import annotations

import json

from flask import Blueprint, Response, request

from geodata.errors import Refused
from geodata.i18n import _
from layers.onboarding.boundaries import stored_topology
from webmap.auth import require
from webmap.extensions import engine

bp = Blueprint("onboarding", __name__)

@bp.get("/api/topology/communities")
@require("admin", "planner", "viewer", api=True)
def api_topology():
    """The overlaps, gaps and outside pieces of the stored communities as GeoJSON (a map layer),
    with the totals as a ``summary`` member."""
    street = request.args.get("street") or None
    if street is not None and not (street.isdigit() and len(street) == 9):
        raise Refused(_("street {street} is not a 9-digit code", street=repr(street)))
    found = stored_topology(engine(), street)
    layer = json.loads(found.layer().to_json(drop_id=True))
    summary = {k: v for k, v in found.summary().items() if k != "findings"}
    body = {"type": "FeatureCollection", "features": layer["features"], "summary": summary}
    return Response(json.dumps(body, ensure_ascii=False), mimetype="application/geo+json")


__all__ = ["bp"]
