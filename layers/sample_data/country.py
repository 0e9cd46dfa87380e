"""A synthetic province or country: a generated city copied side by side under new district codes.

Generating a city costs 2–5 ms per unit; copying one costs next to nothing. So a country for the
scale benchmark (``scripts/bench_scale.py``) and the tests of plans made district by district is
one generated district (:func:`layers.sample_data.demo.generate`) tiled: each copy is moved east (then north)
by the city's width, and every code that nests under the district (streets, communities, units,
adjacency) takes the copy's district code in its first six digits. Only what planning reads is
copied: districts, streets, communities, units and their adjacency, and the bridges (roads a
community may reach across the river by).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import geopandas as gpd
import pandas as pd
import shapely
from sqlalchemy import Engine, insert

from geodata.db import BATCH
from geodata.models import UnitAdjacency
from geodata.revisions import raise_revision
from geodata.standards import seed_settings
from geodata.store import write_layer
from layers.sample_data.demo import Demo

#: the layers a copy carries, in the order they are written
TILED = ["districts", "streets", "communities", "units", "roads"]
#: and those a full copy carries besides (``tile(…, full=True)``)
FULL = ["facilities", "grid_cells"]


@dataclass
class Country:
    """The layers of a tiled country (GeoDataFrames by layer name) and its unit adjacency."""

    layers: dict[str, gpd.GeoDataFrame]
    adjacency: pd.DataFrame

    @property
    def districts(self) -> list[str]:
        return sorted(self.layers["districts"]["code"])


def district_codes(count: int, first: int = 421001) -> list[str]:
    """``count`` six-digit district codes from ``first`` on (a made-up province: ``42`` …)."""
    return [str(first + i) for i in range(count)]


def _recode(values: pd.Series, old: str, new: str) -> pd.Series:
    """Codes under district ``old`` moved under ``new`` (the first six characters replaced)."""
    text = values.astype(object)
    return text.where(text.isna(), new + text.str.slice(len(old)))


def tile(demo: Demo, count: int, codes: list[str] | None = None, full: bool = False) -> Country:
    """``count`` copies of ``demo``'s district side by side (at most ⌈√count⌉ a row), under
    ``codes`` (default :func:`district_codes`); the first copy keeps the demo's place. ``full``:
    the facilities, grid cells and every road too (what the coverage report and the grid read),
    not only the bridges."""
    codes = codes or district_codes(count)
    base = str(demo.layers["districts"]["code"].iloc[0])
    minx, miny, maxx, maxy = demo.layers["districts"].total_bounds
    width, height = (maxx - minx) * 1.05, (maxy - miny) * 1.05
    per_row = max(1, math.ceil(math.sqrt(count)))
    bridges = demo.layers["roads"][demo.layers["roads"]["road_class"] == "bridge"]
    source = {"districts": demo.layers["districts"], "streets": demo.layers["streets"],
              "communities": demo.layers["communities"], "units": demo.layers["units"], "roads": bridges}
    if full:
        source |= {"roads": demo.layers["roads"], "facilities": demo.layers["facilities"],
                   "grid_cells": demo.layers["grid_cells"]}
    parts: dict[str, list] = {name: [] for name in source}
    adjacency = []
    for i, code in enumerate(codes[:count]):
        dx, dy = (i % per_row) * width, (i // per_row) * height
        for name, frame in source.items():
            copy = frame.copy()
            copy["geometry"] = shapely.transform(copy.geometry.values, lambda xy, dx=dx, dy=dy: xy + (dx, dy))
            for column in ("code", "street_code", "community_code", "district_code"):
                if column in copy and (column != "code" or name not in ("roads", "facilities")):
                    copy[column] = _recode(copy[column], base, code)
            if name in ("roads", "facilities"):  # codes that do not nest: made unique by the district
                copy["code"] = copy["code"].astype(str) + f"-{code}"
            if name == "districts":
                copy["name"] = copy["name"].astype(str) + f"{i + 1}"
            parts[name].append(copy)
        pairs = demo.adjacency.copy()
        for column in ("unit_a", "unit_b", "district_code"):
            pairs[column] = _recode(pairs[column], base, code)
        adjacency.append(pairs)
    layers = {name: gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)
              for name, frames in parts.items()}
    return Country(layers, pd.concat(adjacency, ignore_index=True))


def write_country(engine: Engine, country: Country) -> None:
    """Write ``country`` into an empty database, in one transaction."""
    with engine.begin() as conn:
        seed_settings(conn)
        raise_revision(conn, "demo", actor="demo")
        for name in TILED + [n for n in FULL if n in country.layers]:
            write_layer(conn, name, country.layers[name], mode="append")
        records = country.adjacency.to_dict("records")
        for start in range(0, len(records), BATCH):
            conn.execute(insert(UnitAdjacency.__table__), records[start:start + BATCH])


def split_district(demo: Demo, code: str, streets: list[str] | None = None) -> Demo:
    """``demo`` as a city of two districts sharing a boundary: ``streets`` (default: the second
    half of its streets) and everything under them — communities, units and their adjacency,
    grid cells, facilities, roads (by where they lie) — moved under district ``code``, so that
    households near the new boundary are served across it. Incidents are left out."""
    old = str(demo.layers["districts"]["code"].iloc[0])
    all_streets = sorted(demo.layers["streets"]["code"])
    moved = sorted(streets if streets is not None else all_streets[len(all_streets) // 2:])
    layers = {name: frame.copy() for name, frame in demo.layers.items()}
    under = tuple(moved)

    def recode(values: pd.Series) -> pd.Series:
        text = values.astype(object)
        hit = text.notna() & text.astype(str).str.startswith(under)
        return text.where(~hit, code + text.astype(str).str.slice(len(old)))

    area = shapely.union_all(layers["streets"].loc[layers["streets"]["code"].isin(moved)].geometry.values)
    for name, frame in layers.items():
        if name in ("districts", "incidents"):
            continue
        # a feature's district: its street's, else its community's, else where it lies
        parent = pd.Series(shapely.within(shapely.point_on_surface(frame.geometry.values), area),
                           index=frame.index)
        for column in ("community_code", "street_code"):
            if column in frame:
                codes = frame[column].astype(object)
                parent = parent.where(codes.isna(), codes.fillna("").astype(str).str.startswith(under))
        if name == "streets":
            parent = frame["code"].isin(moved)
        for column in ("code", "street_code", "community_code"):
            if column in frame and (column != "code" or name not in ("roads", "facilities")):
                frame[column] = recode(frame[column])
        if "district_code" in frame:
            frame["district_code"] = frame["district_code"].where(~parent, code)
        layers[name] = frame
    districts = layers["districts"]
    streets = layers["streets"]
    rest = shapely.union_all(streets.loc[~streets["code"].str.startswith(code)].geometry.values)
    second = districts.copy()
    second["code"], second["name"] = code, districts["name"].astype(str) + "二"
    districts["geometry"], second["geometry"] = [rest], [area]
    layers["districts"] = gpd.GeoDataFrame(pd.concat([districts, second], ignore_index=True),
                                           crs=districts.crs)
    layers["incidents"] = layers["incidents"].iloc[0:0]
    adjacency = demo.adjacency.copy()
    for column in ("unit_a", "unit_b"):
        adjacency[column] = recode(adjacency[column])
    adjacency["district_code"] = adjacency["unit_a"].str.slice(0, 6)
    return Demo(layers, adjacency, demo.steps.iloc[0:0], dict(demo.facts))


__all__ = ["Country", "district_codes", "split_district", "tile", "write_country"]
