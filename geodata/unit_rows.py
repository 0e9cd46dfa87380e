"""Units replaced street by street (for units built from roads, :mod:`layers.onboarding.units`)."""

from __future__ import annotations

import geopandas as gpd
from sqlalchemy import Connection, delete, or_, select

from geodata.db import BATCH
from geodata.models import Unit, UnitAdjacency
from geodata.store import write_layer


def replace_street_units(conn: Connection, streets: list[str], units: gpd.GeoDataFrame) -> int:
    """Delete the units of ``streets`` and their adjacency, then write ``units``, on the caller's
    transaction. Returns the number of units written."""
    table, adjacency = Unit.__table__, UnitAdjacency.__table__
    old: list[str] = []
    for start in range(0, len(streets), BATCH):
        chunk = streets[start:start + BATCH]
        old += list(conn.execute(select(table.c.code).where(table.c.street_code.in_(chunk))).scalars())
    for start in range(0, len(old), BATCH):
        chunk = old[start:start + BATCH]
        touching = or_(adjacency.c.unit_a.in_(chunk), adjacency.c.unit_b.in_(chunk))
        conn.execute(delete(adjacency).where(touching))
        conn.execute(delete(table).where(table.c.code.in_(chunk)))
    return write_layer(conn, "units", units, mode="append")


__all__ = ["replace_street_units"]
