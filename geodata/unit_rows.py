"""Units replaced street by street (for units built from roads, :mod:`layers.onboarding.units`)."""

from __future__ import annotations

import geopandas as gpd
from sqlalchemy import Connection, delete, or_, select

from geodata.db import BATCH
from geodata.models import Unit, UnitAdjacency
from geodata.revisions import districts_of_streets
from geodata.store import write_layer


def replace_street_units(conn: Connection, streets: list[str], units: gpd.GeoDataFrame) -> int:
    """Delete the units of ``streets`` and their adjacency, then write ``units``, on the caller's
    transaction. Returns the number of units written.

    The units' statements name the streets' districts (as the streets table gives them, and as
    the new units carry them): a stored unit lies in its street's district, as the importer
    requires, so on a store split by district only those districts' parts are opened."""
    table, adjacency = Unit.__table__, UnitAdjacency.__table__
    placed = districts_of_streets(conn, streets)
    districts = None if placed is None else sorted(placed | set(units["district_code"].dropna().astype(str)))
    scope = [table.c.district_code.in_(districts)] if districts is not None else []
    old: list[str] = []
    for start in range(0, len(streets), BATCH):
        chunk = streets[start:start + BATCH]
        stmt = select(table.c.code).where(table.c.street_code.in_(chunk), *scope)
        old += list(conn.execute(stmt).scalars())
    for start in range(0, len(old), BATCH):
        chunk = old[start:start + BATCH]
        # not scoped: a pair across a district border is kept under its first unit's district,
        # so the pairs whose second unit is ours may lie in a neighbouring district's part
        touching = or_(adjacency.c.unit_a.in_(chunk), adjacency.c.unit_b.in_(chunk))
        conn.execute(delete(adjacency).where(touching))
        conn.execute(delete(table).where(table.c.code.in_(chunk), *scope))
    return write_layer(conn, "units", units, mode="append")


__all__ = ["replace_street_units"]
