"""Coverage gaps (覆盖盲区). For now: blind spots (社区盲点), planning units with households that
lie in no community ("wherever the city grows, a community follows").
"""

from __future__ import annotations

import geopandas as gpd
from sqlalchemy import Engine

from geodata.store import read_layer

#: The filter that selects blind spots among the units: households, and no community code.
BLIND_SPOT = {"empty": ["community_code"], "ranges": {"households": (1, None)}}


def blind_spots(engine: Engine, **filters) -> gpd.GeoDataFrame:
    """Units with households and no community (read with the filters of ``read_layer``)."""
    return read_layer(engine, "units", **BLIND_SPOT, **filters)
