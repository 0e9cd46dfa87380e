"""Plans as files: the units a plan is made from, its community polygons, and its export.

A plan's communities are dissolved from their units (so there are no gaps or overlaps inside a
street); the export carries the polygons with their scores, the unit-to-community table, and the
plan's scores, as a GeoPackage or a shapefile zip under the same rules as the layer exports.
"""

from __future__ import annotations

import gc
import json
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from sqlalchemy import Connection, Engine, func, select

from geodata.catalog import Field, as_text, is_code
from geodata.crs import parse_crs, to_metric, to_wgs84
from geodata.exporter import write_frame
from geodata.i18n import _
from geodata.models import Street, Unit
from geodata.sources import ImportRefused, read_source
from geodata.store import read_adjacency, read_layer
from geodata.topology import dissolve
from layers.plans.engine import PlanResult, home_streets

COMMUNITY_FIELDS = [
    Field("community_code", "str", "comm_code", "社区代码"), Field("name", "str", "name", "社区名称"),
    Field("street_code", "str", "strt_code", "街道代码"),
    Field("street_name", "str", "strt_name", "街道名称"),
    Field("households", "int", "households", "户数"), Field("population", "int", "population", "人口"),
    Field("units", "int", "units", "单元数"), Field("area_m2", "float", "area_m2", "面积"),
    Field("polsby_popper", "float", "pp", "紧凑度"), Field("contiguous", "str", "contiguous", "连通"),
    Field("within_bounds", "str", "in_bounds", "户数达标"), Field("moved_in", "int", "moved_in", "迁入户数"),
    Field("moved_out", "int", "moved_out", "迁出户数"), Field("provisional", "str", "provis", "临时代码"),
]
ASSIGNMENT_FIELDS = [
    Field("code", "str", "unit_code", "单元代码"), Field("street_code", "str", "strt_code", "街道代码"),
    Field("previous_code", "str", "prev_code", "原社区代码"),
    Field("community_code", "str", "comm_code", "社区代码"),
    Field("community_name", "str", "comm_name", "社区名称"),
    Field("street_name", "str", "strt_name", "街道名称"),
    Field("households", "int", "households", "户数"),
]


def units_from_file(path: str | Path, mapping: dict[str, str] | None = None, crs=None) -> gpd.GeoDataFrame:
    """Units from any vector file with ``households``, ``street`` and (optional; empty = blind
    spot) ``community`` columns — or ``street_code``/``community_code`` — renamed by ``mapping``.
    Without a ``code`` column, units are numbered in file order."""
    try:
        declared = parse_crs(crs)
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="gridplan-plan-") as tmp:
        gdf = read_source(path, declared_crs=declared, workdir=Path(tmp))
    try:
        gdf = to_wgs84(gdf.rename(columns=mapping or {}), declared)
    except ValueError as exc:
        raise ImportRefused(str(exc)) from None
    gdf = gdf.rename(columns={"street": "street_code", "community": "community_code"})
    missing = [c for c in ("households", "street_code") if c not in gdf.columns]
    if missing:
        raise ImportRefused(_("{name} has no {p2} column: name it with --map (columns: {p3})",
                              name=Path(path).name, p2=' or '.join(missing),
                              p3=', '.join(map(str, gdf.columns.drop('geometry')))))
    households = pd.to_numeric(gdf["households"], errors="coerce")
    if households.isna().any() or (households < 0).any():
        rows = np.flatnonzero((households.isna() | (households < 0)).to_numpy())[:10] + 1
        raise ImportRefused(_("households is not a whole number ≥ 0 in rows {p1}",
                              p1=', '.join(map(str, rows))))
    gdf["households"] = households.round().astype(int)
    gdf["street_code"] = as_text(gdf["street_code"])
    gdf["community_code"] = as_text(gdf["community_code"]) if "community_code" in gdf else None
    gdf["code"] = as_text(gdf["code"]) if "code" in gdf else [f"U{i + 1:06d}" for i in range(len(gdf))]
    if gdf["code"].duplicated().any():
        raise ImportRefused(_("unit codes repeat in the file"))
    if not gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"]).all():
        raise ImportRefused(_("units must be polygons"))
    return gdf


def bridge_links(units: gpd.GeoDataFrame, bridges: gpd.GeoDataFrame) -> pd.DataFrame:
    """Pairs of land units of one street joined by a bridge over the river: a community may
    reach across the river there (``shared_m`` of a millimetre: a link, not a shared edge)."""
    land = units[units.get("land_use", pd.Series("", index=units.index)) != "water"]
    if bridges.empty or land.empty:
        return pd.DataFrame(columns=["unit_a", "unit_b", "shared_m"])
    # only the units near a bridge need measuring (a city has few bridges and many units)
    near = shapely.STRtree(land.geometry.values).query(shapely.buffer(bridges.geometry.values, 0.001))[1]
    if not len(near):  # no unit of these streets lies near a bridge: nothing links across the river
        return pd.DataFrame(columns=["unit_a", "unit_b", "shared_m"])
    land = to_metric(land.iloc[np.unique(near)])
    # a bridge runs along block edges: a few metres either side find the blocks at its ends
    ends = bridges[["code", "geometry"]].rename(columns={"code": "bridge"}).to_crs(land.crs)
    ends["geometry"] = ends.buffer(5.0)
    hits = gpd.sjoin(ends, land[["code", "street_code", "geometry"]], predicate="intersects")
    pairs = hits.merge(hits, on="bridge")
    pairs = pairs[(pairs["code_x"] < pairs["code_y"]) & (pairs["street_code_x"] == pairs["street_code_y"])]
    return pd.DataFrame({"unit_a": pairs["code_x"].to_numpy(), "unit_b": pairs["code_y"].to_numpy(),
                         "shared_m": 0.001}).drop_duplicates(["unit_a", "unit_b"])


def district_of(engine: Engine | Connection, street: str) -> str | None:
    """The district of ``street``: the one the streets table gives (a street moved to another
    district keeps its code, and its rows lie under the new district), else its code's first six
    digits (codes nest); None for an unknown street whose code does not nest."""
    with nullcontext(engine) if isinstance(engine, Connection) else engine.connect() as conn:
        stored = conn.execute(select(Street.district_code).where(Street.code == street)).scalar_one_or_none()
    if stored:
        return stored
    return street[:6] if is_code(street, 9) else None


_paused_lock = threading.Lock()
_paused = {"depth": 0, "was_enabled": False}


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a large read builds its rows (re-entrant, and
    safe across threads: it comes back on when the last reader leaves, if it was on before).

    A district's read makes tens of thousands of row tuples that live just long enough to be
    promoted to the collector's oldest generation; every few reads that sets off a full
    collection, which walks every object of the process — 80–100 ms in a worker of ≈ 275,000
    objects, 0.4 s in a process holding a tiled country of 1.6 M units (docs/scale.md). The rows
    hold no reference cycles: reference counting frees them when the frames are built."""
    with _paused_lock:
        if _paused["depth"] == 0:
            _paused["was_enabled"] = gc.isenabled()
            gc.disable()
        _paused["depth"] += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused["depth"] -= 1
            if _paused["depth"] == 0 and _paused["was_enabled"]:
                gc.enable()


def units_from_database(engine: Engine, street: str | None = None, *, district: str | None = None
                        ) -> tuple[gpd.GeoDataFrame, pd.DataFrame]:
    """The stored units of one street, of one district, or (neither given) of the whole database,
    with their stored adjacency and bridge links.

    Every read of a street or district names its district (``district_code = …``): the index
    narrows it at once, and on a store split by district it goes to that district's part only;
    bridges are read for the district alone, not for the whole database. The rows are read with
    the garbage collector paused (:func:`collector_paused`)."""
    if street is not None and district is None:
        district = district_of(engine, street)
        if district is None:  # no such street: no units (the caller names the street)
            district = ""
    where = {"district_code": district} if district is not None else None
    with collector_paused():
        units = read_layer(engine, "units", street=street, where=where)
        adjacency = read_adjacency(engine, street, district=district)
        bridges = read_layer(engine, "roads", where={"road_class": "bridge"} | (where or {}))
        links = bridge_links(units, bridges)
    return units, pd.concat([adjacency, links], ignore_index=True) if len(links) else adjacency


def home_streets_of_district(engine: Engine | Connection, district: str) -> pd.Series:
    """Community code → its home street (the street of the district holding most of its
    households) for every community of ``district``'s units: one aggregate query, so that a street
    planned alone starts as it does with its district (:func:`layers.plans.engine.current_labels`)."""
    table = Unit.__table__
    stmt = (select(table.c.community_code, table.c.street_code, func.sum(table.c.households))
            .where(table.c.district_code == district, table.c.community_code.isnot(None))
            .group_by(table.c.community_code, table.c.street_code))
    with nullcontext(engine) if isinstance(engine, Connection) else engine.connect() as conn:
        rows = conn.execute(stmt).all()
    if not rows:
        return pd.Series(dtype=object)
    codes, streets, households = zip(*rows, strict=True)
    return home_streets(codes, streets, np.array([int(h or 0) for h in households]))


def community_polygons(result: PlanResult, units: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The plan's communities, dissolved from their units, with the community scores."""
    labels = result.assignment.reindex(units["code"].astype(str)).to_numpy()
    table = result.community_table()
    polygons = dissolve(np.asarray(units.geometry.values, dtype=object), labels,
                        table["community_code"].to_numpy())
    out = gpd.GeoDataFrame(table, geometry=polygons, crs=units.crs)
    for column in ("contiguous", "within_bounds", "provisional"):
        out[column] = out[column].map({True: "yes", False: "no"})
    return out


def assignment_table(result: PlanResult, units: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    out = units[["code", "street_code", "households", "geometry"]].copy()
    out["previous_code"] = units["community_code"].to_numpy() if "community_code" in units else None
    out["community_code"] = result.assignment.reindex(units["code"].astype(str)).to_numpy()
    return out


def with_names(communities: gpd.GeoDataFrame, assignment: gpd.GeoDataFrame, names: dict[str, str] | None,
               street_names: dict[str, str] | None) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The plan's communities and assignment with names beside codes: each community's name (the
    plan's own, else the current one's) and its street's name; a unit's community and street."""
    names, street_names = names or {}, street_names or {}
    communities = communities.copy()
    communities.insert(1, "name", [names.get(c) for c in communities["community_code"]])
    communities.insert(3, "street_name", [street_names.get(str(s)) for s in communities["street_code"]])
    assignment = assignment.copy()
    assignment["community_name"] = [names.get(c) for c in assignment["community_code"]]
    assignment["street_name"] = [street_names.get(str(s)) for s in assignment["street_code"]]
    return communities, assignment


def export_plan(result: PlanResult, units: gpd.GeoDataFrame, out: str | Path,
                encoding: str = "utf-8", *, names: dict[str, str] | None = None,
                street_names: dict[str, str] | None = None) -> Path:
    """Write the plan to ``out``: ``.gpkg`` (layers communities, assignment, scores) or ``.zip``
    (shapefiles communities and assignment, with scores.json); communities and units carry the
    names of their community and street beside the codes (``names``, ``street_names``)."""
    out = Path(out)
    communities, assignment = with_names(community_polygons(result, units), assignment_table(result, units),
                                         names, street_names)
    scores = result.scores()
    if out.suffix.lower() == ".gpkg":
        partial = out.with_name(f".{out.stem}.partial.gpkg")
        partial.unlink(missing_ok=True)
        pyogrio.write_dataframe(communities, partial, layer="communities", driver="GPKG",
                                dataset_options={"VERSION": "1.2"})
        pyogrio.write_dataframe(assignment, partial, layer="assignment", driver="GPKG", append=True)
        flat = pd.DataFrame([{"key": k, "value": json.dumps(v, ensure_ascii=False)}
                             for k, v in scores.items()])
        pyogrio.write_dataframe(flat, partial, layer="scores", driver="GPKG", append=True)
        partial.replace(out)
        return out
    if out.suffix.lower() != ".zip":
        raise ValueError(_("{name}: write a plan to .gpkg or .zip (shapefiles)", name=out.name))
    with tempfile.TemporaryDirectory(prefix="gridplan-plan-") as tmp:
        parts = {"communities": (communities, COMMUNITY_FIELDS),
                 "assignment": (assignment, ASSIGNMENT_FIELDS)}
        partial = out.with_name(f".{out.stem}.partial.zip")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as bundle:
            for name, (gdf, fields) in parts.items():
                piece = Path(tmp) / f"{name}.zip"
                write_frame(gdf, fields, name, "shp", piece, encoding=encoding)
                with zipfile.ZipFile(piece) as zf:
                    for member in zf.namelist():
                        bundle.writestr(member, zf.read(member))
            bundle.writestr("scores.json", json.dumps(scores, ensure_ascii=False, indent=2))
        partial.replace(out)
    return out
