"""Communities (社区) and their numbers: households, population, area, and the household bounds.

A community should hold between ``households_min`` and ``households_max`` households (the
city's settings; 1,000–3,000 by default, 临沂 临发[2001]26号). Its numbers are the sums over
the planning units assigned to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy import Engine

from geodata.crs import to_metric
from geodata.standards import get_setting
from geodata.store import unit_totals


@dataclass(frozen=True)
class Bounds:
    """Household bounds of a community (社区户数上下限)."""

    minimum: int = 1000
    maximum: int = 3000

    def status(self, households) -> np.ndarray:
        """``below``, ``within`` or ``above`` for each household count."""
        households = np.asarray(households)
        return np.where(households < self.minimum, "below",
                        np.where(households > self.maximum, "above", "within"))


def bounds(engine: Engine) -> Bounds:
    """The city's household bounds from the settings table."""
    with engine.connect() as conn:
        return Bounds(int(get_setting(conn, "households_min")), int(get_setting(conn, "households_max")))


def numbers(engine: Engine, codes: list[str], geoms: np.ndarray) -> pd.DataFrame:
    """``households``, ``population``, ``units``, ``area_m2`` and ``bounds_status`` (below /
    within / above the household bounds) of the communities ``codes`` with polygons ``geoms``."""
    out = pd.DataFrame({"code": codes})
    totals = unit_totals(engine, isin={"community_code": codes}).set_index("community_code") if codes \
        else pd.DataFrame(columns=["households", "population", "units"])
    for column in ("households", "population", "units"):
        out[column] = out["code"].map(totals[column]).fillna(0).astype("int64")
    area = to_metric(gpd.GeoDataFrame(geometry=list(geoms), crs=4326)).area if len(codes) else []
    out["area_m2"] = np.round(np.asarray(area, dtype=float), 1)
    out["bounds_status"] = bounds(engine).status(out["households"].to_numpy())
    return out
